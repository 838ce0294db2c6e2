/**
 * Stage 1: turn an SQS body into a typed SES receipt. Three shapes reach a queue: an SNS envelope around the SES
 * notification, the bare notification (SNS raw message delivery), and a notification whose SES action is SNS
 * with the mail inline in `content`. Anything else is reported, never thrown. Every field that later shapes an
 * SMTP command or an AWS call is checked here: envelope addresses (RFC 5321), bucket and key, and, when the
 * deployment confines them, the topic and bucket the notification names.
 */
import type { QueueMessage } from '../aws/queue.ts';
import { BUCKET_RE } from '../aws/resources.ts';
import { domainOf, envelopeAddressProblem, normalizeEnvelopeAddress } from '../mail/envelope-address.ts';
import { MAIL_LIMITS } from '../mail/mail-limits.ts';
import type { MessageOutcome } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

export type VerdictStatus = 'PASS' | 'FAIL' | 'GRAY' | 'PROCESSING_FAILED' | 'DISABLED' | 'UNKNOWN';

export interface SesVerdicts {
  spam: VerdictStatus;
  virus: VerdictStatus;
  spf: VerdictStatus;
  dkim: VerdictStatus;
  dmarc: VerdictStatus;
}

export type MailSource = { kind: 's3'; bucket: string; key: string } | { kind: 'inline'; data: Buffer };

/** An envelope address from the notification that cannot be used, and why. */
export interface UnusableAddress {
  /** As the notification gave it (trimmed, lower-cased for recipients), at most 320 characters. */
  address: string;
  reason: string;
}

export interface SesReceipt {
  sesMessageId: string;
  /** Envelope sender (MAIL FROM); '' for a null sender, and for an unusable one (see `invalidSource`). */
  source: string;
  /** Envelope recipients SES accepted (`receipt.recipients`), lower-cased, each a usable RFC 5321 mailbox. */
  recipients: string[];
  /** Recipients that are not usable mailboxes: a final verdict (`invalid`) for each, never an SMTP command. */
  invalidRecipients: UnusableAddress[];
  /** The notification's `mail.source` when it was not a usable mailbox; the mail goes on with the null sender. */
  invalidSource?: UnusableAddress;
  timestamp: string;
  verdicts: SesVerdicts;
  mail: MailSource;
}

export type ParsedBody =
  { kind: 'receipt'; receipt: SesReceipt } | { kind: 'setup' } | { kind: 'invalid'; reason: string };

/**
 * Where a domain's notifications may come from (config.ts, notificationSourcesFor): the topics of ALLOWED_TOPIC_ARNS,
 * and the domain's own bucket (BUCKET_NAME_TEMPLATE) plus those of ALLOWED_MAIL_BUCKETS; an empty list allows any
 * (ALLOWED_MAIL_BUCKETS=`*` gives an empty bucket list). A notification from elsewhere is `invalid`: left for the
 * dead-letter queue, never deleted, so a wrong allowlist cannot lose mail.
 */
export interface NotificationSources {
  topicArns: readonly string[];
  buckets: readonly string[];
}

const VERDICTS: readonly VerdictStatus[] = ['PASS', 'FAIL', 'GRAY', 'PROCESSING_FAILED', 'DISABLED'];
/** S3 object keys are at most 1024 bytes of UTF-8. */
const MAX_KEY_BYTES = 1024;

export function parseSqsBody(body: string | undefined, sources?: NotificationSources): ParsedBody {
  try {
    return parseBody(body, sources);
  } catch (error) {
    // Nothing in a notification may throw out of stage 1 (an escaped error would end the poller thread).
    return invalid(`notification could not be read (${error instanceof Error ? error.message : 'error'})`);
  }
}

