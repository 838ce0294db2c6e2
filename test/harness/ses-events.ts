/**
 * Builders for what the daemon reads from SQS, shaped like the real thing. The SES notification, the SNS envelope
 * and MIME composition live in src/cli/ (`inject` and `replay` build the same notifications); this file re-exports
 * them and adds what only tests need:
 *
 * - the setup notification SES publishes when a receipt rule is saved;
 * - a one-call `putMail` that stores a mail and enqueues its notification in one of the three shapes;
 * - SES's bounce DSN, and the sending events (send, bounce, complaint) a configuration set publishes.
 */
import { CreateBucketCommand, HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';

import {
  DEFAULT_ACCOUNT_ID,
  DEFAULT_TOPIC_ARN,
  commonHeadersFrom,
  headersFromMime,
  sesMessageId,
  sesNotification,
  snsEnvelope,
  type SesNotificationInput,
} from '../../src/cli/ses-notification.ts';
import { domainQueueName } from './emulators.ts';

export {
  DEFAULT_TOPIC_ARN,
  commonHeadersFrom,
  headersFromMime,
  sesMessageId,
  sesNotification,
  snsEnvelope,
  type SesCommonHeaders,
  type SesHeader,
  type SesNotificationInput,
  type SesReceivedNotification,
  type SesS3Action,
  type SesSnsAction,
  type SesVerdictStatus,
  type SnsEnvelopeOptions,
} from '../../src/cli/ses-notification.ts';
export { buildMime, type MimeAttachment, type MimeInput } from '../../src/cli/compose-mail.ts';

/** Account id used in the ARNs we generate (SES notifications come from the customer's own topic). */
export const TEST_ACCOUNT_ID = DEFAULT_ACCOUNT_ID;

/**
 * The DSN SES sends back when mail `from` sent through SES bounced at `failed`: a multipart/report whose returned
 * headers carry the outbound Message-ID (`<outboundMessageId@email.amazonses.com>`) the outbound table knows.
 */
export function sesBounceDsn(input: {
  from: string;
  outboundMessageId: string;
  bounceMessageId: string;
  failed?: string;
}): Buffer {
  const failed = input.failed ?? 'failed@remote.test';
  return Buffer.from(
    [
      'From: MAILER-DAEMON@amazonses.com',
      `To: ${input.from}`,
      'Subject: Delivery Status Notification (Failure)',
      `Message-ID: <${input.bounceMessageId}@email.amazonses.com>`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain',
      '',
      'An error occurred while trying to deliver the mail to the following recipients:',
      failed,
      '--b1',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; a1-2.smtp-out.amazonses.com',
      '',
      `Final-Recipient: rfc822; ${failed}`,
      'Action: failed',
      'Status: 5.1.1',
      '',
      '--b1',
      'Content-Type: text/rfc822-headers',
      '',
      `From: ${input.from}`,
      `To: ${failed}`,
      `Message-ID: <${input.outboundMessageId}@email.amazonses.com>`,
      '',
      '--b1--',
      '',
    ].join('\r\n'),
  );
}

/** SES event types of a configuration set's event destination (`eventType`). */
export type SesSendingEventType = 'Send' | 'Bounce' | 'Complaint' | 'Delivery' | 'Reject';

/** Input of {@link sesSendingEvent}. */
export interface SesSendingEventInput {
  type: SesSendingEventType;
  /** SES's id of the sent mail (`mail.messageId`). */
  messageId: string;
  /** `mail.source`: the sender (FromEmailAddress, or the From of a raw send without one). */
  source: string;
  /** `mail.destination`. */
  destinations: readonly string[];
  /** The mail as sent: `mail.headers` and `mail.commonHeaders` are read from it. */
  raw?: Buffer;
  configurationSet?: string;
  /** A bounce's `bouncedRecipients` (default: every destination). */
  bounced?: readonly string[];
  /** A complaint's `complainedRecipients` (default: the first destination). */
  complained?: readonly string[];
  /** `mail.timestamp` (default now). */
  sentAt?: Date;
}

/**
 * The record SES publishes for an event of a send through a configuration set with an SNS destination (the SNS
 * `Message`), shaped like
 * https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html.
 */
export function sesSendingEvent(input: SesSendingEventInput): Record<string, unknown> {
  const now = new Date();
  const headers = input.raw ? headersFromMime(input.raw) : [];
  const fromDomain = input.source.replace(/^.*@/, '').replace(/>.*$/, '');
  const mail = {
    timestamp: (input.sentAt ?? now).toISOString(),
    source: input.source,
    sourceArn: `arn:aws:ses:us-east-1:${DEFAULT_ACCOUNT_ID}:identity/${fromDomain}`,
    sendingAccountId: DEFAULT_ACCOUNT_ID,
    messageId: input.messageId,
    destination: [...input.destinations],
    headersTruncated: false,
    headers,
    commonHeaders: commonHeadersFrom(headers),
    tags: {
      ...(input.configurationSet !== undefined && { 'ses:configuration-set': [input.configurationSet] }),
      'ses:source-ip': ['192.0.2.10'],
      'ses:from-domain': [fromDomain],
      'ses:caller-identity': ['unified-worker-test'],
    },
  };
  const feedback = { timestamp: now.toISOString(), feedbackId: `${sesMessageId()}-000000` };
  switch (input.type) {
    case 'Send':
      return { eventType: 'Send', mail, send: {} };
    case 'Bounce':
      return {
        eventType: 'Bounce',
        bounce: {
          bounceType: 'Permanent',
          bounceSubType: 'General',
          bouncedRecipients: (input.bounced ?? input.destinations).map((emailAddress) => ({
            emailAddress,
            action: 'failed',
            status: '5.1.1',
            diagnosticCode: 'smtp; 550 5.1.1 user unknown',
          })),
          reportingMTA: 'dsn; a1-2.smtp-out.amazonses.com',
          ...feedback,
        },
        mail,
      };
    case 'Complaint':
      return {
        eventType: 'Complaint',
        complaint: {
          complainedRecipients: (input.complained ?? input.destinations.slice(0, 1)).map((emailAddress) => ({
            emailAddress,
          })),
          complaintFeedbackType: 'abuse',
          userAgent: 'ExampleCorp Feedback Loop (V0.01)',
          arrivalDate: now.toISOString(),
          ...feedback,
        },
        mail,
      };
    case 'Delivery':
      return {
        eventType: 'Delivery',
        delivery: {
          timestamp: now.toISOString(),
          processingTimeMillis: 540,
          recipients: [...input.destinations],
          smtpResponse: '250 2.6.0 Message received',
          reportingMTA: 'a1-2.smtp-out.amazonses.com',
        },
        mail,
      };
    case 'Reject':
      return { eventType: 'Reject', reject: { reason: 'Bad content' }, mail };
  }
}

/** Options of {@link sesSetupNotification}. */
export interface SesSetupNotificationOptions {
  topicArn?: string;
  /** Bucket of the rule's S3 action (SES also drops an `AMAZON_SES_SETUP_NOTIFICATION` object there). */
  bucket?: string;
  objectKeyPrefix?: string;
  /** Return the bare notification (raw message delivery) instead of the SNS envelope. */
  rawDelivery?: boolean;
}

/**
 * The notification SES publishes when a receipt rule with this topic is saved. It is not a mail: a daemon must
 * recognise it (notificationType, or `mail.messageId` AMAZON_SES_SETUP_NOTIFICATION) and just delete it.
 */
export function sesSetupNotification(options: SesSetupNotificationOptions = {}): string {
  const topicArn = options.topicArn ?? DEFAULT_TOPIC_ARN;
  const timestamp = new Date().toISOString();
  const objectKeyPrefix = options.objectKeyPrefix ?? '';
  const message = JSON.stringify({
    notificationType: 'AMAZON_SES_SETUP_NOTIFICATION',
    receipt: {
      timestamp,
      processingTimeMillis: 0,
      recipients: [],
      action:
        options.bucket !== undefined
          ? {
              type: 'S3',
              topicArn,
              bucketName: options.bucket,
              objectKeyPrefix,
              objectKey: `${objectKeyPrefix}AMAZON_SES_SETUP_NOTIFICATION`,
            }
          : { type: 'SNS', topicArn, encoding: 'UTF8' },
    },
    mail: {
      timestamp,
      source: 'no-reply-aws@amazon.com',
      messageId: 'AMAZON_SES_SETUP_NOTIFICATION',
      destination: [],
      headersTruncated: false,
      headers: [],
      commonHeaders: {},
    },
  });
  return options.rawDelivery
    ? message
    : snsEnvelope(message, topicArn, { subject: 'Amazon SES Setup Notification' });
}

// ---------------------------------------------------------------------------------------------------------------------
// putMail
// ---------------------------------------------------------------------------------------------------------------------

/**
 * How the notification reaches the queue:
 * - `sns-s3`: S3 action, SNS → SQS subscription (SNS envelope around the notification);
 * - `raw-s3`: S3 action, SNS → SQS subscription with raw message delivery (the bare notification);
 * - `sns-inline`: SNS action, the mail base64-encoded inside the notification, inside the SNS envelope.
 */
export type MailShape = 'sns-s3' | 'raw-s3' | 'sns-inline';

/** Input of {@link putMail}. */
export interface PutMailInput {
  /** Domain whose queue receives the notification (`example.com` → `example-com-queue`). */
  domain: string;
  raw: Buffer;
  recipients: string[];
  source: string;
  shape: MailShape;
  /** Default `<domain-with-dashes>-emails`; created when missing. */
  bucket?: string;
  /** Default `objectKeyPrefix + messageId`. */
  key?: string;
  objectKeyPrefix?: string;
  /** Default: a fresh SES-style id. */
  messageId?: string;
  /** Queue URL; default: looked up by the daemon's default queue name for `domain`. */
  queueUrl?: string;
  /** Extra notification fields (verdicts, headers, destination, ...). */
  notification?: Partial<
    Omit<
      SesNotificationInput,
      'messageId' | 'source' | 'recipients' | 'bucket' | 'key' | 'inlineContent' | 'raw'
    >
  >;
}

/** What {@link putMail} stored and sent. */
export interface PutMailResult {
  messageId: string;
  /** S3 location (undefined for `sns-inline`). */
  bucket?: string;
  key?: string;
  queueUrl: string;
  /** The SQS message body that was sent. */
  body: string;
  /** SQS MessageId of the enqueued notification. */
  sqsMessageId: string;
}

/** Buckets known to exist, per S3 client, to skip the HeadBucket round trip on repeated puts. */
const knownBuckets = new WeakMap<S3Client, Set<string>>();

async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  let known = knownBuckets.get(s3);
  if (!known) knownBuckets.set(s3, (known = new Set()));
  if (known.has(bucket)) return;
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  }
  known.add(bucket);
}

