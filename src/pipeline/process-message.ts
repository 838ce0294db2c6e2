/**
 * One SQS message through the stages, in order. Never throws: every failure becomes an outcome, and what is not
 * final says why (outcome.ts), so the poller's retry policy can keep the message whenever anything could still
 * succeed later. The message may be deleted only when every recipient is final.
 */
import type { QueueMessage } from '../aws/queue.ts';
import type { RecipientEntry } from '../aws/recipient-directory.ts';
import type { MailLimit } from '../mail/mail-limits.ts';
import { toWorkerError } from '../errors.ts';
import { beginAttempt, recipientResults, type Attempt, type ProcessOptions } from './attempt.ts';
import { messageStatus, recordAudit, recordFailure, type AuditInput } from './audit.ts';
import { applyBlocklist } from './blocklist.ts';
import { applyBounceRewrite } from './bounce.ts';
import { deliverMail } from './deliver.ts';
import { runEffects } from './effects.ts';
import { fetchMail, type FetchedAttempt } from './fetch.ts';
import { readNotification, recipientsOf } from './notification.ts';
import {
  deferralFor,
  type EffectResult,
  type MessageOutcome,
  type MessageStatus,
  type RecipientOutcome,
} from './outcome.ts';
import { readHeaders } from './parse.ts';
import type { PipelinePorts } from './ports.ts';

export async function processMessage(
  message: QueueMessage,
  ports: PipelinePorts,
  options: ProcessOptions = {},
): Promise<MessageOutcome> {
  const notification = readNotification(message, ports);
  if (notification.kind === 'settled') return notification.outcome;
  const attempt = beginAttempt(notification.mail, ports, options);
  let fetched: FetchedAttempt | undefined;
  try {
    fetched = await fetchMail(attempt, ports);
    if (fetched.redelivery) return await redelivery(attempt, fetched);
    return await processMail(attempt, fetched, ports);
  } catch (error) {
    return await attemptFault(attempt, error, ports);
  } finally {
    fetched?.mail.free();
  }
}

/** Stages 3 to 8 on the fetched mail. */
async function processMail(
  attempt: Attempt,
  fetched: FetchedAttempt,
  ports: PipelinePorts,
): Promise<MessageOutcome> {
  const raw = fetched.mail.bytes;
  const parsed = readHeaders(raw, attempt.recipients, ports);
  const bounce = await applyBounceRewrite(raw, parsed, attempt.receipt, ports);
  const entries = await attempt.early.entries;
  const blocklist = applyBlocklist(attempt, parsed.view, entries, ports);
  const delivery = await deliverMail(attempt, bounce.raw, ports);
  const { effects, view } = await runEffects(attempt, raw, parsed, bounce, entries, ports);
  const recipients = recipientResults(attempt);
  const head = fetched.mail.head;
  const ruleLimits = [...entries].flatMap(([recipient, e]) =>
    e.limits ? [{ recipient, limits: e.limits }] : [],
  );
  const status = await recordOutcome(
    attempt,
    { recipients, effects, view, blocklist, ruleLimits, ...(head && { head }) },
    ports,
  );
  const limits = [
    ...new Set([
      ...notificationLimits(attempt, ports),
      ...(view.limits ?? []),
      ...(bounce.limits ?? []),
      ...entryLimits(entries),
    ]),
  ];
  return {
    ...attempt.base,
    status: repeated(attempt, recipients, effects) ? 'duplicate' : status,
    recipients,
    effects,
    bounceRewritten: bounce.rewritten,
    loopMarker: parsed.loopMarker,
    ...(delivery.error && { reason: delivery.error.message, error: delivery.error.toJSON() }),
    ...(fetched.recorded.gaveUp && { gaveUpRecorded: true }),
    ...(limits.length > 0 && { limits }),
  };
}

/** The notification named more of this domain's recipients than one mail can have (MAIL_LIMITS.recipients). */
function notificationLimits(attempt: Attempt, ports: PipelinePorts): MailLimit[] {
  return recipientsOf(attempt.receipt, ports.domain).excess.length > 0 ? ['recipients'] : [];
}

/**
 * Stage 8: the ledger's last write, with the verdict when the message is final, then the S3 audit metadata — which
 * a plain delivery the ledger recorded does without (pipeline/audit.ts). Both before the SQS delete: a crash at any
 * point leaves the message in the queue.
 */
async function recordOutcome(
  attempt: Attempt,
  input: AuditInput,
  ports: PipelinePorts,
): Promise<MessageStatus> {
  const status = messageStatus(input.recipients, input.effects);
  const verdict = status === 'deferred' ? undefined : { status, at: Math.floor(ports.clock.now() / 1000) };
  const inLedger = await attempt.guard.finish(verdict);
  await recordAudit(attempt, status, { ...input, inLedger }, ports);
  return status;
}

/**
 * Nothing was left to do (not a replay): every recipient was delivered and every effect done by an earlier attempt
 * — SNS delivered the notification twice, or a delete was lost, and the ledger recognised it.
 */
function repeated(
  attempt: Attempt,
  recipients: readonly RecipientOutcome[],
  effects: readonly EffectResult[],
): boolean {
  return (
    !attempt.replay &&
    recipients.length > 0 &&
    recipients.every((r) => r.earlier === true) &&
    effects.every((e) => e.status === 'done-before' || e.status === 'suppressed')
  );
}

/** Bounds the recipients' table items went past (their data was cut to them). */
function entryLimits(entries: ReadonlyMap<string, RecipientEntry>): MailLimit[] {
  return [...entries.values()].flatMap((e) => e.limits ?? []);
}

/** The object says it was processed: this notification came again (SNS, a lost delete). Nothing more to do. */
async function redelivery(attempt: Attempt, fetched: FetchedAttempt): Promise<MessageOutcome> {
  await attempt.guard.finish();
  return {
    ...attempt.base,
    status: 'duplicate',
    reason: `already processed (S3 metadata status=${fetched.recorded.status ?? 'unknown'})`,
  };
}

/**
 * A fault that stopped the attempt. Only a verdict about the mail itself (over MAX_MAIL_BYTES) may end it
 * undelivered; anything else — a missing table, access denied, a bug — waits for someone to fix it: retried and,
 * failing that, marked failed in S3 and redriven to the DLQ, never deleted. What was final stays so.
 */
async function attemptFault(attempt: Attempt, error: unknown, ports: PipelinePorts): Promise<MessageOutcome> {
  await attempt.guard.finish();
  const fault = toWorkerError(error);
  const fields = { reason: fault.message, error: fault.toJSON() };
  if (fault.code === 'SHUTTING_DOWN')
    return { ...attempt.base, status: 'deferred', fault: { reason: 'stopping' }, ...fields };
  if (fault.code === 'MAIL_TOO_LARGE') {
    await recordFailure(attempt, fault, ports);
    return { ...attempt.base, status: 'failed', ...fields };
  }
  return {
    ...attempt.base,
    status: 'deferred',
    recipients: recipientResults(attempt),
    effects: attempt.progress.effects,
    fault: deferralFor(fault),
    ...fields,
  };
}
