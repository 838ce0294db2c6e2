import { rewriteBounce, sesBounceCheck } from '../mail/bounce.ts';
import { outboundLookupKeys, parseDsn } from '../mail/dsn.ts';
import { MAIL_LIMITS, headersIncomplete, noteLimit, type MailLimit } from '../mail/mail-limits.ts';
import type { MailView } from '../mail/mail-view.ts';
import { errorMessage } from '../errors.ts';
import type { SesReceipt } from './notification.ts';
import type { ParsedHeaders } from './parse.ts';
import type { PipelinePorts } from './ports.ts';

export interface BounceResult {
  /** An SES bounce SES authenticated (only those are rewritten, and only those count as bounces for the rules). */
  isSesBounce: boolean;
  /** The bytes to deliver: rewritten when the outbound record was found, else the input unchanged. */
  raw: Buffer;
  rewritten: boolean;
  failedRecipient?: string;
  /** Bounds the report went past (absent when none). */
  limits?: MailLimit[];
}

/**
 * Stage 4: an SES bounce names `MAILER-DAEMON@amazonses.com` as sender, which tells the user nothing. Find the
 * outbound record of the mail that bounced and show the failed recipient as sender instead. A miss delivers
 * the bounce unchanged — never drop a DSN. The lookup is one BatchGetItem over at most MAIL_LIMITS.dsnIds ids.
 */
export async function applyBounceRewrite(
  raw: Buffer,
  { view, loopMarker }: ParsedHeaders,
  receipt: Pick<SesReceipt, 'sesMessageId' | 'source' | 'verdicts'>,
  ports: PipelinePorts,
): Promise<BounceResult> {
  const unchanged = { isSesBounce: false, raw, rewritten: false };
  // Our own mail come back, or past a header bound (the From may be among the fields not read): ordinary mail.
  if (loopMarker || headersIncomplete(view.limits)) return unchanged;
  const check = sesBounceCheck(view, receipt.source, receipt.verdicts);
  if (check === 'not-a-bounce') return unchanged;
  if (check === 'unauthenticated' && ports.options.bounceRequireAuthenticated) {
    ports.logger.info(
      { sesMessageId: receipt.sesMessageId, spf: receipt.verdicts.spf, dmarc: receipt.verdicts.dmarc },
      'mail claims to be an SES bounce but SES did not authenticate amazonses.com; delivered as ordinary mail',
    );
    return unchanged;
  }
  const dsn = parseDsn(raw);
  const limits = [...(dsn.limits ?? [])];
  const ids = boundedCandidates(dsn.originalMessageIds, view, limits);
  const withLimits = (result: Omit<BounceResult, 'limits'>): BounceResult =>
    limits.length > 0 ? { ...result, limits } : result;
  const notRewritten = withLimits({ isSesBounce: true, raw, rewritten: false });
  const candidates = outboundLookupKeys(ids);
  if (candidates.length === 0) return notRewritten;
  const record = await ports.outbound.find(candidates);
  if (!record) {
    ports.logger.info(
      { sesMessageId: receipt.sesMessageId, candidates: candidates.length },
      'SES bounce without outbound record; delivered unchanged',
    );
    return notRewritten;
  }
  const failedRecipient = record.bouncedRecipients[0] ?? dsn.failedRecipients[0];
  if (!failedRecipient) return notRewritten;
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
      { err: errorMessage(error), outbound: record.messageId },
      'SES bounce not rewritten: unusable outbound record; delivered unchanged',
    );
    return notRewritten;
  }
  ports.metrics.bounceRewritten(ports.domain);
  return withLimits({ isSesBounce: true, raw: rewritten, rewritten: true, failedRecipient });
}

/**
 * The report's own candidates first, then the DSN's In-Reply-To and References (closest first), deduplicated and
 * cut to MAIL_LIMITS.dsnIds: a real SES bounce needs one or two, a forged one may list thousands.
 */
function boundedCandidates(reportIds: readonly string[], view: MailView, limits: MailLimit[]): string[] {
  const all = [...reportIds, ...(view.inReplyTo ? [view.inReplyTo] : []), ...[...view.references].reverse()];
  const unique = [...new Set(all)];
  if (unique.length > MAIL_LIMITS.dsnIds) noteLimit(limits, 'dsn-ids');
  return unique.slice(0, MAIL_LIMITS.dsnIds);
}