function parseBody(body: string | undefined, sources: NotificationSources | undefined): ParsedBody {
  if (body === undefined || body.trim() === '') return invalid('empty body');
  let outer: unknown;
  try {
    outer = JSON.parse(body);
  } catch (error) {
    return invalid(`body is not JSON (${error instanceof Error ? error.message : 'parse error'})`);
  }
  if (!isRecord(outer)) return invalid('body is not a JSON object');

  let notification: unknown = outer;
  if (outer.Type !== undefined) {
    if (outer.Type !== 'Notification')
      return invalid(`SNS message of type ${describe(outer.Type)} is not a notification`);
    if (typeof outer.Message !== 'string') return invalid('SNS envelope has no Message string');
    // SES validates an SNS topic with a plain-text message when it is first attached to an event destination.
    if (outer.Message.startsWith('Successfully validated SNS topic')) return { kind: 'setup' };
    try {
      notification = JSON.parse(outer.Message);
    } catch {
      return invalid('SNS Message is not JSON');
    }
  }
  if (!isRecord(notification)) return invalid('notification is not a JSON object');
  const mail = notification.mail;
  if (
    notification.notificationType === 'AMAZON_SES_SETUP_NOTIFICATION' ||
    notification.eventType === 'Setup' ||
    (isRecord(mail) && mail.messageId === 'AMAZON_SES_SETUP_NOTIFICATION')
  ) {
    return { kind: 'setup' };
  }
  if (notification.notificationType !== 'Received') {
    return invalid(
      `not an SES receipt notification (notificationType=${quoted(notification.notificationType)})`,
    );
  }
  const parsed = parseReceived(notification);
  if (parsed.kind !== 'receipt' || !sources) return parsed;
  const refused = refusedSource(parsed.receipt, topicArnsOf(outer, notification), sources);
  return refused === undefined ? parsed : invalid(refused);
}

/**
 * The topics a notification names: the SNS envelope's TopicArn (set by SNS) and the SES action's topicArn. With raw
 * message delivery there is no envelope, so only the action's topicArn is there to check.
 */
function topicArnsOf(outer: Record<string, unknown>, notification: Record<string, unknown>): string[] {
  const arns: string[] = [];
  if (outer !== notification && typeof outer.TopicArn === 'string') arns.push(outer.TopicArn);
  const receipt = notification.receipt;
  if (isRecord(receipt) && isRecord(receipt.action) && typeof receipt.action.topicArn === 'string')
    arns.push(receipt.action.topicArn);
  return [...new Set(arns)];
}

function refusedSource(
  receipt: SesReceipt,
  topicArns: string[],
  sources: NotificationSources,
): string | undefined {
  if (sources.topicArns.length > 0) {
    if (topicArns.length === 0) return 'notification names no SNS topic to check against ALLOWED_TOPIC_ARNS';
    const foreign = topicArns.find((arn) => !sources.topicArns.includes(arn));
    if (foreign !== undefined) return `SNS topic ${describe(foreign)} is not in ALLOWED_TOPIC_ARNS`;
  }
  if (
    sources.buckets.length > 0 &&
    receipt.mail.kind === 's3' &&
    !sources.buckets.includes(receipt.mail.bucket)
  )
    return (
      `S3 bucket ${describe(receipt.mail.bucket)} is not this domain's (BUCKET_NAME_TEMPLATE) nor in ` +
      'ALLOWED_MAIL_BUCKETS'
    );
  return undefined;
}

