import { isSesBounce, rewriteBounce } from '../mail/bounce.ts';
import { outboundLookupKeys, parseDsn } from '../mail/dsn.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { PipelinePorts } from './ports.ts';

export interface BounceResult {
  isSesBounce: boolean;
  /** The bytes to deliver: rewritten when the outbound record was found, else the input unchanged. */
  raw: Buffer;
  rewritten: boolean;
  failedRecipient?: string;
}

/**
 * Stage 4: an SES bounce names `MAILER-DAEMON@amazonses.com` as sender, which tells the user nothing. Find the
 * outbound record of the mail that bounced and show the failed recipient as sender instead. A miss delivers
 * the bounce unchanged — never drop a DSN.
 */
export async function applyBounceRewrite(
  raw: Buffer,
  view: MailView,
  envelopeSender: string,
  ports: PipelinePorts,
): Promise<BounceResult> {
  if (!isSesBounce(view, envelopeSender)) return { isSesBounce: false, raw, rewritten: false };
  const dsn = parseDsn(raw);
  const ids = [...dsn.originalMessageIds, ...(view.inReplyTo ? [view.inReplyTo] : []), ...view.references];
  const candidates = outboundLookupKeys(ids);
  if (candidates.length === 0) return { isSesBounce: true, raw, rewritten: false };
  const record = await ports.rules.findOutbound(candidates);
  if (!record) {
    ports.logger.info(
      { candidates: candidates.length },
      'SES bounce without outbound record; delivered unchanged',
    );
    return { isSesBounce: true, raw, rewritten: false };
  }
  const failedRecipient = record.bouncedRecipients[0] ?? dsn.failedRecipients[0];
  if (!failedRecipient) return { isSesBounce: true, raw, rewritten: false };
  let rewritten: Buffer;
  try {
    rewritten = rewriteBounce(raw, {
      failedRecipient,
      ...(record.originalSource !== undefined && { originalSource: record.originalSource }),
    });
  } catch (error) {
    // The outbound record is data someone else wrote; a value we refuse to put in a header must not cost the
    // user the bounce itself.
    ports.logger.warn(
      { err: error instanceof Error ? error.message : String(error), outbound: record.messageId },
      'SES bounce not rewritten: unusable outbound record; delivered unchanged',
    );
    return { isSesBounce: true, raw, rewritten: false };
  }
  ports.metrics.bounceRewritten(ports.domain);
  return { isSesBounce: true, raw: rewritten, rewritten: true, failedRecipient };
}
