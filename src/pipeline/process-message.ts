import { completeAfterEffect, effectKey } from '../aws/effect-ledger.ts';
import type { FetchedMail, MailLocation, ObjectHead } from '../aws/mail-store.ts';
import type { QueueMessage } from '../aws/queue.ts';
import type { RecipientSettings } from '../aws/tables.ts';
import { WorkerError } from '../errors.ts';
import { headersIncomplete, type MailLimit } from '../mail/mail-limits.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import { applyBounceRewrite } from './bounce-stage.ts';
import { checkBlocked } from './blocklist.ts';
import { domainOf, parseSqsBody, unusableRecipientsOf, type SesReceipt } from './notification.ts';
import { headerView, withBodies } from './parse.ts';
import { splitMessage } from '../mail/header-block.ts';
import type { PipelinePorts } from './ports.ts';
import { runRules, type EffectResult } from './rules.ts';
import { detectEol, verdictHeaders } from './verdicts.ts';

/**
 * What happens to the SQS message: deleted; left to reappear later (retry); left for the dead-letter redrive; or
 * released at once (made visible again because the worker is stopping before it started on the mail).
 */
export type Disposition = 'delete' | 'retry' | 'dead-letter' | 'release';

export type RecipientState = 'delivered' | 'invalid' | 'blocked' | 'deferred';

export interface RecipientOutcome {
  recipient: string;
  state: RecipientState;
  code?: number;
  detail?: string;
  /** Deferred only because another worker holds a live ledger claim for it. */
  claimed?: boolean;
}

export type MessageStatus =
  | 'delivered'
  | 'partial'
  | 'invalid'
  | 'blocked'
  | 'deferred'
  | 'failed'
  | 'wrong-domain'
  | 'setup'
  | 'malformed';

export interface MessageOutcome {
  disposition: Disposition;
  status: MessageStatus;
  sqsMessageId: string;
  sesMessageId?: string;
  recipients: RecipientOutcome[];
  effects: EffectResult[];
  ignoredRecipients: string[];
  bounceRewritten: boolean;
  loopMarker: boolean;
  reason?: string;
  /** The message is deferred only because other workers hold claims: retry when those claims can expire. */
  waitingOnClaims?: boolean;
  /** Where the mail is stored, for callers that record a later verdict (MAX_RECEIVES). */
  mailLocation?: MailLocation;
  /** Present when the disposition is `retry` because something temporary failed. */
  error?: ReturnType<WorkerError['toJSON']>;
  /** Mail-controlled sizes past their bound (the mail was delivered, the feature needing them skipped). */
  limits?: MailLimit[];
}

/**
 * Stages 1–8 for one SQS message. Never throws: every failure becomes an outcome whose disposition keeps the
 * message when anything could still succeed later. The message may be deleted only when every recipient is final.
 */