function parseReceived(n: Record<string, unknown>): ParsedBody {
  const mail = n.mail;
  const receipt = n.receipt;
  if (!isRecord(mail)) return invalid('notification has no mail object');
  if (!isRecord(receipt)) return invalid('notification has no receipt object');
  if (typeof mail.messageId !== 'string' || mail.messageId === '') return invalid('mail.messageId missing');
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(mail.messageId))
    return invalid('mail.messageId has unexpected characters');
  const recipients = receipt.recipients;
  if (!Array.isArray(recipients) || !recipients.every((r) => typeof r === 'string')) {
    return invalid('receipt.recipients is not a list of addresses');
  }
  const action = receipt.action;
  if (!isRecord(action)) return invalid('receipt.action missing');

  let source: MailSource;
  if (typeof n.content === 'string') {
    const encoding = typeof action.encoding === 'string' ? action.encoding.toUpperCase() : 'UTF8';
    source = { kind: 'inline', data: Buffer.from(n.content, encoding === 'BASE64' ? 'base64' : 'utf8') };
  } else if (action.type === 'S3') {
    if (typeof action.bucketName !== 'string' || action.bucketName === '')
      return invalid('action.bucketName missing');
    if (!BUCKET_RE.test(action.bucketName)) return invalid('action.bucketName is not an S3 bucket name');
    if (typeof action.objectKey !== 'string' || action.objectKey === '')
      return invalid('action.objectKey missing');
    if (Buffer.byteLength(action.objectKey, 'utf8') > MAX_KEY_BYTES || /\p{Cc}/u.test(action.objectKey))
      return invalid('action.objectKey is over 1024 bytes or contains control characters');
    source = { kind: 's3', bucket: action.bucketName, key: action.objectKey };
  } else {
    return invalid(`receipt action ${quoted(action.type)} carries no mail (no S3 object, no content)`);
  }

  const addresses = (recipients as string[])
    .map((r) => normalizeEnvelopeAddress(r.trim().toLowerCase()))
    .filter((r) => r !== '');
  const invalidRecipients = addresses
    .map((address) => ({ address, problem: envelopeAddressProblem(address) }))
    .filter((r): r is { address: string; problem: string } => r.problem !== undefined)
    .map((r) => unusable(r.address, r.problem));
  const envelopeSource = senderOf(mail.source);
  return {
    kind: 'receipt',
    receipt: {
      sesMessageId: mail.messageId,
      source: envelopeSource.source,
      recipients: addresses.filter((address) => envelopeAddressProblem(address) === undefined),
      invalidRecipients,
      ...(envelopeSource.invalid && { invalidSource: envelopeSource.invalid }),
      timestamp: typeof mail.timestamp === 'string' && mail.timestamp.length <= 64 ? mail.timestamp : '',
      verdicts: {
        spam: verdict(receipt.spamVerdict),
        virus: verdict(receipt.virusVerdict),
        spf: verdict(receipt.spfVerdict),
        dkim: verdict(receipt.dkimVerdict),
        dmarc: verdict(receipt.dmarcVerdict),
      },
      mail: source,
    },
  };
}

/** `<>` and '' are the null sender; an unusable sender becomes it too, so the mail is still delivered. */
function senderOf(value: unknown): { source: string; invalid?: UnusableAddress } {
  if (typeof value !== 'string') return { source: '' };
  const source = normalizeEnvelopeAddress(value.trim());
  if (source === '' || source === '<>') return { source: '' };
  const problem = envelopeAddressProblem(source);
  return problem === undefined ? { source } : { source: '', invalid: unusable(source, problem) };
}

function unusable(address: string, reason: string): UnusableAddress {
  return { address: address.length > 320 ? `${address.slice(0, 320)}…` : address, reason };
}

/**
 * A value from the notification, short enough for a log line. Never JSON.stringify: a value nested 100,000 deep
 * (JSON.parse takes it) would overflow the stack.
 */
function describe(value: unknown): string {
  if (typeof value === 'string') return value.length > 200 ? `${value.slice(0, 200)}…` : value;
  if (typeof value === 'object' && value !== null)
    return Array.isArray(value) ? 'a JSON array' : 'a JSON object';
  return String(value);
}

function quoted(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(describe(value)) : describe(value);
}

function verdict(value: unknown): VerdictStatus {
  if (isRecord(value) && typeof value.status === 'string') {
    const status = value.status.toUpperCase() as VerdictStatus;
    if (VERDICTS.includes(status)) return status;
  }
  return 'UNKNOWN';
}

