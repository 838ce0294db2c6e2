/**
 * What SES puts on a domain's queue, built the way SES and SNS build it: the "Received" notification
 * (https://docs.aws.amazon.com/ses/latest/dg/receiving-email-notifications-contents.html) for an S3 action (mail
 * in S3) or an SNS action (mail inline, base64), and the SNS envelope around it
 * (https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html) that an SQS subscription without
 * raw message delivery receives. `inject` and `replay` enqueue these; the tests build their mail with them too.
 */
import { randomBytes, randomUUID } from 'node:crypto';

import addressparser, { type Address } from 'nodemailer/lib/addressparser/index.js';

/** Placeholder account of the topic ARN when the caller names none (the daemon never reads the ARN). */
export const DEFAULT_ACCOUNT_ID = '123456789012';
/** Default topic the receipt rule publishes to. */
export const DEFAULT_TOPIC_ARN = `arn:aws:sns:us-east-1:${DEFAULT_ACCOUNT_ID}:ses-inbound`;

// ---------------------------------------------------------------------------------------------------------------------
// Types of the SES notification
// ---------------------------------------------------------------------------------------------------------------------

/** Verdict status values SES uses in `receipt.*Verdict.status`. */
export type SesVerdictStatus = 'PASS' | 'FAIL' | 'GRAY' | 'PROCESSING_FAILED' | 'DISABLED';

/** `mail.headers` entry: SES lists every header in order, with folded lines unfolded. */
export interface SesHeader {
  name: string;
  value: string;
}

/** `mail.commonHeaders`: only the fields present in the message appear. */
export interface SesCommonHeaders {
  returnPath?: string;
  from?: string[];
  sender?: string;
  replyTo?: string[];
  date?: string;
  to?: string[];
  cc?: string[];
  bcc?: string[];
  messageId?: string;
  subject?: string;
}

/** `receipt.action` of an S3 action. */
export interface SesS3Action {
  type: 'S3';
  topicArn: string;
  bucketName: string;
  objectKeyPrefix: string;
  objectKey: string;
}

/** `receipt.action` of an SNS action; the mail itself is in the top-level `content`. */
export interface SesSnsAction {
  type: 'SNS';
  topicArn: string;
  encoding: 'BASE64' | 'UTF8';
}

/** The SES "Received" notification (the SNS `Message`). */
export interface SesReceivedNotification {
  notificationType: 'Received';
  mail: {
    timestamp: string;
    source: string;
    messageId: string;
    destination: string[];
    headersTruncated: boolean;
    headers: SesHeader[];
    commonHeaders: SesCommonHeaders;
  };
  receipt: {
    timestamp: string;
    processingTimeMillis: number;
    recipients: string[];
    spamVerdict: { status: SesVerdictStatus };
    virusVerdict: { status: SesVerdictStatus };
    spfVerdict: { status: SesVerdictStatus };
    dkimVerdict: { status: SesVerdictStatus };
    dmarcVerdict: { status: SesVerdictStatus };
    /** Only present when DMARC failed. */
    dmarcPolicy?: 'none' | 'quarantine' | 'reject';
    action: SesS3Action | SesSnsAction;
  };
  /** The mail (base64 for `encoding: 'BASE64'`), SNS action only. */
  content?: string;
}

// ---------------------------------------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------------------------------------