export async function processMessage(
  message: QueueMessage,
  ports: PipelinePorts,
  signal?: AbortSignal,
): Promise<MessageOutcome> {
  const base = {
    sqsMessageId: message.messageId,
    recipients: [] as RecipientOutcome[],
    effects: [] as EffectResult[],
    ignoredRecipients: [] as string[],
    bounceRewritten: false,
    loopMarker: false,
  };
  const parsed = parseSqsBody(message.body, ports.settings.notificationSources);
  if (parsed.kind === 'invalid') {
    return { ...base, disposition: 'dead-letter', status: 'malformed', reason: parsed.reason };
  }
  if (parsed.kind === 'setup') return { ...base, disposition: 'delete', status: 'setup' };

  const receipt = parsed.receipt;
  const withId = {
    ...base,
    sesMessageId: receipt.sesMessageId,
    ...(receipt.mail.kind === 's3' && {
      mailLocation: { bucket: receipt.mail.bucket, key: receipt.mail.key },
    }),
  };
  const mine = [...new Set(receipt.recipients.filter((r) => domainOf(r) === ports.domain))];
  const unusable = receipt.invalidRecipients.map((r) => r.address);
  withId.ignoredRecipients = [...receipt.recipients, ...unusable].filter((r) => domainOf(r) !== ports.domain);
  if (withId.ignoredRecipients.length > 0) {
    ports.logger.warn(
      { sesMessageId: receipt.sesMessageId, ignored: withId.ignoredRecipients.map(ports.redact) },
      'Security: ignored message for wrong domain',
    );
  }
  if (mine.length === 0 && unusableRecipientsOf(receipt, ports.domain).length === 0)
    return { ...withId, disposition: 'delete', status: 'wrong-domain' };
  if (receipt.invalidSource)
    ports.logger.warn(
      { sesMessageId: receipt.sesMessageId, source: receipt.invalidSource },
      'unusable envelope sender: delivering with the null sender',
    );

  let release = () => {};
  try {
    const fetched = await fetchRaw(receipt, ports, signal);
    release = fetched.release;
    return await processReceipt(receipt, fetched, mine, withId, ports);
  } catch (error) {
    if (error instanceof WorkerError && error.code === 'SHUTTING_DOWN') {
      return { ...withId, disposition: 'release', status: 'deferred', reason: error.message };
    }
    const workerError =
      error instanceof WorkerError
        ? error
        : new WorkerError(
            'INTERNAL',
            `unexpected: ${error instanceof Error ? error.message : String(error)}`,
            {
              temporary: true,
              cause: error,
            },
          );
    // Only a verdict about the mail itself may end it undelivered. Anything else that is "permanent" here — a
    // missing table, access denied, a bug — is a fault of this deployment that someone will fix: the message is
    // retried and, failing that, marked failed in S3 and redriven to the DLQ. Never deleted.
    if (workerError.code !== 'MAIL_TOO_LARGE') {
      return {
        ...withId,
        recipients: mine.map((recipient) => ({ recipient, state: 'deferred' as const })),
        disposition: 'retry',
        status: 'deferred',
        reason: workerError.message,
        error: workerError.toJSON(),
      };
    }
    // Permanent and not about a recipient (e.g. over MAX_MAIL_BYTES): record it where the mail is and let go.
    await recordFailure(receipt, workerError, ports);
    return {
      ...withId,
      disposition: 'delete',
      status: 'failed',
      reason: workerError.message,
      error: workerError.toJSON(),
    };
  } finally {
    release();
  }
}

async function processReceipt(
  receipt: SesReceipt,
  fetched: FetchedMail,
  recipients: string[],
  base: Omit<MessageOutcome, 'disposition' | 'status'>,
  ports: PipelinePorts,
): Promise<MessageOutcome> {
  const raw = fetched.bytes;
  let view = headerView(splitMessage(raw));
  const hasLoopMarker = ports.loopMarker.isTrusted(
    view.headers.get(ports.loopMarker.name.toLowerCase()) ?? [],
    recipients,
  );

  const bounce = hasLoopMarker
    ? { isSesBounce: false, raw, rewritten: false }
    : await applyBounceRewrite(raw, view, receipt, ports);

  const settings = await ports.rules.settingsFor(recipients);
  const blockedBy = blockDecisions(receipt, view, recipients, settings);
  const virusRejected = ports.settings.virusPolicy === 'reject' && receipt.verdicts.virus === 'FAIL';

  const outcomes = new Map<string, RecipientOutcome>();
  for (const { address, reason } of unusableRecipientsOf(receipt, ports.domain))
    outcomes.set(address, { recipient: address, state: 'invalid', detail: `unusable address: ${reason}` });
  for (const recipient of recipients) {
    if (virusRejected) outcomes.set(recipient, { recipient, state: 'blocked', detail: 'virus' });
    else if (blockedBy.has(recipient))
      outcomes.set(recipient, { recipient, state: 'blocked', detail: blockedBy.get(recipient) });
  }
  if (!virusRejected && blockedBy.size > 0) ports.metrics.blocked(ports.domain, blockedBy.size);

  const toDeliver = recipients.filter((r) => !outcomes.has(r));
  if (toDeliver.length > 0) {
    const payload = ports.settings.addVerdictHeaders
      ? Buffer.concat([verdictHeaders(receipt.verdicts, detectEol(bounce.raw), bounce.raw), bounce.raw])
      : bounce.raw;
    for (const result of await deliver(receipt, toDeliver, payload, raw, ports))
      outcomes.set(result.recipient, result);
  }

  const effects: EffectResult[] = [];
  const withRules =
    hasLoopMarker || headersIncomplete(view.limits)
      ? []
      : recipients.filter((r) => settings.get(r)?.rule && outcomes.get(r)?.state === 'delivered');
  if (withRules.some((r) => settings.get(r)?.rule?.oooActive)) {
    view = await withBodies(raw, view, { timeoutMs: ports.settings.parseTimeoutMs });
    if (view.parseError) {
      ports.logger.warn(
        { sesMessageId: receipt.sesMessageId, parseError: view.parseError },
        'MIME parse failed; the auto-reply quotes no body',
      );
    }
  }
  for (const recipient of withRules) {
    const rule = settings.get(recipient)?.rule;
    if (!rule) continue;
    effects.push(
      ...(await runRules(
        { receipt, raw, view, isSesBounce: bounce.isSesBounce, hasLoopMarker, recipient, rule },
        ports,
      )),
    );
  }

  const results = [...new Set([...recipients, ...outcomes.keys()])].map(
    (r) => outcomes.get(r) ?? { recipient: r, state: 'deferred' as const },
  );
  const fromRules = [...settings.values()].flatMap((s) => s.limits ?? []);
  const limits = [...new Set([...(view.limits ?? []), ...(bounce.limits ?? []), ...fromRules])];
  for (const limit of limits) ports.metrics.mailLimitHit(ports.domain, limit);
  const recipientsFinal = results.every((r) => r.state !== 'deferred');
  const effectsFinal = effects.every((e) => e.status !== 'deferred');
  const status = recipientsFinal ? finalStatus(results) : 'deferred';
  if (recipientsFinal && effectsFinal)
    await recordAudit(receipt, fetched.head, status, results, effects, view, virusRejected, ports);

  return {
    ...base,
    recipients: results,
    effects,
    bounceRewritten: bounce.rewritten,
    loopMarker: hasLoopMarker,
    disposition: recipientsFinal && effectsFinal ? 'delete' : 'retry',
    status: recipientsFinal && !effectsFinal ? 'deferred' : status,
    waitingOnClaims: onlyClaimsPending(results, effects),
    ...(limits.length > 0 && { limits }),
  };
}