/**
 * Stores a received mail the way SES does (S3 shapes) and enqueues its notification on the domain's queue, in the
 * given shape. Returns the ids, so tests can look for the mail at the other end.
 */
export async function putMail(
  stack: { s3: S3Client; sqs: SQSClient },
  input: PutMailInput,
): Promise<PutMailResult> {
  const messageId = input.messageId ?? sesMessageId();
  const queueUrl =
    input.queueUrl ??
    (await stack.sqs.send(new GetQueueUrlCommand({ QueueName: domainQueueName(input.domain) }))).QueueUrl;
  if (!queueUrl) throw new Error(`putMail: no queue for ${input.domain}`);

  let body: string;
  let bucket: string | undefined;
  let key: string | undefined;
  if (input.shape === 'sns-inline') {
    const notification = sesNotification({
      ...input.notification,
      messageId,
      source: input.source,
      recipients: input.recipients,
      inlineContent: input.raw,
    });
    body = snsEnvelope(JSON.stringify(notification), notification.receipt.action.topicArn);
  } else {
    bucket = input.bucket ?? `${input.domain.toLowerCase().replaceAll('.', '-')}-emails`;
    const objectKeyPrefix = input.objectKeyPrefix ?? '';
    key = input.key ?? `${objectKeyPrefix}${messageId}`;
    await ensureBucket(stack.s3, bucket);
    await stack.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: input.raw }));
    const notification = sesNotification({
      raw: input.raw,
      ...input.notification,
      messageId,
      source: input.source,
      recipients: input.recipients,
      bucket,
      key,
      objectKeyPrefix,
    });
    const json = JSON.stringify(notification);
    body = input.shape === 'raw-s3' ? json : snsEnvelope(json, notification.receipt.action.topicArn);
  }

  const sent = await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }));
  return {
    messageId,
    ...(bucket !== undefined ? { bucket, key } : {}),
    queueUrl,
    body,
    sqsMessageId: sent.MessageId ?? '',
  };
}
