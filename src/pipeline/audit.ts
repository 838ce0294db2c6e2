/**
 * Stage 8: the verdict on the mail in its S3 object's metadata (aws/audit-metadata.ts), written only once every
 * recipient and effect is final. A plain delivery the ledger recorded needs none: its ledger record holds the
 * verdict. Mail every recipient blocked is deleted (marked only when the delete fails). A failure to write is
 * logged: the mail is delivered already, and a crash before the write repeats it (the SQS message is still there).
 */
import { failedMetadata, finalMetadata, type FinalVerdict } from '../aws/audit-metadata.ts';
import type { MailLocation, ObjectHead } from '../aws/mail-store.ts';
import { errorMessage, type WorkerError } from '../errors.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { Attempt } from './attempt.ts';
import type { BlocklistResult } from './blocklist.ts';
import type { EffectResult, MessageStatus, RecipientOutcome, RecipientState } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

export interface AuditInput {
  recipients: readonly RecipientOutcome[];
  effects: readonly EffectResult[];
  view: MailView;
  blocklist: BlocklistResult;
  /** The object's headers as fetched: the update restates them without a HeadObject. */
  head?: ObjectHead;
  /** The ledger's record of the message now holds its verdict (aws/effect-ledger.ts, `LedgerVerdict`). */
  inLedger?: boolean;
}

/** The message's status from its recipients: `deferred` while any recipient or effect is not final. */
export function messageStatus(
  recipients: readonly RecipientOutcome[],
  effects: readonly EffectResult[],
): FinalVerdict['status'] | 'deferred' {
  if (recipients.some((r) => r.state === 'deferred') || effects.some((e) => e.status === 'deferred'))
    return 'deferred';
  const count = (state: RecipientState) => recipients.filter((r) => r.state === state).length;
  if (count('blocked') === recipients.length) return 'blocked';
  if (count('delivered') === recipients.length) return 'delivered';
  if (count('delivered') > 0) return 'partial';
  return count('rejected') > 0 ? 'rejected' : 'invalid';
}

/** Records the verdict when the status is final; returns the status. */
export async function recordAudit(
  attempt: Attempt,
  input: AuditInput,
  ports: PipelinePorts,
): Promise<MessageStatus> {
  const status = messageStatus(input.recipients, input.effects);
  if (status === 'deferred' || attempt.receipt.mail.kind !== 's3') return status;
  const location = attempt.receipt.mail;
  const verdict = verdictOf(attempt, status, input, ports);
  if (input.inLedger === true && plainDelivery(verdict) && input.head?.Metadata?.status === undefined)
    return status;
  try {
    if (status === 'blocked') await removeBlocked(location, verdict, input, ports);
    else await ports.mailStore.updateMetadata(location, finalMetadata(verdict), input.head);
  } catch (error) {
    ports.logger.error(
      { sesMessageId: attempt.receipt.sesMessageId, err: errorMessage(error) },
      'could not record the outcome in S3 metadata',
    );
  }
  return status;
}

/**
 * Every recipient delivered and nothing else to say: what the ledger's record already tells `replay`, `inject` and
 * `dlq`. Any earlier verdict on the object is replaced instead (a replay of mail that once failed), so it never
 * stays behind, untrue.
 */
function plainDelivery(verdict: FinalVerdict): boolean {
  return (
    verdict.status === 'delivered' &&
    verdict.failedEffects.length === 0 &&
    verdict.invalidSource === undefined
  );
}

/** The object goes: its metadata would go with it, so it is written only when the delete fails. */
async function removeBlocked(
  location: MailLocation,
  verdict: FinalVerdict,
  input: AuditInput,
  ports: PipelinePorts,
): Promise<void> {
  try {
    await ports.mailStore.remove(location);
  } catch (error) {
    await ports.mailStore.updateMetadata(location, finalMetadata(verdict), input.head);
    throw error;
  }
}

function verdictOf(
  attempt: Attempt,
  status: FinalVerdict['status'],
  input: AuditInput,
  ports: PipelinePorts,
): FinalVerdict {
  const { receipt } = attempt;
  const { recipients, blocklist } = input;
  const blocked = recipients.find((r) => r.state === 'blocked');
  return {
    status,
    at: ports.clock.now(),
    domain: ports.domain,
    envelopeRecipients: recipients.map((r) => r.recipient),
    invalid: recipients.filter((r) => r.state === 'invalid').map((r) => r.recipient),
    contentRejected: recipients
      .filter((r) => r.state === 'rejected')
      .map((r) => ({ recipient: r.recipient, detail: r.detail ?? String(r.code ?? '') })),
    ...(blocked &&
      !blocklist.virusRejected && {
        blockedSender: blocked.detail ?? input.view.from?.address ?? receipt.source,
      }),
    ...(blocklist.virusRejected && { virus: receipt.verdicts.virus }),
    ...(receipt.invalidSource && { invalidSource: receipt.invalidSource.address }),
    failedEffects: input.effects.filter((e) => e.status === 'failed').map((e) => `${e.kind}:${e.target}`),
  };
}

/** A permanent fault about the mail itself (over MAX_MAIL_BYTES): recorded where the mail is. */
export async function recordFailure(
  attempt: Attempt,
  error: WorkerError,
  ports: PipelinePorts,
): Promise<void> {
  if (attempt.receipt.mail.kind !== 's3') return;
  try {
    await ports.mailStore.updateMetadata(
      attempt.receipt.mail,
      failedMetadata(ports.clock.now(), ports.domain, `${error.code}: ${error.message}`),
    );
  } catch (metadataError) {
    ports.logger.error(
      { sesMessageId: attempt.receipt.sesMessageId, err: errorMessage(metadataError) },
      'could not record the failure in S3',
    );
  }
}