/** True when nothing failed and all that is left is held by another worker's (possibly dead) claim. */
function onlyClaimsPending(results: RecipientOutcome[], effects: EffectResult[]): boolean {
  const pending = [
    ...results.filter((r) => r.state === 'deferred'),
    ...effects.filter((e) => e.status === 'deferred'),
  ];
  return pending.length > 0 && pending.every((p) => p.claimed === true);
}

async function fetchRaw(
  receipt: SesReceipt,
  ports: PipelinePorts,
  signal: AbortSignal | undefined,
): Promise<FetchedMail> {
  if (receipt.mail.kind === 'inline') {
    if (receipt.mail.data.length > ports.settings.maxMailBytes) {
      throw new WorkerError(
        'MAIL_TOO_LARGE',
        `inline mail is ${receipt.mail.data.length} bytes, over MAX_MAIL_BYTES=${ports.settings.maxMailBytes}`,
        { temporary: false },
      );
    }
    return { bytes: receipt.mail.data, release: () => undefined };
  }
  return ports.mailStore.fetch(receipt.mail, {
    maxBytes: ports.settings.maxMailBytes,
    ...(ports.budget && { budget: ports.budget }),
    ...(signal && { signal }),
  });
}

/** Blocked when the From address or the envelope sender matches one of the recipient's patterns. */
function blockDecisions(
  receipt: SesReceipt,
  view: MailView,
  recipients: string[],
  settings: Map<string, RecipientSettings>,
): Map<string, string> {
  const patterns = new Map<string, readonly string[]>();
  for (const [recipient, s] of settings)
    if (s.blockedPatterns.length > 0) patterns.set(recipient, s.blockedPatterns);
  const blocked = new Map<string, string>();
  if (patterns.size === 0) return blocked;
  const senders = [
    ...new Set([view.from?.address ?? '', receipt.source.toLowerCase()].filter((s) => s !== '')),
  ];
  for (const sender of senders) {
    for (const decision of checkBlocked(sender, recipients, patterns)) {
      if (decision.blocked && !blocked.has(decision.recipient)) blocked.set(decision.recipient, sender);
    }
  }
  return blocked;
}

