/**
 * Stage 8: the verdict on the mail in its S3 object's metadata (aws/audit-metadata.ts), written only once every
/**
 * Stage 8: the verdict on the mail in its S3 object's metadata (aws/audit-metadata.ts), written only once every
 * recipient and effect is final. Mail every recipient blocked is deleted (marked only when the delete fails) —
 * unless another hosted domain shares the object (one receipt rule for several domains) and still needs it. A
 * failure to write is logged: the mail is delivered already, and a crash before the write repeats it (the SQS
 * message is still there).
 */
import {
  REPLAY_PENDING_KEY,
  domainVerdicts,
  failedMetadata,
  finalMetadata,
  type FinalVerdict,
} from '../aws/audit-metadata.ts';
import type { MailLocation, ObjectHead } from '../aws/mail-store.ts';
import { errorMessage, type WorkerError } from '../errors.ts';
import { domainOf } from '../mail/envelope-address.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { Attempt } from './attempt.ts';
import type { BlocklistResult } from './blocklist.ts';
import { recipientsOf, type SesReceipt } from './notification.ts';
import type { EffectResult, RecipientOutcome, RecipientState } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

export interface AuditInput {
  recipients: readonly RecipientOutcome[];
  effects: readonly EffectResult[];
  view: MailView;
  blocklist: BlocklistResult;
  /** The object's headers as fetched: the update restates them without a HeadObject. */
  head?: ObjectHead;
  /** Recipients whose table items went past a bound (the bad part skipped or cut). */
  ruleLimits?: ReadonlyArray<{ recipient: string; limits: readonly string[] }>;
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

/** Records the verdict when `status` (the `messageStatus` of the input) is final. */
export async function recordAudit(
  attempt: Attempt,
  status: FinalVerdict['status'] | 'deferred',
  input: AuditInput,
  ports: PipelinePorts,
): Promise<void> {
  if (status === 'deferred' || attempt.receipt.mail.kind !== 's3') return;
  const location = attempt.receipt.mail;
  const verdict = verdictOf(attempt, status, input, ports);
  const sharing = sharingDomains(attempt.receipt, ports);
  if (input.inLedger === true && sharing.length === 0 && plainDelivery(verdict, input)) return;
  try {
    if (status === 'blocked' && sharing.length === 0) await removeBlocked(location, verdict, input, ports);
    else await recordVerdict(location, verdict, sharing, input, ports);
  } catch (error) {
    ports.logger.error(
      { sesMessageId: attempt.receipt.sesMessageId, err: errorMessage(error) },
      'could not record the outcome in S3 metadata',
    );
  }
}

/**
 * The verdict on an object other hosted domains may share: merged with what it holds now (another domain's verdict
 * may have been written since the fetch); a blocked mail is deleted once no sharing domain still needs it.
 */
async function recordVerdict(
  location: MailLocation,
  verdict: FinalVerdict,
  sharing: readonly string[],
  input: AuditInput,
  ports: PipelinePorts,
): Promise<void> {
  await ports.mailStore.updateMetadata(
    location,
    finalMetadata(verdict),
    sharing.length > 0 ? undefined : input.head,
  );
  if (verdict.status === 'blocked' && (await noOtherDomainNeeds(location, sharing, ports)))
    await ports.mailStore.remove(location);
}

/**
 * Every recipient delivered and nothing else to say: no effect went out or was held back, no bound was hit, the
 * sender was usable, and the object carries no earlier verdict (a replay of mail that once failed gets the new one,
 * so an old verdict never stays behind, untrue) and no pending `replay --wait`, which waits for the S3 verdict. The ledger's record then says all the metadata would: the status,
 * and the envelope recipients (its delivery marks), which `replay`, `inject --wait` and `dlq show` read there.
 */
function plainDelivery(verdict: FinalVerdict, input: AuditInput): boolean {
  return (
    verdict.status === 'delivered' &&
    input.effects.length === 0 &&
    verdict.invalidSource === undefined &&
    (verdict.excessRecipients ?? []).length === 0 &&
    (verdict.ruleLimits ?? []).length === 0 &&
    input.head?.Metadata?.status === undefined &&
    input.head?.Metadata?.[REPLAY_PENDING_KEY] === undefined
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
    ...(input.ruleLimits && { ruleLimits: input.ruleLimits }),
    ...(status === 'partial' && {
      delivered: recipients.filter((r) => r.state === 'delivered').map((r) => r.recipient),
    }),
    sentEffects: input.effects
      .filter((e) => e.status === 'sent' || e.status === 'done-before')
      .map((e) => `${e.kind}:${e.target}`),
    suppressedEffects: input.effects
      .filter((e) => e.status === 'suppressed')
      .map((e) => ({ kind: e.kind, recipient: e.recipient, reason: e.reason ?? 'unknown' })),
    excessRecipients: recipientsOf(receipt, ports.domain).excess,
  };
}

/** The other hosted domains among the mail's envelope recipients: their pollers read the same object. */
function sharingDomains(receipt: SesReceipt, ports: PipelinePorts): string[] {
  const addresses = [...receipt.recipients, ...receipt.invalidRecipients.map((r) => r.address)];
  const domains = new Set(addresses.map(domainOf));
  return [...domains].filter((d) => d !== ports.domain && ports.hostedDomains.includes(d));
}

/** Every domain sharing the object recorded that all its recipients blocked the sender too: nobody needs it. */
async function noOtherDomainNeeds(
  location: MailLocation,
  sharing: readonly string[],
  ports: PipelinePorts,
): Promise<boolean> {
  if (sharing.length === 0) return true;
  const metadata = await ports.mailStore.metadata(location);
  if (metadata === undefined) return false;
  const verdicts = domainVerdicts(metadata);
  return sharing.every((domain) => verdicts.get(domain) === 'blocked');
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
