/**
 * Hostile input for the hostile suite (test/integration/hostile.test.ts, fuzz-notifications.test.ts): mails past
 * every bound of src/mail/mail-limits.ts, notifications with hostile fields, and malformed HTTP requests. All of it
 * generated in code, deterministic (seeded), so a failing case replays.
 */
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  HeadBucketCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { sesMessageId, sesNotification, snsEnvelope, type SesReceivedNotification } from './ses-events.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

// ---------------------------------------------------------------------------------------------------------------------
// Mails past the bounds
// ---------------------------------------------------------------------------------------------------------------------

/** `depth` nested multipart/mixed containers around one text part. */
export function nestedMime(depth: number, head: string): Buffer {
  const parts: string[] = [head];
  for (let i = 0; i < depth; i++)
    parts.push(`Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n`);
  parts.push('Content-Type: text/plain\r\n\r\nthe innermost text\r\n');
  for (let i = depth - 1; i >= 0; i--) parts.push(`--b${i}--\r\n`);
  return b(parts.join(''));
}

/**
 * A forged SES bounce: a multipart/report from MAILER-DAEMON@amazonses.com that returns no headers, so the only
 * candidates are its own References — `ids` of them, `perField` to a References field.
 */
export function forgedBounce(to: string, ids: number, perField: number): Buffer {
  const fields: string[] = [];
  for (let start = 0; start < ids; start += perField) {
    const count = Math.min(perField, ids - start);
    fields.push(
      `References: ${Array.from({ length: count }, (_, i) => `<forged-${start + i}@email.amazonses.com>`).join(' ')}\r\n`,
    );
  }
  return b(
    `From: MAILER-DAEMON@amazonses.com\r\nTo: ${to}\r\nSubject: Delivery Status Notification (Failure)\r\n` +
      fields.join('') +
      'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n' +
      '--r\r\nContent-Type: text/plain\r\n\r\nAn error occurred.\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\n' +
      'Reporting-MTA: dns; a1-2.smtp-out.amazonses.com\r\n\r\nFinal-Recipient: rfc822; gone@elsewhere.test\r\n' +
      'Action: failed\r\nStatus: 5.1.1\r\n\r\n--r--\r\n',
  );
}

/** `bytes` of empty `a:` header fields, then a From and a short body (the measured poller-killing shape). */
export function headerBomb(bytes: number, to: string): Buffer {
  return Buffer.concat([
    Buffer.alloc(bytes - (bytes % 4), 'a:\r\n'),
    b(`From: bomber@external.test\r\nTo: ${to}\r\n\r\nbody\r\n`),
  ]);
}

/** A mail whose second header line is `bytes` long. */
export function longHeaderLine(bytes: number, to: string): Buffer {
  return Buffer.concat([
    b(`From: long@external.test\r\nTo: ${to}\r\nX-Huge: `),
    Buffer.alloc(bytes, 'h'),
    b('\r\nSubject: after the long line\r\n\r\nbody\r\n'),
  ]);
}

// ---------------------------------------------------------------------------------------------------------------------
// Storing a mail and queueing its notification, with room to make the notification hostile
// ---------------------------------------------------------------------------------------------------------------------

export interface HostilePut {
  messageId: string;
  sqsMessageId: string;
  bucket: string;
  key: string;
  body: string;
}

/**
 * Stores `raw` (multipart above 8 MiB: fauxqs takes at most 11 MiB per request) and enqueues an SNS-wrapped S3
 * notification for it. The notification lists no headers (SES truncates them; a bomb would not fit an SQS
 * message); `edit` may then change any field of it, and `envelope` any field of the SNS envelope.
 */
export async function putHostileMail(
  stack: { s3: S3Client; sqs: SQSClient },
  input: {
    queueUrl: string;
    bucket: string;
    raw: Buffer;
    recipients: string[];
    source: string;
    messageId?: string;
    edit?: (notification: SesReceivedNotification) => void;
    envelope?: Record<string, string>;
  },
): Promise<HostilePut> {
  const messageId = input.messageId ?? sesMessageId();
  const key = messageId;
  await putObject(stack.s3, input.bucket, key, input.raw);
  const notification = sesNotification({
    messageId,
    source: input.source,
    recipients: input.recipients,
    bucket: input.bucket,
    key,
    headers: [],
    headersTruncated: true,
  });
  input.edit?.(notification);
  const envelope = JSON.parse(snsEnvelope(JSON.stringify(notification))) as Record<string, string>;
  const body = JSON.stringify({ ...envelope, ...input.envelope });
  const sent = await stack.sqs.send(new SendMessageCommand({ QueueUrl: input.queueUrl, MessageBody: body }));
  return { messageId, sqsMessageId: sent.MessageId ?? '', bucket: input.bucket, key, body };
}

