/**
 * Handing a mail to the daemon exactly as SES would: SES's trace headers on top, the object in the domain's bucket,
 * the "Received" notification in an SNS envelope on the domain's queue. `inject` sends new mail this way; `replay`
 * enqueues a fresh notification for a stored one.
 */
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { SendMessageCommand, type MessageAttributeValue } from '@aws-sdk/client-sqs';

import type { AwsClients } from '../aws/clients.ts';
import { resolveQueueUrl } from '../aws/queue.ts';
import { nameFromTemplate } from '../aws/resources.ts';
import type { Config } from '../config/config.ts';
import { awsError } from '../errors.ts';
import { detectEol } from '../pipeline/verdicts.ts';
import { domainPart } from './addresses.ts';
import { UsageError } from './exit.ts';
import {
  DEFAULT_ACCOUNT_ID,
  sesMessageId as newSesMessageId,
  sesNotification,
  snsEnvelope,
} from './ses-notification.ts';
import { allPass, hasSesTrace, sesTraceHeaders, type Verdicts } from './ses-trace.ts';

/**
 * How the notification reaches the queue: S3 action behind an SNS subscription (`sns-s3`, the usual setup),
 * the same with SNS raw message delivery (`raw-s3`), or an SNS action with the mail inline (`sns-inline`).
 */
export type MailShape = 'sns-s3' | 'raw-s3' | 'sns-inline';
export const MAIL_SHAPES: readonly MailShape[] = ['sns-s3', 'raw-s3', 'sns-inline'];

/** SES's limit for mail inside an SNS notification. */
export const MAX_INLINE_BYTES = 150 * 1024;

export interface InjectRequest {
  /** The mail as the sender's server sent it; SES's trace headers are added unless it already has them. */
  raw: Buffer;
  recipients: readonly string[];
  /** Envelope sender; '' for a null sender (a bounce). */
  source: string;
  verdicts?: Partial<Verdicts>;
  shape?: MailShape;
  /** Default: a fresh SES-style id. */
  sesMessageId?: string;
}

/** One notification per domain, as per-domain receipt rules produce. */
export interface InjectedMail {
  domain: string;
  sesMessageId: string;
  recipients: string[];
  queueUrl: string;
  sqsMessageId: string;
  /** Undefined for `sns-inline`. */
  bucket?: string;
  key?: string;
}

/** Stores the mail and enqueues its notification for every domain of its recipients. */
export async function injectMail(
  target: { config: Config; clients: AwsClients },
  request: InjectRequest,
): Promise<InjectedMail[]> {
  const { config, clients } = target;
  const sesMessageId = request.sesMessageId ?? newSesMessageId();
  const shape = request.shape ?? 'sns-s3';
  const verdicts: Verdicts = { ...allPass(), ...request.verdicts };
  const stored = hasSesTrace(request.raw)
    ? request.raw
    : Buffer.concat([
        sesTraceHeaders(
          {
            sesMessageId,
            source: request.source,
            recipients: request.recipients,
            verdicts,
            region: config.aws.region,
            timestamp: new Date(),
          },
          detectEol(request.raw),
        ),
        request.raw,
      ]);
  if (shape === 'sns-inline' && stored.length > MAX_INLINE_BYTES) {
    throw new UsageError(
      `an SNS action carries at most ${MAX_INLINE_BYTES / 1024} KB of mail; this one is ${stored.length} bytes`,
    );
  }
  const injected: InjectedMail[] = [];
  for (const [domain, recipients] of groupByDomain(request.recipients)) {
    const receipt: ReceiptToEnqueue = {
      domain,
      sesMessageId,
      source: request.source,
      recipients,
      destination: [...request.recipients],
      verdicts,
      mail: stored,
      rawDelivery: shape === 'raw-s3',
    };
    if (shape !== 'sns-inline') {
      receipt.location = { bucket: nameFromTemplate(config.bucketNameTemplate, domain), key: sesMessageId };
      try {
        await clients.s3.send(
          new PutObjectCommand({ Bucket: receipt.location.bucket, Key: receipt.location.key, Body: stored }),
        );
      } catch (error) {
        throw awsError(
          'S3_ERROR',
          `PutObject s3://${receipt.location.bucket}/${receipt.location.key}`,
          error,
        );
      }
    }
    const sent = await enqueueReceipt(target, receipt);
    injected.push({ domain, sesMessageId, recipients, ...sent, ...receipt.location });
  }
  return injected;
}

/** A receipt for one domain's queue: the mail in S3 (`location`) or inline in the notification. */
export interface ReceiptToEnqueue {
  domain: string;
  sesMessageId: string;
  source: string;
  /** This domain's envelope recipients (`receipt.recipients`). */
  recipients: readonly string[];
  /** Every envelope recipient of the transaction (`mail.destination`). */
  destination: readonly string[];
  verdicts: Verdicts;
  /** The stored mail, or at least its header block (`mail.headers` is read off it). */
  mail: Buffer;
  /** S3 action; without it the mail goes inline (SNS action). */
  location?: { bucket: string; key: string };
  /** SNS raw message delivery: the bare notification, no SNS envelope. */
  rawDelivery?: boolean;
  messageAttributes?: Record<string, MessageAttributeValue>;
}

/** Sends the SES "Received" notification for `receipt` to the domain's queue, as SNS delivers it. */
export async function enqueueReceipt(
  target: { config: Config; clients: AwsClients },
  receipt: ReceiptToEnqueue,
): Promise<{ queueUrl: string; sqsMessageId: string }> {
  const { config, clients } = target;
  const queueUrl = await resolveQueueUrl(
    clients.sqs,
    nameFromTemplate(config.queueNameTemplate, receipt.domain),
  );
  const topicArn = `arn:aws:sns:${config.aws.region}:${DEFAULT_ACCOUNT_ID}:ses-inbound`;
  const notification = sesNotification({
    messageId: receipt.sesMessageId,
    source: receipt.source,
    recipients: [...receipt.recipients],
    destination: [...receipt.destination],
    verdicts: receipt.verdicts,
    topicArn,
    ...(receipt.location ? { ...receipt.location, raw: receipt.mail } : { inlineContent: receipt.mail }),
  });
  const json = JSON.stringify(notification);
  const body = receipt.rawDelivery && receipt.location ? json : snsEnvelope(json, topicArn);
  try {
    const sent = await clients.sqs.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: body,
        ...(receipt.messageAttributes && { MessageAttributes: receipt.messageAttributes }),
      }),
    );
    return { queueUrl, sqsMessageId: sent.MessageId ?? '' };
  } catch (error) {
    throw awsError('SQS_ERROR', `SendMessage ${queueUrl}`, error);
  }
}

function groupByDomain(recipients: readonly string[]): Map<string, string[]> {
  const byDomain = new Map<string, string[]>();
  for (const recipient of recipients) {
    const domain = domainPart(recipient);
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), recipient]);
  }
  return byDomain;
}
