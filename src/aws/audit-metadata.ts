/**
 * The S3 audit metadata: the worker's verdict on a stored mail, kept as the object's user metadata. This module is
 * the one list of its keys, the one writer of each kind of verdict (final, failed, given up) and the one reader;
 * the pipeline's audit stage, the poller's give-up and the operator commands (inject, replay, dlq) all use it.
 */

/** Every key of a verdict, in the order worth showing. A new verdict replaces all of them (see `keptMetadata`). */
export const AUDIT_KEYS = [
  'status',
  'processed',
  'processed_at',
  'processed_by',
  'envelope_recipients',
  'invalid_inboxes',
  'invalid_source',
  'content_rejected',
  'blocked_sender',
  'blocked_reason',
  'virus_verdict',
  'failed_effects',
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
}

export function finalMetadata(verdict: FinalVerdict): Record<string, string> {
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
  return {
    processed: String(processed),
    processed_at: String(Math.floor(at / 1000)),
    processed_by: `worker-${domain}`,
    status,
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

export function readVerdict(metadata: Readonly<Record<string, string>>): RecordedVerdict {
  const at = Number(metadata.processed_at);
  const generation = Number(metadata[REPLAY_GENERATION_KEY] ?? '0');
  return {
    processed: metadata.processed === 'true',
    gaveUp: metadata.processed === 'false' && metadata.status === 'failed',
    ...(metadata.status !== undefined && { status: metadata.status }),
    ...(metadata.processed_at !== undefined && Number.isFinite(at) && { processedAt: at }),
    ...(metadata.envelope_recipients !== undefined && {
      envelopeRecipients: decodeRecipients(metadata.envelope_recipients),
    }),
    replayGeneration: Number.isSafeInteger(generation) && generation > 0 ? generation : 0,
  };
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
export function encodeRecipients(addresses: readonly string[]): string {
  const encoded = addresses.map((a) => encodeURIComponent(a));
  let length = 0;
  for (let i = 0; i < encoded.length; i++) {
    const rest = encoded.length - i;
    const tail = i + 1 < encoded.length ? `,+${rest - 1}`.length : 0;
    if (length + (i > 0 ? 1 : 0) + encoded[i]!.length + tail > ENVELOPE_RECIPIENTS_CHARS) {
      return [...encoded.slice(0, i), `+${rest}`].join(',');
    }
    length += (i > 0 ? 1 : 0) + encoded[i]!.length;
  }
  return encoded.join(',');
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
