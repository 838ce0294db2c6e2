/**
 * The S3 audit metadata: the worker's verdict on a stored mail, kept as the object's user metadata. This module is
 * the one list of its keys, the one writer of each kind of verdict (final, failed, given up) and the one reader;
 * the pipeline's audit stage, the poller's give-up and the operator commands (inject, replay, dlq) all use it. The
 * operator commands' own marks (a forced replay's generation, a pending replay, a purged dead letter) are here too.
 *
 * One object can hold the mail of several domains (one receipt rule for two domains): each domain's poller writes
 * its own verdict. `domain_verdicts` keeps every domain's status side by side (merged on every write, see
 * `nextMetadata`), so a domain's "already processed" is its own, never another domain's; the other keys describe
 * the verdict written last.
 */

/** Every key of a verdict, in the order worth showing. A new verdict replaces all of them (see `keptMetadata`). */
export const AUDIT_KEYS = [
  'status',
  'processed',
  'processed_at',
  'processed_by',
  'domain_verdicts',
  'envelope_recipients',
  'delivered_to',
  'sent_effects',
  'invalid_inboxes',
  'invalid_source',
  'content_rejected',
  'blocked_sender',
  'blocked_reason',
  'virus_verdict',
  'failed_effects',
  'rule_limits',
  'suppressed_effects',
  'excess_recipients',
  'failure_reason',
] as const;

export type AuditKey = (typeof AUDIT_KEYS)[number];

/** Written by `unified-worker replay --force`, not by a verdict: kept when a new verdict replaces the old one. */
export const REPLAY_GENERATION_KEY = 'replay_generation';

/**
 * Written by `unified-worker replay --wait` before it enqueues: the request time (epoch seconds). Any verdict
 * removes it (like the verdict's own keys), so its absence tells the waiting command that the replay was decided.
 */
export const REPLAY_PENDING_KEY = 'replay_pending';

/** Written by `unified-worker dlq purge` on the mail of a removed dead letter; kept by later verdicts (history). */
export const DLQ_PURGED_AT_KEY = 'dlq_purged_at';
export const DLQ_PURGE_REASON_KEY = 'dlq_purge_reason';

/** Every status a verdict can hold. */
export const AUDIT_STATUSES = ['delivered', 'partial', 'invalid', 'rejected', 'blocked', 'failed'] as const;
export type AuditStatus = (typeof AUDIT_STATUSES)[number];

/** Characters of `envelope_recipients`: S3 allows 2 KB of user metadata in all, shared with the other keys. */
export const ENVELOPE_RECIPIENTS_CHARS = 400;
/** Characters of `delivered_to` (partial mail only) and of `sent_effects`, from the same 2 KB. */
export const DELIVERED_TO_CHARS = 300;
export const SENT_EFFECTS_CHARS = 300;
/** `sent_effects` when nothing went out (an item is `kind:target`, encoded `kind%3Atarget`: never this word). */
const NO_EFFECTS = 'none';
/** Characters of `suppressed_effects` and of `excess_recipients`, for the same reason. */
export const SUPPRESSED_EFFECTS_CHARS = 300;
export const EXCESS_RECIPIENTS_CHARS = 200;
/** Characters of `domain_verdicts`: about 15 domains of 25 characters; the oldest entries give way first. */
export const DOMAIN_VERDICTS_CHARS = 500;

/** A domain's entry in `domain_verdicts`: a final status, or `gave-up` (retries ended, not processed). */
export type DomainVerdict = AuditStatus | 'gave-up';