function invalid(reason: string): ParsedBody {
  return { kind: 'invalid', reason: reason.length > 500 ? `${reason.slice(0, 500)}…` : reason };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The receipt's unusable recipients that belong to `domain` (final `invalid` verdicts for its poller). */
export function unusableRecipientsOf(receipt: SesReceipt, domain: string): UnusableAddress[] {
  const seen = new Set<string>();
  return receipt.invalidRecipients.filter(
    (r) => domainOf(r.address) === domain && !seen.has(r.address) && seen.add(r.address),
  );
}

/**
 * This domain's usable envelope recipients, each once: the first MAIL_LIMITS.recipients are handled, the rest (only
 * a forged notification has them) are recorded as `excess`, never silently dropped.
 */
export function recipientsOf(receipt: SesReceipt, domain: string): { handled: string[]; excess: string[] } {
  const all = [...new Set(receipt.recipients.filter((r) => domainOf(r) === domain))];
  return { handled: all.slice(0, MAIL_LIMITS.recipients), excess: all.slice(MAIL_LIMITS.recipients) };
}

/** A notification of mail for this domain: what the later stages work on. */
export interface NotifiedMail {
  message: QueueMessage;
  receipt: SesReceipt;
  /** This domain's usable envelope recipients, each once, at most MAIL_LIMITS.recipients (see recipientsOf). */
  recipients: string[];
  /** Envelope recipients of other domains: another poller's business. */
  ignoredRecipients: string[];
}

/** Either mail to work on, or an outcome already (malformed, SES's setup message, nothing for this domain). */
export type NotificationResult =
  { kind: 'mail'; mail: NotifiedMail } | { kind: 'settled'; outcome: MessageOutcome };

/** Stage 1: the SQS body read, checked and narrowed to this domain's recipients. */
export function readNotification(message: QueueMessage, ports: PipelinePorts): NotificationResult {
  const base = emptyOutcome(message.messageId);
  const parsed = parseSqsBody(message.body, ports.options.notificationSources);
  if (parsed.kind === 'invalid')
    return { kind: 'settled', outcome: { ...base, status: 'malformed', reason: parsed.reason } };
  if (parsed.kind === 'setup') return { kind: 'settled', outcome: { ...base, status: 'setup' } };
  const { receipt } = parsed;
  const unusable = receipt.invalidRecipients.map((r) => r.address);
  const ignoredRecipients = [...receipt.recipients, ...unusable].filter((r) => domainOf(r) !== ports.domain);
  const { handled: recipients, excess } = recipientsOf(receipt, ports.domain);
  warnAbout(message, receipt, ignoredRecipients, ports);
  if (excess.length > 0)
    ports.logger.warn(
      { sesMessageId: receipt.sesMessageId, handled: recipients.length, excess: excess.length },
      `notification names more than ${MAIL_LIMITS.recipients} recipients of this domain (SES never does): the rest ` +
        'are recorded in excess_recipients, not delivered',
    );
  if (recipients.length === 0 && unusableRecipientsOf(receipt, ports.domain).length === 0) {
    const outcome = { ...base, sesMessageId: receipt.sesMessageId, ignoredRecipients };
    return { kind: 'settled', outcome: { ...outcome, status: 'wrong-domain' } };
  }
  return { kind: 'mail', mail: { message, receipt, recipients, ignoredRecipients } };
}

/** The outcome of a message about which nothing is known yet. */
export function emptyOutcome(sqsMessageId: string): Omit<MessageOutcome, 'status'> {
  return {
    sqsMessageId,
    recipients: [],
    effects: [],
    ignoredRecipients: [],
    bounceRewritten: false,
    loopMarker: false,
  };
}

function warnAbout(
  message: QueueMessage,
  receipt: SesReceipt,
  ignored: readonly string[],
  ports: PipelinePorts,
): void {
  const { sesMessageId } = receipt;
  if (ignored.length > 0) {
    ports.logger.warn(
      { sesMessageId, ignored: ignored.map(ports.redact) },
      'Security: ignored message for wrong domain',
    );
  }
  if (receipt.invalidSource)
    ports.logger.warn(
      { sesMessageId, source: receipt.invalidSource },
      'unusable envelope sender: delivering with the null sender',
    );
  if (message.replay?.invalidGeneration !== undefined) {
    ports.logger.warn(
      { sesMessageId, generation: message.replay.invalidGeneration },
      'replay generation is not an integer >= 1; replaying as generation 0 (the ledger skips what was done)',
    );
  }
}
