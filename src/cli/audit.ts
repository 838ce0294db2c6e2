/**
 * The daemon's verdict on a stored mail, read from the S3 audit metadata it writes when a message is final
 * (README, "S3 audit metadata"): for `inject --wait`, `replay` and `dlq show`.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';

import { awsError, awsErrorName } from '../errors.ts';

/** The metadata keys of the audit trail, in the order they are worth showing. */
export const AUDIT_FIELDS = [
  'status',
  'invalid_inboxes',
  'blocked_sender',
  'blocked_reason',
  'failed_effects',
  'failure_reason',
] as const;

export type StoredMail =
  | { kind: 'stored'; metadata: Record<string, string>; lastModified?: Date; size?: number }
  | { kind: 'missing' };

/** HeadObject: the object's user metadata, or `missing` when there is no such object. */
export async function headMail(s3: S3Client, bucket: string, key: string): Promise<StoredMail> {
  try {
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return {
      kind: 'stored',
      metadata: head.Metadata ?? {},
      ...(head.LastModified && { lastModified: head.LastModified }),
      ...(head.ContentLength !== undefined && { size: head.ContentLength }),
    };
  } catch (error) {
    const name = awsErrorName(error);
    if (name === 'NotFound' || name === 'NoSuchKey') return { kind: 'missing' };
    throw awsError('S3_ERROR', `HeadObject s3://${bucket}/${key}`, error);
  }
}

/** The final verdict (`processed` set), `removed` when every recipient blocked the sender, or undefined. */
export type AuditResult = { kind: 'final'; metadata: Record<string, string> } | { kind: 'removed' };

/**
 * Waits until the daemon recorded its outcome in the object's metadata or removed the object. Undefined after
 * `timeoutMs`, e.g. when delivery was deferred and will be retried.
 */
export async function waitForAudit(
  s3: S3Client,
  bucket: string,
  key: string,
  timeoutMs: number,
  isFinal: (metadata: Record<string, string>) => boolean = (m) => m.processed !== undefined,
): Promise<AuditResult | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stored = await headMail(s3, bucket, key);
    if (stored.kind === 'missing') return { kind: 'removed' };
    if (isFinal(stored.metadata)) return { kind: 'final', metadata: stored.metadata };
    if (Date.now() >= deadline) return undefined;
    await sleep(100);
  }
}

/** One line per audit outcome, for the console. */
export function describeAudit(result: AuditResult | undefined, timeoutMs: number): string {
  if (!result) {
    return `no final outcome within ${timeoutMs / 1000} s (deferred and retried later?): see the worker's log`;
  }
  if (result.kind === 'removed') {
    return 'status=blocked (every recipient blocks the sender; the S3 object was deleted)';
  }
  return describeMetadata(result.metadata);
}

export function describeMetadata(metadata: Record<string, string>): string {
  return AUDIT_FIELDS.filter((f) => metadata[f] !== undefined)
    .map((f) => `${f}=${metadata[f]}`)
    .join(' ');
}
