/**
 * The S3 audit metadata: the worker's verdict on a stored mail, kept as the object's user metadata. This module is
 * the one list of its keys, the one writer of each kind of verdict (final, failed, given up) and the one reader;
 * the pipeline's audit stage, the poller's give-up and the operator commands (inject, replay, dlq) all use it.
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
  'invalid_inboxes',
  'invalid_source',
  'content_rejected',
  'blocked_sender',
  'blocked_reason',
  'virus_verdict',
  'failed_effects',
  'suppressed_effects',
  'excess_recipients',
  'failure_reason',
] as const;

export type AuditKey = (typeof AUDIT_KEYS)[number];

/** Written by `unified-worker replay --force`, not by a verdict: kept when a new verdict replaces the old one. */
export const REPLAY_GENERATION_KEY = 'replay_generation';

/** Every status a verdict can hold. */
export const AUDIT_STATUSES = ['delivered', 'partial', 'invalid', 'rejected', 'blocked', 'failed'] as const;
export type AuditStatus = (typeof AUDIT_STATUSES)[number];

/** Characters of `envelope_recipients`: S3 allows 2 KB of user metadata in all, shared with the other keys. */
export const ENVELOPE_RECIPIENTS_CHARS = 400;
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
    ...(verdict.invalid.length > 0 && { invalid_inboxes: verdict.invalid.join(',') }),
    ...(verdict.invalidSource !== undefined && { invalid_source: verdict.invalidSource }),
    ...(verdict.contentRejected.length > 0 && {
      content_rejected: verdict.contentRejected.map((r) => `${r.recipient}: ${r.detail}`).join(' | '),
    }),
    ...(verdict.blockedSender !== undefined && { blocked_sender: verdict.blockedSender }),
    ...(verdict.virus !== undefined && { blocked_reason: 'virus', virus_verdict: verdict.virus }),
    ...(verdict.failedEffects.length > 0 && { failed_effects: verdict.failedEffects.join(',') }),
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
  replayGeneration: number;
}

/**
 * What the metadata says; with `domain`, what it says about that domain's verdict: on an object several domains
 * share, another domain's final verdict is not this one's. Metadata written before `domain_verdicts` existed counts
 * for the domain named in `processed_by` only.
 */
export function readVerdict(metadata: Readonly<Record<string, string>>, domain?: string): RecordedVerdict {
  const generation = Number(metadata[REPLAY_GENERATION_KEY] ?? '0');
  const replayGeneration = Number.isSafeInteger(generation) && generation > 0 ? generation : 0;
  if (domain === undefined) {
    const processed = metadata.processed === 'true';
    const gaveUp = metadata.processed === 'false' && metadata.status === 'failed';
    return { processed, gaveUp, ...details(metadata, metadata.status), replayGeneration };
  }
  const own = ownVerdict(metadata, domain);
  // Another domain's verdict on a shared object says nothing about this domain's mail.
  if (own === undefined) return { processed: false, gaveUp: false, replayGeneration };
  const gaveUp = own === 'gave-up';
  return { processed: !gaveUp, gaveUp, ...details(metadata, gaveUp ? 'failed' : own), replayGeneration };
}

function details(
  metadata: Readonly<Record<string, string>>,
  status: string | undefined,
): Pick<RecordedVerdict, 'status' | 'processedAt' | 'envelopeRecipients'> {
  const at = Number(metadata.processed_at);
  return {
    ...(status !== undefined && { status }),
    ...(metadata.processed_at !== undefined && Number.isFinite(at) && { processedAt: at }),
    ...(metadata.envelope_recipients !== undefined && {
      envelopeRecipients: decodeRecipients(metadata.envelope_recipients),
    }),
  };
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
  const audit = new Set<string>(AUDIT_KEYS);
  return Object.fromEntries(Object.entries(old).filter(([key]) => !audit.has(key.toLowerCase())));
}

/**
 * Each address percent-encoded (a quoted local part may hold a comma), joined by commas; when they do not all fit,
 * as many as fit and then `+N` for the N left out.
 */
export function encodeRecipients(addresses: readonly string[], maxChars = ENVELOPE_RECIPIENTS_CHARS): string {
  return fitList(
    addresses.map((a) => encodeURIComponent(a)),
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