/** A verdict once every recipient of the domain is final. */
export interface FinalVerdict {
  status: Exclude<AuditStatus, 'failed'>;
  /** Epoch ms. */
  at: number;
  domain: string;
  /** The domain's envelope recipients of the mail, as SES gave them (what replay sends to again). */
  envelopeRecipients: readonly string[];
  invalid: readonly string[];
  /** Recipients whose mail server refused the content, with its reply. */
  contentRejected: ReadonlyArray<{ recipient: string; detail: string }>;
  /** The sender a recipient's blocklist matched. */
  blockedSender?: string;
  /** Every recipient blocked because of SES's virus verdict (VIRUS_POLICY=reject). */
  virus?: string;
  /** The envelope sender the notification gave, when it was unusable and the null sender was used instead. */
  invalidSource?: string;
  /** Forwards and auto-replies that failed for good, as `kind:target`. */
  failedEffects: readonly string[];
  /**
   * Recipients whose rules or blocklist held more than the bounds allow (MAIL_LIMITS: too many forward targets, an
   * unusable one, an over-long message or pattern): that part was skipped or cut, the mail handled with the rest.
   */
  ruleLimits?: ReadonlyArray<{ recipient: string; limits: readonly string[] }>;
  /**
   * The recipients whose copy was delivered (this attempt or an earlier one). Recorded only for `partial`: for
   * `delivered` it is every envelope recipient, for the other statuses nobody.
   */
  delivered?: readonly string[];
  /** Forwards and auto-replies that went out (this attempt or an earlier one), as `kind:target`. */
  sentEffects?: readonly string[];
  /** Forwards and auto-replies that a rule said no to, and why. */
  suppressedEffects?: ReadonlyArray<{ kind: string; recipient: string; reason: string }>;
  /** The domain's envelope recipients past the bound of one notification (MAIL_LIMITS.recipients): not handled. */
  excessRecipients?: readonly string[];
}

export function finalMetadata(verdict: FinalVerdict): Record<string, string> {
  const suppressed = verdict.suppressedEffects ?? [];
  const excess = verdict.excessRecipients ?? [];
  return {
    ...stamp(true, verdict.at, verdict.domain, verdict.status),
    envelope_recipients: encodeRecipients(verdict.envelopeRecipients),
    ...(verdict.status === 'partial' &&
      verdict.delivered !== undefined && { delivered_to: encodeList(verdict.delivered, DELIVERED_TO_CHARS) }),
    ...(verdict.sentEffects !== undefined && {
      sent_effects:
        verdict.sentEffects.length === 0 ? NO_EFFECTS : encodeList(verdict.sentEffects, SENT_EFFECTS_CHARS),
    }),
    ...(verdict.invalid.length > 0 && { invalid_inboxes: verdict.invalid.join(',') }),
    ...(verdict.invalidSource !== undefined && { invalid_source: verdict.invalidSource }),
    ...(verdict.contentRejected.length > 0 && {
      content_rejected: verdict.contentRejected.map((r) => `${r.recipient}: ${r.detail}`).join(' | '),
    }),
    ...(verdict.blockedSender !== undefined && { blocked_sender: verdict.blockedSender }),
    ...(verdict.virus !== undefined && { blocked_reason: 'virus', virus_verdict: verdict.virus }),
    ...(verdict.failedEffects.length > 0 && { failed_effects: verdict.failedEffects.join(',') }),
    ...(verdict.ruleLimits !== undefined &&
      verdict.ruleLimits.length > 0 && {
        rule_limits: verdict.ruleLimits.map((r) => `${r.recipient}: ${r.limits.join(',')}`).join(' | '),
      }),
    ...(suppressed.length > 0 && {
      suppressed_effects: fitList(
        [...new Set(suppressed.map((e) => `${e.kind}:${e.recipient}:${e.reason}`))],
        SUPPRESSED_EFFECTS_CHARS,
      ),
    }),
    ...(excess.length > 0 && { excess_recipients: encodeRecipients(excess, EXCESS_RECIPIENTS_CHARS) }),
  };
}

/**
 * The mail ended without delivery for a reason about the mail itself (over MAX_MAIL_BYTES): final, so `processed`
 * is true and a redelivered notification is not tried again.
 */
export function failedMetadata(at: number, domain: string, reason: string): Record<string, string> {
  return { ...stamp(true, at, domain, 'failed'), failure_reason: reason };
}

/**
 * The worker gave up retrying (MAX_RECEIVES): `processed` stays false, since a replay or redrive may still deliver
 * it. Written once; `readVerdict(...).gaveUp` tells a later receive that it was.
 */
export function gaveUpMetadata(at: number, domain: string, reason: string): Record<string, string> {
  return { ...stamp(false, at, domain, 'failed'), failure_reason: reason };
}

