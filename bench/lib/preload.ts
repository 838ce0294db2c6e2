/**
 * Fills a domain's queue before a consumer starts: N distinct mails, each with its own Message-ID and S3 object and
 * an SNS-enveloped SES notification, sent straight to the emulators (not through the latency proxies).
 */
import { CreateBucketCommand, HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { sesMessageId, sesNotification, snsEnvelope } from '../../test/harness/ses-events.ts';

export interface PreloadInput {
  domain: string;
  queueUrl: string;
  bucket: string;
  mails: number;
  /** Size of each mail in bytes (headers included, approximately). */
  mailBytes: number;
  recipientsPerMail: number;
  /** Numbers the mails from here (X-Bench-Seq), so runs never reuse a Message-ID. */
  firstSeq: number;
}

const FROM = 'bench-sender@external.test';

/** A plain-text mail of about `bytes` bytes whose headers the sink reads back (X-Bench-Seq, X-Bench-Enqueued). */
export function benchMail(seq: number, domain: string, recipients: readonly string[], bytes: number): Buffer {
  const head =
    `From: Bench Sender <${FROM}>\r\n` +
    `To: ${recipients.join(', ')}\r\n` +
    `Subject: bench mail ${seq}\r\n` +
    `Message-ID: <bench-${seq}@${domain}>\r\n` +
    `Date: ${new Date().toUTCString()}\r\n` +
    `X-Bench-Seq: ${seq}\r\n` +
    `X-Bench-Enqueued: ${Date.now()}\r\n` +
    'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n';
  const line = 'The quick brown fox jumps over the lazy dog; bench filler text for a realistic body.\r\n';
  const body = line.repeat(Math.max(1, Math.ceil((bytes - head.length) / line.length)));
  return Buffer.from(head + body, 'latin1');
}

export function benchRecipients(domain: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `user${i}@${domain}`);
}

export async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  }
}

export async function preload(clients: { s3: S3Client; sqs: SQSClient }, input: PreloadInput): Promise<void> {
  await ensureBucket(clients.s3, input.bucket);
  const recipients = benchRecipients(input.domain, input.recipientsPerMail);
  for (let start = 0; start < input.mails; start += 10) {
    const batch = Array.from({ length: Math.min(10, input.mails - start) }, (_, i) => {
      const seq = input.firstSeq + start + i;
      const messageId = sesMessageId();
      return { seq, messageId, raw: benchMail(seq, input.domain, recipients, input.mailBytes) };
    });
    await Promise.all(
      batch.map((m) =>
        clients.s3.send(new PutObjectCommand({ Bucket: input.bucket, Key: m.messageId, Body: m.raw })),
      ),
    );
    await clients.sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: input.queueUrl,
        Entries: batch.map((m, i) => {
          const notification = sesNotification({
            raw: m.raw,
            messageId: m.messageId,
            source: FROM,
            recipients,
            bucket: input.bucket,
            key: m.messageId,
          });
          return {
            Id: String(i),
            MessageBody: snsEnvelope(JSON.stringify(notification), notification.receipt.action.topicArn),
          };
        }),
      }),
    );
  }
}