const knownBuckets = new Set<string>();

async function putObject(s3: S3Client, bucket: string, key: string, raw: Buffer): Promise<void> {
  if (!knownBuckets.has(bucket)) {
    await s3
      .send(new HeadBucketCommand({ Bucket: bucket }))
      .catch(() => s3.send(new CreateBucketCommand({ Bucket: bucket })));
    knownBuckets.add(bucket);
  }
  const partSize = 8 * 1024 * 1024;
  if (raw.length <= partSize) {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: raw }));
    return;
  }
  const upload = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const parts: Array<{ ETag: string; PartNumber: number }> = [];
  for (let offset = 0, n = 1; offset < raw.length; offset += partSize, n++) {
    const part = await s3.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: upload.UploadId,
        PartNumber: n,
        Body: raw.subarray(offset, offset + partSize),
      }),
    );
    parts.push({ ETag: part.ETag ?? '', PartNumber: n });
  }
  await s3.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId: upload.UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// Hostile notification fields
// ---------------------------------------------------------------------------------------------------------------------

/** What CR, LF, NUL, angle brackets and spaces look like when someone wants them to shape an SMTP command. */
export const INJECTIONS = [
  '\r\nRCPT TO:<evil@attacker.test>',
  '>',
  '<',
  '\n',
  '\r',
  '\u0000',
  ' ',
  '>\r\nDATA\r\n',
  '\u202e',
] as const;

// ---------------------------------------------------------------------------------------------------------------------
// Malformed HTTP
// ---------------------------------------------------------------------------------------------------------------------

/** One raw request for the HTTP fuzz; `stall` ones are left open without finishing (slow clients). */
export interface FuzzRequest {
  bytes: Buffer;
  stall: boolean;
}

const METHODS = ['GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'G\x00T', 'get', ''];
const TARGETS = [
  '/health',
  '/metrics',
  '/ready',
  '/debug/crash?domain=x',
  'http://[/',
  'http://[::1/',
  'http://localhost:8080/health',
  'https://%zz/',
  '*',
  'example.com:443',
  '//',
  '/%',
  '/%00',
  '/\u00ff\u00fe',
  '/..%2f..%2fetc%2fpasswd',
  `/${'a'.repeat(9000)}`,
  'javascript:alert(1)',
  '',
];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1.1 extra', 'HTX/1.1', ''];

/** Seeded malformed and random requests; `random` is a PRNG such as mulberry32. */
export function httpFuzzRequest(random: () => number): FuzzRequest {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
  const roll = random();
  if (roll < 0.1) {
    const out = Buffer.allocUnsafe(1 + Math.floor(random() * 512));
    for (let i = 0; i < out.length; i++) out[i] = Math.floor(random() * 256);
    return { bytes: out, stall: false };
  }
  if (roll < 0.13) return { bytes: b(`GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: `), stall: true };
  const headers: string[] = [];
  if (random() < 0.8) headers.push('Host: fuzz');
  if (random() < 0.1) headers.push(`X-Big: ${'b'.repeat(10_000 + Math.floor(random() * 40_000))}`);
  if (random() < 0.1) headers.push(`Content-Length: ${pick(['5', '-1', '99999999999', 'abc', '0'])}`);
  if (random() < 0.1) headers.push(`Transfer-Encoding: ${pick(['chunked', 'gzip, chunked', 'x'])}`);
  if (random() < 0.1)
    headers.push(pick(['Bad Header', ': no name', 'X-Nul: a\x00b', 'X-Lf: a\nb', 'X-Cr: a\rb']));
  if (random() < 0.1) for (let i = 0; i < 200; i++) headers.push(`X-Many-${i}: ${i}`);
  if (random() < 0.5) headers.push('Connection: close');
  const line = `${pick(METHODS)} ${pick(TARGETS)} ${pick(VERSIONS)}`;
  const body = random() < 0.1 ? 'hello=world' : '';
  const eol = random() < 0.9 ? '\r\n' : '\n';
  return { bytes: b(`${line}${eol}${headers.join(eol)}${eol}${eol}${body}`), stall: false };
}

// ---------------------------------------------------------------------------------------------------------------------
// Reading /metrics
// ---------------------------------------------------------------------------------------------------------------------

/** Sum of every sample of `name` whose labels include `labels` (Prometheus text format). */
export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) sum += Number(match[3]);
  }
  return sum;
}