/** `unified-worker dlq purge` removed the mail's dead letter: when, and why it could not be redriven. */
export function purgedMetadata(at: number, reason: string): Record<string, string> {
  return { [DLQ_PURGED_AT_KEY]: String(Math.floor(at / 1000)), [DLQ_PURGE_REASON_KEY]: reason };
}

/** `unified-worker replay --wait` enqueued a replay at `at` (epoch ms) and waits for the verdict that removes this. */
export function replayPendingMetadata(at: number): Record<string, string> {
  return { [REPLAY_PENDING_KEY]: String(Math.floor(at / 1000)) };
}

function stamp(processed: boolean, at: number, domain: string, status: AuditStatus): Record<string, string> {
  const own: DomainVerdict = processed ? status : 'gave-up';
  return {
    processed: String(processed),
    processed_at: String(Math.floor(at / 1000)),
    processed_by: `worker-${domain}`,
    status,
    domain_verdicts: `${domain}=${own}`,
  };
}

/** What the metadata of a stored mail says, read back. */
export interface RecordedVerdict {
  /** A final verdict: a notification for this mail again is a redelivery. */
  processed: boolean;
  /** The worker gave up retrying it (status failed, processed false). */
  gaveUp: boolean;
  status?: string;
  /** Epoch seconds. */
  processedAt?: number;
  /** The envelope recipients, and whether the list is whole (it is cut when it does not fit). */
  envelopeRecipients?: { addresses: string[]; complete: boolean };
  /**
   * Who got a copy: recorded for partial mail, known from the status otherwise (every envelope recipient when
   * delivered, nobody when invalid, rejected or blocked); undefined when not known.
   */
  deliveredTo?: { addresses: string[]; complete: boolean };
  /** Forwards and auto-replies that went out, as `kind:target`; undefined when not recorded. */
  sentEffects?: { items: string[]; complete: boolean };
  failedEffects: string[];
  /** Recipients the mail server refused at RCPT (or unusable addresses). */
  invalid: string[];
  /** Recipients whose copy the mail server refused after the content, with its reply. */
  contentRejected: Array<{ recipient: string; detail: string }>;
  blockedSender?: string;
  failureReason?: string;
  replayGeneration: number;
  /** Epoch seconds of a `replay --wait` no verdict has answered yet. */
  replayPending?: number;
}

/**
 * What the metadata says; with `domain`, what it says about that domain's verdict: on an object several domains
 * share, another domain's final verdict is not this one's. Metadata written before `domain_verdicts` existed counts
 * for the domain named in `processed_by` only.
 */
export function readVerdict(metadata: Readonly<Record<string, string>>, domain?: string): RecordedVerdict {
  const generation = Number(metadata[REPLAY_GENERATION_KEY] ?? '0');
  const pending = Number(metadata[REPLAY_PENDING_KEY]);
  const replay = {
    replayGeneration: Number.isSafeInteger(generation) && generation > 0 ? generation : 0,
    ...(metadata[REPLAY_PENDING_KEY] !== undefined && Number.isFinite(pending) && { replayPending: pending }),
  };
  if (domain === undefined) {
    const processed = metadata.processed === 'true';
    const gaveUp = metadata.processed === 'false' && metadata.status === 'failed';
    return { processed, gaveUp, ...details(metadata, processed, metadata.status), ...replay };
  }
  const own = ownVerdict(metadata, domain);
  // Another domain's verdict on a shared object says nothing about this domain's mail.
  if (own === undefined) return { processed: false, gaveUp: false, ...NO_DETAILS, ...replay };
  const gaveUp = own === 'gave-up';
  const status = gaveUp ? 'failed' : own;
  // The flat keys describe the verdict written last: this domain's details only when it wrote them.
  const wroteLast = metadata.processed_by === `worker-${domain}`;
  return {
    processed: !gaveUp,
    gaveUp,
    ...(wroteLast ? details(metadata, !gaveUp, status) : { ...NO_DETAILS, status }),
    ...replay,
  };
}

type VerdictDetails = Omit<RecordedVerdict, 'processed' | 'gaveUp' | 'replayGeneration' | 'replayPending'>;

