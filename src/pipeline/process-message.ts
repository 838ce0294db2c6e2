import type { Claim } from '../aws/effect-ledger.ts';
import type { PermitOptions } from '../aws/send-pacer.ts';
import { effectKey } from '../aws/effect-ledger.ts';
import { failedMetadata, finalMetadata, type FinalVerdict } from '../aws/audit-metadata.ts';
import type { FetchedMail, MailLocation, ObjectHead } from '../aws/mail-store.ts';
import type { QueueMessage } from '../aws/queue.ts';
import type { RecipientSettings } from '../aws/tables.ts';
import { WorkerError } from '../errors.ts';
import { headersIncomplete, type MailLimit } from '../mail/mail-limits.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import { applyBounceRewrite } from './bounce-stage.ts';
import { checkBlocked } from './blocklist.ts';
import { deliveryId, withDeliveryId } from './delivery-id.ts';
import { claimAll, releaseClaims, runGuarded, type ClaimSet, type GuardContext } from './guarded-effect.ts';
import { domainOf, parseSqsBody, unusableRecipientsOf, type SesReceipt } from './notification.ts';
import { headerView, withBodies } from './parse.ts';
import { splitMessage } from '../mail/header-block.ts';
import type { PipelinePorts } from './ports.ts';
import { runRules, type EffectResult, type RuleInput } from './rules.ts';
import { detectEol, verdictHeaders } from './verdicts.ts';

/**
 * What happens to the SQS message: deleted; left to reappear later (retry); left for the dead-letter redrive; or
 * released at once (made visible again because the worker is stopping before it started on the mail).
 */
export type Disposition = 'delete' | 'retry' | 'dead-letter' | 'release';

/**
 * `delivered`; `invalid`: the mail server refused the recipient; `rejected`: it refused the mail's content (spam or
 * virus filter, size, quota); `blocked`: the recipient blocked the sender; `deferred`: not final yet.
 */
export type RecipientState = 'delivered' | 'invalid' | 'rejected' | 'blocked' | 'deferred';

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
  | 'rejected'
  | 'blocked'
  | 'deferred'
  | 'failed'
  | 'duplicate'
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
  /** A reply of the mail server saying the deployment is wrong (relay denied, client rejected, ...). */
  deploymentFault?: string;
  /** The mail server accepted a copy in this attempt: its configuration works for this domain. */
  serverAccepted?: boolean;
  /** The AWS error name of a table call that failed as a missing or misshapen table would (re-check the tables). */
  tableFault?: string;
  /** The mail's S3 object already records that the worker gave up on it (status=failed, processed=false). */
  failureRecorded?: boolean;
  /** Mail-controlled sizes past their bound (the mail was delivered, the feature needing them skipped). */
  limits?: MailLimit[];
}

export interface ProcessOptions {
  /** Aborts work that has not really started (waiting for memory budget, fetching) when stopping. */
  signal?: AbortSignal;
  /** Claims the message holds in the ledger while it is processed; the poller's heartbeat renews their leases. */
  liveClaims?: Set<Claim>;
  /**
   * Told when the message starts and stops waiting for an SES send permit: meanwhile it needs no processing slot,
   * so the poller lets other mail in (local deliveries are not held up by forwards waiting for SES).
   */
  onWait?: (waiting: boolean) => void;
}

/** AWS errors a table that does not exist, or whose key differs from what the daemon writes, produces. */
const TABLE_FAULTS = new Set(['ResourceNotFoundException', 'ValidationException']);

type OutcomeBase = Omit<MessageOutcome, 'disposition' | 'status'>;

/** What is known so far about a message being processed: a late fault still reports what was really done. */
interface Progress {
  recipients: Map<string, RecipientOutcome>;
  effects: EffectResult[];
}

/** One attempt at one message, as the stages after parsing the notification see it. */
interface Attempt {
  receipt: SesReceipt;
  /** This poller's recipients of the mail. */
  recipients: string[];
  /** The replay generation (0 unless a forced replay): part of every ledger key and delivery id. */
  generation: number;
  replay: boolean;
  guard: GuardContext;
  permit: PermitOptions;
  progress: Progress;
  /**
   * Started together with the fetch, since they need only the notification: the recipients' rules and blocklists,
   * and the claims of their deliveries (released again for those that turn out blocked).
   */
  early: { settings: Promise<Map<string, RecipientSettings>>; claims: Promise<ClaimSet> };
}