/** The header block of a MIME message as SES reports it: in order, unfolded, values trimmed. */
export function headersFromMime(raw: Buffer): SesHeader[] {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.indexOf('\n\n');
  const block = raw.subarray(0, end < 0 ? raw.length : end).toString('utf8');
  const headers: SesHeader[] = [];
  for (const line of block.split(/\r?\n/)) {
    const last = headers[headers.length - 1];
    if (/^[ \t]/.test(line) && last) {
      // Unfold: drop the line break, keep the whitespace (RFC 5322 §2.2.3).
      last.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    headers.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  return headers;
}

function formatAddress(entry: Address): string[] {
  if (entry.group !== undefined) return entry.group.flatMap(formatAddress);
  if (!entry.name) return [entry.address];
  const name = /[",;:<>@()[\]\\]/.test(entry.name)
    ? `"${entry.name.replace(/(["\\])/g, '\\$1')}"`
    : entry.name;
  return [`${name} <${entry.address}>`];
}

function addressList(value: string): string[] {
  return addressparser(value).flatMap(formatAddress);
}

/** `mail.commonHeaders` derived from the header list, the way SES fills it (address headers split into lists). */
export function commonHeadersFrom(headers: readonly SesHeader[]): SesCommonHeaders {
  const get = (name: string): string | undefined =>
    headers.find((h) => h.name.toLowerCase() === name.toLowerCase())?.value;
  const common: SesCommonHeaders = {};
  const returnPath = get('Return-Path');
  if (returnPath !== undefined) common.returnPath = returnPath.replace(/^<|>$/g, '');
  const from = get('From');
  if (from !== undefined) common.from = addressList(from);
  const sender = get('Sender');
  if (sender !== undefined) common.sender = sender;
  const replyTo = get('Reply-To');
  if (replyTo !== undefined) common.replyTo = addressList(replyTo);
  const date = get('Date');
  if (date !== undefined) common.date = date;
  const to = get('To');
  if (to !== undefined) common.to = addressList(to);
  const cc = get('Cc');
  if (cc !== undefined) common.cc = addressList(cc);
  const bcc = get('Bcc');
  if (bcc !== undefined) common.bcc = addressList(bcc);
  const messageId = get('Message-ID');
  if (messageId !== undefined) common.messageId = messageId;
  const subject = get('Subject');
  if (subject !== undefined) common.subject = subject;
  return common;
}

/** A random id shaped like SES's (lower-case base32-ish, 40 characters). */
export function sesMessageId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from(randomBytes(40), (b) => alphabet[b % alphabet.length]).join('');
}

// ---------------------------------------------------------------------------------------------------------------------
// Notification builders
// ---------------------------------------------------------------------------------------------------------------------

/** Input of {@link sesNotification}. */
export interface SesNotificationInput {
  /** SES message id; also the S3 object key (after the prefix) for S3 actions. */
  messageId: string;
  /** Envelope MAIL FROM. */
  source: string;
  /** Envelope recipients this receipt rule matched (`receipt.recipients`). */
  recipients: string[];
  /** All envelope recipients of the SMTP transaction (`mail.destination`); defaults to `recipients`. */
  destination?: string[];
  /** S3 action: bucket the mail was stored in. Required unless `inlineContent` is given. */
  bucket?: string;
  /** S3 action: object key; defaults to `objectKeyPrefix + messageId`. */
  key?: string;
  /** S3 action: the rule's key prefix (default ''). */
  objectKeyPrefix?: string;
  /** SNS action: the mail, put base64-encoded in `content`. Selects the SNS action shape. */
  inlineContent?: Buffer;
  /**
   * `mail.headers`. Defaults to the header block of `inlineContent` or `raw`; give a record for a quick list.
   * `mail.commonHeaders` is derived from it.
   */
  headers?: SesHeader[] | Record<string, string>;
  /** The mail, only used to derive `headers` for S3 actions (SES reads them off the message). */
  raw?: Buffer;
  /** Overrides of the verdict statuses (all PASS by default). A dmarc FAIL adds `dmarcPolicy`. */
  verdicts?: Partial<Record<'spam' | 'virus' | 'spf' | 'dkim' | 'dmarc', SesVerdictStatus>>;
  /** `receipt.dmarcPolicy` when DMARC failed (default 'none'). */
  dmarcPolicy?: 'none' | 'quarantine' | 'reject';
  /** `mail.headersTruncated` (SES truncates headers over 10 KB). */
  headersTruncated?: boolean;
  /** Topic of the action (default {@link DEFAULT_TOPIC_ARN}). */
  topicArn?: string;
  /** Receipt time (default now). */
  timestamp?: Date;
}

/** Builds the SES "Received" notification for an S3 action, or for an SNS action when `inlineContent` is given. */
export function sesNotification(input: SesNotificationInput): SesReceivedNotification {
  const timestamp = (input.timestamp ?? new Date()).toISOString();
  const topicArn = input.topicArn ?? DEFAULT_TOPIC_ARN;
  const source = input.inlineContent ?? input.raw;
  const headers: SesHeader[] = Array.isArray(input.headers)
    ? input.headers
    : input.headers
      ? Object.entries(input.headers).map(([name, value]) => ({ name, value }))
      : source
        ? headersFromMime(source)
        : [];
  const verdict = (key: 'spam' | 'virus' | 'spf' | 'dkim' | 'dmarc'): { status: SesVerdictStatus } => ({
    status: input.verdicts?.[key] ?? 'PASS',
  });

  let action: SesS3Action | SesSnsAction;
  if (input.inlineContent) {
    action = { type: 'SNS', topicArn, encoding: 'BASE64' };
  } else {
    if (input.bucket === undefined) throw new Error('sesNotification: an S3 action needs `bucket`');
    const objectKeyPrefix = input.objectKeyPrefix ?? '';
    action = {
      type: 'S3',
      topicArn,
      bucketName: input.bucket,
      objectKeyPrefix,
      objectKey: input.key ?? `${objectKeyPrefix}${input.messageId}`,
    };
  }

  const dmarcVerdict = verdict('dmarc');
  const notification: SesReceivedNotification = {
    notificationType: 'Received',
    mail: {
      timestamp,
      source: input.source,
      messageId: input.messageId,
      destination: input.destination ?? input.recipients,
      headersTruncated: input.headersTruncated ?? false,
      headers,
      commonHeaders: commonHeadersFrom(headers),
    },
    receipt: {
      timestamp,
      processingTimeMillis: 450,
      recipients: input.recipients,
      spamVerdict: verdict('spam'),
      virusVerdict: verdict('virus'),
      spfVerdict: verdict('spf'),
      dkimVerdict: verdict('dkim'),
      dmarcVerdict,
      ...(dmarcVerdict.status === 'FAIL' ? { dmarcPolicy: input.dmarcPolicy ?? 'none' } : {}),
      action,
    },
  };
  if (input.inlineContent) notification.content = input.inlineContent.toString('base64');
  return notification;
}

/** Options of {@link snsEnvelope}. */
export interface SnsEnvelopeOptions {
  subject?: string;
  messageId?: string;
  timestamp?: Date;
}

/**
 * Wraps a message in the SNS Notification envelope an SQS subscriber (without raw message delivery) receives.
 * Formatted like SNS does it (`"Key" : value`, two-space indent); the signature is random bytes, not a real one.
 */
export function snsEnvelope(
  messageJson: string,
  topicArn: string = DEFAULT_TOPIC_ARN,
  options: SnsEnvelopeOptions = {},
): string {
  const region = topicArn.split(':')[3] || 'us-east-1';
  const fields: [string, string][] = [
    ['Type', 'Notification'],
    ['MessageId', options.messageId ?? randomUUID()],
    ['TopicArn', topicArn],
    ['Subject', options.subject ?? 'Amazon SES Email Receipt Notification'],
    ['Message', messageJson],
    ['Timestamp', (options.timestamp ?? new Date()).toISOString()],
    ['SignatureVersion', '1'],
    ['Signature', randomBytes(256).toString('base64')],
    [
      'SigningCertURL',
      `https://sns.${region}.amazonaws.com/SimpleNotificationService-${randomBytes(16).toString('hex')}.pem`,
    ],
    [
      'UnsubscribeURL',
      `https://sns.${region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=${topicArn}:${randomUUID()}`,
    ],
  ];
  return `{\n${fields.map(([k, v]) => `  ${JSON.stringify(k)} : ${JSON.stringify(v)}`).join(',\n')}\n}`;
}