const NO_DETAILS: VerdictDetails = { failedEffects: [], invalid: [], contentRejected: [] };

function details(
  metadata: Readonly<Record<string, string>>,
  processed: boolean,
  status: string | undefined,
): VerdictDetails {
  const at = Number(metadata.processed_at);
  const envelopeRecipients =
    metadata.envelope_recipients === undefined ? undefined : decodeRecipients(metadata.envelope_recipients);
  const deliveredTo = deliveredOf(metadata, processed, status, envelopeRecipients);
  return {
    ...(status !== undefined && { status }),
    ...(metadata.processed_at !== undefined && Number.isFinite(at) && { processedAt: at }),
    ...(envelopeRecipients && { envelopeRecipients }),
    ...(deliveredTo && { deliveredTo }),
    ...(metadata.sent_effects !== undefined && { sentEffects: effectsOf(metadata.sent_effects) }),
    failedEffects: splitList(metadata.failed_effects),
    invalid: splitList(metadata.invalid_inboxes),
    contentRejected: (metadata.content_rejected ?? '')
      .split(' | ')
      .filter((entry) => entry !== '')
      .map((entry) => {
        const colon = entry.indexOf(': ');
        return colon < 0
          ? { recipient: entry, detail: '' }
          : { recipient: entry.slice(0, colon), detail: entry.slice(colon + 2) };
      }),
    ...(metadata.blocked_sender !== undefined && { blockedSender: metadata.blocked_sender }),
    ...(metadata.failure_reason !== undefined && { failureReason: metadata.failure_reason }),
  };
}

function deliveredOf(
  metadata: Readonly<Record<string, string>>,
  processed: boolean,
  status: string | undefined,
  envelope: { addresses: string[]; complete: boolean } | undefined,
): { addresses: string[]; complete: boolean } | undefined {
  if (metadata.delivered_to !== undefined) return decodeRecipients(metadata.delivered_to);
  if (!processed) return undefined;
  if (status === 'delivered') return envelope;
  const nobody = ['invalid', 'rejected', 'blocked', 'failed'];
  return status !== undefined && nobody.includes(status) ? { addresses: [], complete: true } : undefined;
}

function effectsOf(value: string): { items: string[]; complete: boolean } {
  if (value === NO_EFFECTS) return { items: [], complete: true };
  const list = decodeRecipients(value);
  return { items: list.addresses, complete: list.complete };
}

function splitList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** This domain's verdict: its `domain_verdicts` entry, or (older metadata) the flat keys when it wrote them. */
function ownVerdict(metadata: Readonly<Record<string, string>>, domain: string): DomainVerdict | undefined {
  if (metadata.domain_verdicts !== undefined)
    return parseDomainVerdicts(metadata.domain_verdicts).get(domain);
  if (metadata.processed_by !== `worker-${domain}` || metadata.status === undefined) return undefined;
  if (metadata.processed === 'true') return metadata.status as AuditStatus;
  return metadata.processed === 'false' && metadata.status === 'failed' ? 'gave-up' : undefined;
}

/** Every domain's verdict recorded on the object. */
export function domainVerdicts(metadata: Readonly<Record<string, string>>): Map<string, DomainVerdict> {
  if (metadata.domain_verdicts !== undefined) return parseDomainVerdicts(metadata.domain_verdicts);
  const domain = metadata.processed_by?.startsWith('worker-') ? metadata.processed_by.slice(7) : undefined;
  const own = domain === undefined ? undefined : ownVerdict(metadata, domain);
  return domain === undefined || own === undefined ? new Map() : new Map([[domain, own]]);
}

const DOMAIN_VERDICT_VALUES: ReadonlySet<string> = new Set([...AUDIT_STATUSES, 'gave-up']);

function parseDomainVerdicts(value: string): Map<string, DomainVerdict> {
  const out = new Map<string, DomainVerdict>();
  for (const entry of value.split(',')) {
    const eq = entry.lastIndexOf('=');
    const verdict = entry.slice(eq + 1);
    if (eq > 0 && DOMAIN_VERDICT_VALUES.has(verdict)) out.set(entry.slice(0, eq), verdict as DomainVerdict);
  }
  return out;
}