/** Stage 7, guarded by the ledger: recipients a previous attempt delivered are not delivered again. */
async function deliver(
  receipt: SesReceipt,
  recipients: string[],
  payload: Buffer,
  raw: Buffer,
  ports: PipelinePorts,
): Promise<RecipientOutcome[]> {
  const outcomes: RecipientOutcome[] = [];
  const claimed: string[] = [];
  for (const recipient of recipients) {
    const claim = await ports.ledger.claim(effectKey(receipt.sesMessageId, recipient, 'deliver'));
    if (claim === 'claimed') claimed.push(recipient);
    else if (claim === 'done')
      outcomes.push({ recipient, state: 'delivered', detail: 'delivered by an earlier attempt' });
    else
      outcomes.push({
        recipient,
        state: 'deferred',
        detail: 'being delivered by another worker',
        claimed: true,
      });
  }
  if (claimed.length === 0) return outcomes;

  const results: RecipientDelivery[] = await ports.delivery.deliver({
    route: 'mailbox',
    from: receipt.source,
    to: claimed,
    raw: payload,
    transfer: payload !== raw,
  });
  for (const result of results) {
    const key = effectKey(receipt.sesMessageId, result.recipient, 'deliver');
    if (result.status === 'delivered') {
      await completeAfterEffect(
        ports.ledger,
        key,
        (ms) => ports.clock.sleep(ms),
        (error) =>
          ports.logger.error({ key, err: String(error) }, 'delivered but not recorded in the ledger'),
      );
    } else {
      await ports.ledger.release(key).catch(() => undefined);
    }
    outcomes.push({
      recipient: result.recipient,
      state:
        result.status === 'delivered' ? 'delivered' : result.status === 'rejected' ? 'invalid' : 'deferred',
      ...(result.code !== undefined && { code: result.code }),
      ...(result.response !== undefined && { detail: result.response }),
    });
  }
  return outcomes;
}

function finalStatus(results: RecipientOutcome[]): MessageStatus {
  const count = (state: RecipientState) => results.filter((r) => r.state === state).length;
  if (count('blocked') === results.length) return 'blocked';
  if (count('delivered') === results.length) return 'delivered';
  if (count('delivered') === 0) return 'invalid';
  return 'partial';
}

/** Stage 8: the audit trail in the S3 object's metadata. A failure here is logged; the mail is delivered already. */
async function recordAudit(
  receipt: SesReceipt,
  head: ObjectHead | undefined,
  status: MessageStatus,
  results: RecipientOutcome[],
  effects: EffectResult[],
  view: MailView,
  virusRejected: boolean,
  ports: PipelinePorts,
): Promise<void> {
  if (receipt.mail.kind !== 's3') return;
  const location: MailLocation = receipt.mail;
  const invalid = results.filter((r) => r.state === 'invalid').map((r) => r.recipient);
  const blocked = results.filter((r) => r.state === 'blocked');
  const failedEffects = effects.filter((e) => e.status === 'failed');
  const metadata: Record<string, string> = {
    processed: 'true',
    processed_at: String(Math.floor(ports.clock.now() / 1000)),
    processed_by: `worker-${ports.domain}`,
    status,
    ...(invalid.length > 0 && { invalid_inboxes: invalid.join(',') }),
    ...(blocked.length > 0 &&
      !virusRejected && { blocked_sender: blocked[0]?.detail ?? view.from?.address ?? receipt.source }),
    ...(virusRejected && { blocked_reason: 'virus', virus_verdict: receipt.verdicts.virus }),
    ...(receipt.invalidSource && { invalid_source: receipt.invalidSource.address }),
    ...(failedEffects.length > 0 && {
      failed_effects: failedEffects.map((e) => `${e.kind}:${e.target}`).join(','),
    }),
  };
  try {
    await ports.mailStore.updateMetadata(location, metadata, head);
    if (status === 'blocked') await ports.mailStore.remove(location);
  } catch (error) {
    ports.logger.error(
      {
        sesMessageId: receipt.sesMessageId,
        err: error instanceof WorkerError ? error.toJSON() : String(error),
      },
      'could not record the outcome in S3 metadata',
    );
  }
}

async function recordFailure(receipt: SesReceipt, error: WorkerError, ports: PipelinePorts): Promise<void> {
  if (receipt.mail.kind !== 's3') return;
  try {
    await ports.mailStore.updateMetadata(receipt.mail, {
      processed: 'true',
      processed_at: String(Math.floor(ports.clock.now() / 1000)),
      processed_by: `worker-${ports.domain}`,
      status: 'failed',
      failure_reason: `${error.code}: ${error.message}`,
    });
  } catch (metadataError) {
    ports.logger.error(
      { sesMessageId: receipt.sesMessageId, err: String(metadataError) },
      'could not record the failure in S3',
    );
  }
}