/**
 * Stages 1–8 for one SQS message. Never throws: every failure becomes an outcome whose disposition keeps the
 * message when anything could still succeed later. The message may be deleted only when every recipient is final.
 */
export async function processMessage(
  message: QueueMessage,
  ports: PipelinePorts,
  options: ProcessOptions = {},
): Promise<MessageOutcome> {
  const base: OutcomeBase = {
    sqsMessageId: message.messageId,
    recipients: [],
    effects: [],
    ignoredRecipients: [],
    bounceRewritten: false,
    loopMarker: false,
  };
  const parsed = parseSqsBody(message.body, ports.settings.notificationSources);
  if (parsed.kind === 'invalid') {
    return { ...base, disposition: 'dead-letter', status: 'malformed', reason: parsed.reason };
  }
  if (parsed.kind === 'setup') return { ...base, disposition: 'delete', status: 'setup' };

  const receipt = parsed.receipt;
  const withId: OutcomeBase = {
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
  if (message.replay?.invalidGeneration !== undefined) {
    ports.logger.warn(
      { sesMessageId: receipt.sesMessageId, generation: message.replay.invalidGeneration },
      'replay generation is not an integer >= 1; replaying as generation 0 (the ledger skips what was done)',
    );
  }

  const guard: GuardContext = {
    ledger: ports.ledger,
    liveClaims: options.liveClaims ?? new Set(),
    domain: ports.domain,
    logger: ports.logger,
    metrics: ports.metrics,
    sleep: (ms) => ports.clock.sleep(ms),
  };
  const attempt: Attempt = {
    receipt,
    recipients: mine,
    generation: message.replay?.generation ?? 0,
    replay: message.replay !== undefined,
    guard,
    permit: {
      ...(options.signal && { signal: options.signal }),
      ...(options.onWait && { onWait: options.onWait }),
    },
    progress: { recipients: new Map(), effects: [] },
    early: startEarly(receipt, mine, message.replay?.generation ?? 0, guard, ports),
  };
  let release = () => {};
  try {
    const fetched = await fetchRaw(receipt, ports, options.signal);
    release = fetched.release;
    return await processReceipt(attempt, fetched, withId, ports);
  } catch (error) {
    await releaseClaims(guard, await attempt.early.claims);
    if (error instanceof WorkerError && error.code === 'SHUTTING_DOWN') {
      return { ...withId, disposition: 'release', status: 'deferred', reason: error.message };
    }
    const workerError = asWorkerError(error);
    // Only a verdict about the mail itself may end it undelivered. Anything else that is "permanent" here — a
    // missing table, access denied, a bug — is a fault of this deployment that someone will fix: the message is
    // retried and, failing that, marked failed in S3 and redriven to the DLQ. Never deleted.
    if (workerError.code !== 'MAIL_TOO_LARGE') {
      return {
        ...withId,
        ...lateFaultProgress(attempt),
        disposition: 'retry',
        status: 'deferred',
        reason: workerError.message,
        error: workerError.toJSON(),
        ...tableFaultOf([workerError.awsCode]),
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

/** After an unexpected fault: what was final stays so (a delivered recipient is reported delivered), the rest waits. */
function lateFaultProgress(attempt: Attempt): Pick<MessageOutcome, 'recipients' | 'effects'> {
  return {
    recipients: attempt.recipients.map(
      (recipient) => attempt.progress.recipients.get(recipient) ?? { recipient, state: 'deferred' as const },
    ),
    effects: attempt.progress.effects,
  };
}

async function processReceipt(
  attempt: Attempt,
  fetched: FetchedMail,
  base: OutcomeBase,
  ports: PipelinePorts,
): Promise<MessageOutcome> {
  const { receipt, recipients, progress } = attempt;
  const recorded = fetched.head?.Metadata ?? {};
  // A final verdict in the object's metadata is written only once everything was final: this notification is a
  // redelivery (SNS, a lost delete). A replay asked for the mail to be handled again.
  if (recorded.processed === 'true' && !attempt.replay) {
    await releaseClaims(attempt.guard, await attempt.early.claims);
    return {
      ...base,
      disposition: 'delete',
      status: 'duplicate',
      reason: `already processed (S3 metadata status=${recorded.status ?? 'unknown'})`,
    };
  }

  const raw = fetched.bytes;
  const view = headerView(splitMessage(raw));
  const hasLoopMarker = ports.loopMarker.isTrusted(
    view.headers.get(ports.loopMarker.name.toLowerCase()) ?? [],
    recipients,
  );
  const bounce = hasLoopMarker
    ? { isSesBounce: false, raw, rewritten: false }
    : await applyBounceRewrite(raw, view, receipt, ports);

  const settings = await attempt.early.settings;
  const virusRejected = ports.settings.virusPolicy === 'reject' && receipt.verdicts.virus === 'FAIL';
  markBlocked(attempt, blockDecisions(receipt, view, recipients, settings), virusRejected, ports);

  const outcomes = progress.recipients;
  for (const { address, reason } of unusableRecipientsOf(receipt, ports.domain))
    outcomes.set(address, { recipient: address, state: 'invalid', detail: `unusable address: ${reason}` });
  const toDeliver = recipients.filter((r) => !outcomes.has(r));
  const claims = await claimsFor(attempt, toDeliver);
  const delivery =
    toDeliver.length > 0 ? await deliver(attempt, toDeliver, claims, bounce.raw, ports) : emptyDelivery();
  for (const result of delivery.outcomes) outcomes.set(result.recipient, result);

  const withRules =
    hasLoopMarker || headersIncomplete(view.limits)
      ? []
      : recipients.filter((r) => settings.get(r)?.rule && outcomes.get(r)?.state === 'delivered');
  const { effects, view: ruleView } = await applyRules(
    attempt,
    withRules,
    settings,
    {
      receipt,
      raw,
      view,
      isSesBounce: bounce.isSesBounce,
      hasLoopMarker,
    },
    ports,
  );

  const results = [...new Set([...recipients, ...outcomes.keys()])].map(
    (r) => outcomes.get(r) ?? { recipient: r, state: 'deferred' as const },
  );
  const fromRules = [...settings.values()].flatMap((s) => s.limits ?? []);
  const limits = [...new Set([...(ruleView.limits ?? []), ...(bounce.limits ?? []), ...fromRules])];
  for (const limit of limits) ports.metrics.mailLimitHit(ports.domain, limit);
  const recipientsFinal = results.every((r) => r.state !== 'deferred');
  const effectsFinal = effects.every((e) => e.status !== 'deferred');
  const status = recipientsFinal ? finalStatus(results) : 'deferred';
  if (recipientsFinal && effectsFinal)
    await recordAudit(receipt, fetched.head, status, results, effects, ruleView, virusRejected, ports);

  return {
    ...base,
    recipients: results,
    effects,
    bounceRewritten: bounce.rewritten,
    loopMarker: hasLoopMarker,
    disposition: recipientsFinal && effectsFinal ? 'delete' : 'retry',
    status: recipientsFinal && !effectsFinal ? 'deferred' : status,
    waitingOnClaims: onlyClaimsPending(results, effects),
    ...deploymentFindings(delivery, effects),
    ...(recorded.processed === 'false' && recorded.status === 'failed' && { failureRecorded: true }),
    ...(limits.length > 0 && { limits }),
  };
}

/** Recipients who blocked the sender (or all, for a virus under VIRUS_POLICY=reject) are final: blocked. */
function markBlocked(
  attempt: Attempt,
  blockedBy: Map<string, string>,
  virusRejected: boolean,
  ports: PipelinePorts,
): void {
  const outcomes = attempt.progress.recipients;
  for (const recipient of attempt.recipients) {
    if (virusRejected) outcomes.set(recipient, { recipient, state: 'blocked', detail: 'virus' });
    else if (blockedBy.has(recipient))
      outcomes.set(recipient, { recipient, state: 'blocked', detail: blockedBy.get(recipient) });
  }
  if (!virusRejected && blockedBy.size > 0) ports.metrics.blocked(ports.domain, blockedBy.size);
}

/**
 * Stage 6 for every delivered recipient with a rule, all at once. Bodies are decoded only when an auto-reply may
 * quote them (the one consumer of bodies); the view with bodies is returned for the audit.
 */
async function applyRules(
  attempt: Attempt,
  withRules: readonly string[],
  settings: Map<string, RecipientSettings>,
  input: Omit<RuleInput, 'recipient' | 'rule' | 'generation' | 'permit'>,
  ports: PipelinePorts,
): Promise<{ effects: EffectResult[]; view: MailView }> {
  let view = input.view;
  if (withRules.some((r) => settings.get(r)?.rule?.oooActive)) {
    view = await withBodies(input.raw, view, { timeoutMs: ports.settings.parseTimeoutMs });
    if (view.parseError) {
      ports.logger.warn(
        { sesMessageId: input.receipt.sesMessageId, parseError: view.parseError },
        'MIME parse failed; the auto-reply quotes no body',
      );
    }
  }
  const lists = await Promise.all(
    withRules.flatMap((recipient) => {
      const rule = settings.get(recipient)?.rule;
      if (!rule) return [];
      const ruleInput = {
        ...input,
        view,
        recipient,
        rule,
        generation: attempt.generation,
        permit: attempt.permit,
      };
      return [runRules(ruleInput, ports, attempt.guard)];
    }),
  );
  const effects = lists.flat();
  attempt.progress.effects.push(...effects);
  return { effects, view };
}

/** What this attempt learnt about the deployment: a refusing mail server, a working one, a table to check. */
function deploymentFindings(
  delivery: DeliveryResult,
  effects: EffectResult[],
): Pick<MessageOutcome, 'reason' | 'error' | 'deploymentFault' | 'serverAccepted' | 'tableFault'> {
  const fault = delivery.deploymentFault ?? effects.find((e) => e.deploymentFault)?.deploymentFault;
  const accepted = delivery.accepted || effects.some((e) => e.status === 'sent' && e.route === 'internal');
  return {
    ...(delivery.error && { reason: delivery.error.message, error: delivery.error.toJSON() }),
    ...(fault !== undefined && { deploymentFault: fault }),
    ...(accepted && { serverAccepted: true }),
    ...tableFaultOf([delivery.error?.awsCode, ...effects.map((e) => e.awsCode)]),
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

function deliverKey(receipt: SesReceipt, recipient: string, generation: number): string {
  return effectKey(receipt.sesMessageId, recipient, 'deliver', generation);
}

function startEarly(
  receipt: SesReceipt,
  recipients: readonly string[],
  generation: number,
  guard: GuardContext,
  ports: PipelinePorts,
): Attempt['early'] {
  const settings = ports.rules.settingsFor(recipients);
  // Awaited later, or never when the fetch fails first: that must not count as an unhandled rejection.
  settings.catch(() => undefined);
  const claims = claimAll(
    guard,
    recipients.map((r) => deliverKey(receipt, r, generation)),
  );
  return { settings, claims };
}

/** The early claims of the recipients to deliver to now; those of the others (blocked) are given back. */
async function claimsFor(attempt: Attempt, toDeliver: readonly string[]): Promise<ClaimSet> {
  const all = await attempt.early.claims;
  const wanted = new Set(toDeliver.map((r) => deliverKey(attempt.receipt, r, attempt.generation)));
  await releaseClaims(
    attempt.guard,
    all,
    [...all.claims.keys()].filter((key) => !wanted.has(key)),
  );
  return {
    claims: all.claims,
    fates: new Map([...all.fates].filter(([key]) => wanted.has(key))),
  };
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

interface DeliveryResult {
  outcomes: RecipientOutcome[];
  /** The mail server accepted the mail for at least one recipient now. */
  accepted: boolean;
  /** The server's reply when it said the deployment is wrong. */
  deploymentFault?: string;
  /** A ledger claim failed (DynamoDB): those recipients wait, the message is retried. */
  error?: WorkerError;
}

function emptyDelivery(): DeliveryResult {
  return { outcomes: [], accepted: false };
}

/**
 * Stage 7, guarded by the ledger: one transaction to every recipient whose claim this attempt won; recipients an
 * earlier attempt delivered are not delivered again. The copy carries the delivery id first, then the verdicts.
 */
async function deliver(
  attempt: Attempt,
  recipients: string[],
  claims: ClaimSet,
  raw: Buffer,
  ports: PipelinePorts,
): Promise<DeliveryResult> {
  const { receipt, generation } = attempt;
  const keyOf = new Map(recipients.map((r) => [deliverKey(receipt, r, generation), r] as const));
  const fates = await runGuarded(
    attempt.guard,
    claims,
    async (claimed) => {
      const to = claimed.map((key) => keyOf.get(key) ?? key);
      const verdicts = ports.settings.addVerdictHeaders
        ? verdictHeaders(receipt.verdicts, detectEol(raw), raw)
        : undefined;
      const payload = withDeliveryId(
        raw,
        deliveryId(receipt.sesMessageId, generation, { kind: 'deliver' }),
        verdicts,
      );
      const results = await ports.delivery.deliver({
        route: 'mailbox',
        from: receipt.source,
        to,
        raw: payload,
        transfer: true,
      });
      const byRecipient = new Map(results.map((r) => [r.recipient.toLowerCase(), r]));
      return new Map(
        claimed.flatMap((key) => {
          const result = byRecipient.get((keyOf.get(key) ?? '').toLowerCase());
          return result ? [[key, result] as const] : [];
        }),
      );
    },
    (result: RecipientDelivery) => result.status === 'delivered',
  );

  const delivery: DeliveryResult = emptyDelivery();
  for (const [key, recipient] of keyOf) {
    const fate = fates.get(key);
    if (fate?.state === 'done-before') {
      delivery.outcomes.push({ recipient, state: 'delivered', detail: 'delivered by an earlier attempt' });
    } else if (fate?.state === 'busy') {
      delivery.outcomes.push({
        recipient,
        state: 'deferred',
        detail: 'being delivered by another worker',
        claimed: true,
      });
    } else if (fate?.state === 'ran') {
      const result = fate.result;
      if (result.status === 'delivered') delivery.accepted = true;
      if (result.deploymentFault) delivery.deploymentFault ??= result.response ?? `reply ${result.code}`;
      delivery.outcomes.push(recipientOutcome(recipient, result));
    } else {
      delivery.error ??= fate?.error;
      delivery.outcomes.push({ recipient, state: 'deferred', detail: fate?.error.message ?? 'not claimed' });
    }
  }
  return delivery;
}

function recipientOutcome(recipient: string, result: RecipientDelivery): RecipientOutcome {
  const state: RecipientState = result.status;
  const detail =
    result.deploymentFault && result.response !== undefined
      ? `the mail server's configuration refuses this domain: ${result.response}`
      : result.response;
  return {
    recipient,
    state,
    ...(result.code !== undefined && { code: result.code }),
    ...(detail !== undefined && { detail }),
  };
}

function finalStatus(results: RecipientOutcome[]): MessageStatus {
  const count = (state: RecipientState) => results.filter((r) => r.state === state).length;
  if (count('blocked') === results.length) return 'blocked';
  if (count('delivered') === results.length) return 'delivered';
  if (count('delivered') > 0) return 'partial';
  return count('rejected') > 0 ? 'rejected' : 'invalid';
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
  const blocked = results.filter((r) => r.state === 'blocked');
  const metadata = finalMetadata({
    status: status as FinalVerdict['status'],
    at: ports.clock.now(),
    domain: ports.domain,
    envelopeRecipients: results.map((r) => r.recipient),
    invalid: results.filter((r) => r.state === 'invalid').map((r) => r.recipient),
    contentRejected: results
      .filter((r) => r.state === 'rejected')
      .map((r) => ({ recipient: r.recipient, detail: r.detail ?? String(r.code ?? '') })),
    ...(blocked.length > 0 &&
      !virusRejected && { blockedSender: blocked[0]?.detail ?? view.from?.address ?? receipt.source }),
    ...(virusRejected && { virus: receipt.verdicts.virus }),
    ...(receipt.invalidSource && { invalidSource: receipt.invalidSource.address }),
    failedEffects: effects.filter((e) => e.status === 'failed').map((e) => `${e.kind}:${e.target}`),
  });
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
    await ports.mailStore.updateMetadata(
      receipt.mail,
      failedMetadata(ports.clock.now(), ports.domain, `${error.code}: ${error.message}`),
    );
  } catch (metadataError) {
    ports.logger.error(
      { sesMessageId: receipt.sesMessageId, err: String(metadataError) },
      'could not record the failure in S3',
    );
  }
}

function tableFaultOf(awsCodes: ReadonlyArray<string | undefined>): Pick<MessageOutcome, 'tableFault'> {
  const code = awsCodes.find((c) => c !== undefined && TABLE_FAULTS.has(c));
  return code === undefined ? {} : { tableFault: code };
}

function asWorkerError(error: unknown): WorkerError {
  if (error instanceof WorkerError) return error;
  return new WorkerError(
    'INTERNAL',
    `unexpected: ${error instanceof Error ? error.message : String(error)}`,
    { temporary: true, cause: error },
  );
}