/** The entries as `domain=verdict`, the newest last; the oldest give way when they do not all fit. */
function serializeDomainVerdicts(verdicts: ReadonlyMap<string, DomainVerdict>): string {
  const entries = [...verdicts].map(([domain, verdict]) => `${domain}=${verdict}`);
  while (entries.length > 1 && entries.join(',').length > DOMAIN_VERDICTS_CHARS) entries.shift();
  return entries.join(',');
}

/**
 * The metadata an update leaves on the object: the update, `domain_verdicts` merged with the old entries (the
 * updating domain's entry replaced, the others kept), and the old keys `keptMetadata` keeps. The small keys that
 * must never be cut come first: S3 allows 2 KB in all and the writer cuts what comes last.
 */
export function nextMetadata(
  old: Readonly<Record<string, string>> | undefined,
  update: Readonly<Record<string, string>>,
): Record<string, string> {
  const merged: Record<string, string> = { ...update };
  if (update.domain_verdicts !== undefined) {
    const verdicts = old ? domainVerdicts(old) : new Map<string, DomainVerdict>();
    for (const [domain, verdict] of parseDomainVerdicts(update.domain_verdicts)) {
      verdicts.delete(domain);
      verdicts.set(domain, verdict);
    }
    merged.domain_verdicts = serializeDomainVerdicts(verdicts);
  }
  const all: Record<string, string> = { ...keptMetadata(old, update), ...merged };
  const first = [
    'status',
    'processed',
    'processed_at',
    'processed_by',
    'domain_verdicts',
    REPLAY_GENERATION_KEY,
  ];
  const ordered: Record<string, string> = {};
  for (const key of first) if (all[key] !== undefined) ordered[key] = all[key];
  for (const [key, value] of Object.entries(all)) if (!(key in ordered)) ordered[key] = value;
  return ordered;
}

/**
 * The metadata that survives a new verdict: a verdict (it has a `status`) replaces the old one whole, so a replayed
 * mail now delivered does not keep the `invalid_inboxes` or `failure_reason` of its first try; other keys (SES's,
 * `replay_generation`) stay. An update without a status is merged into everything.
 */
export function keptMetadata(
  old: Readonly<Record<string, string>> | undefined,
  update: Readonly<Record<string, string>>,
): Record<string, string> {
  if (!old || update.status === undefined) return { ...old };
  const audit = new Set<string>([...AUDIT_KEYS, REPLAY_PENDING_KEY]);
  return Object.fromEntries(Object.entries(old).filter(([key]) => !audit.has(key.toLowerCase())));
}

/**
 * Each address percent-encoded (a quoted local part may hold a comma), joined by commas; when they do not all fit,
 * as many as fit and then `+N` for the N left out.
 */
export function encodeRecipients(addresses: readonly string[], maxChars = ENVELOPE_RECIPIENTS_CHARS): string {
  return encodeList(addresses, maxChars);
}

/** `encodeRecipients` for any list of items. */
export function encodeList(items: readonly string[], maxChars: number): string {
  return fitList(
    items.map((item) => encodeURIComponent(item)),
    maxChars,
  );
}

/** Entries joined by commas within `maxChars`: as many as fit, then `+N` for the N left out. */
function fitList(entries: readonly string[], maxChars: number): string {
  let length = 0;
  for (let i = 0; i < entries.length; i++) {
    const rest = entries.length - i;
    const tail = i + 1 < entries.length ? `,+${rest - 1}`.length : 0;
    if (length + (i > 0 ? 1 : 0) + entries[i]!.length + tail > maxChars) {
      return [...entries.slice(0, i), `+${rest}`].join(',');
    }
    length += (i > 0 ? 1 : 0) + entries[i]!.length;
  }
  return entries.join(',');
}

function decodeRecipients(value: string): { addresses: string[]; complete: boolean } {
  const parts = value.split(',').filter((p) => p !== '');
  const complete = !parts.some((p) => p.startsWith('+'));
  const addresses = parts
    .filter((p) => !p.startsWith('+'))
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  return { addresses, complete };
}
