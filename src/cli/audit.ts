/**
 * The daemon's verdict on a stored mail, read from the S3 audit metadata it writes when a message is final
 * (docs/audit-metadata.md), or, for a plain delivery, from the message's ledger record, which then holds it
 * instead: for `inject --wait`, `replay` and `dlq show`.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';

import {
  LEDGER_RETENTION_SECONDS,
  createDynamoLedger,
  messageKey,
  type EffectLedger,
} from '../aws/effect-ledger.ts';
import { systemClock } from '../clock.ts';
import { awsError, awsErrorName } from '../errors.ts';
import type { CommandContext } from './command.ts';

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

/** A stored mail as the commands see it: its object key, its S3 metadata, and when S3 last wrote it. */
export interface StoredVerdictInput {
  key: string;
  metadata: Record<string, string>;
  lastModified?: Date;
}

/**
 * Completes the metadata of mails without an S3 verdict from their ledger records (`IDEMPOTENCY_TABLE`): a plain
 * delivery keeps its verdict there (pipeline/audit.ts), given here in the S3 keys (`status`, `processed`,
 * `processed_at`, `processed_by` ending in ` (ledger)`). A mail with neither, older than the ledger keeps records,
 * may have been delivered long ago: `processed` is `unknown` then, never taken for unprocessed. Mails with an S3
 * verdict, and every mail without a ledger, are left as they are.
 */
export async function withLedgerVerdicts<T extends StoredVerdictInput>(
  context: LedgerContext,
  domain: string,
  mails: readonly T[],
  now = Date.now(),
): Promise<T[]> {
  const ledger = ledgerOf(context);
  const open = mails.filter((m) => m.metadata.status === undefined);
  if (!ledger || open.length === 0) return [...mails];
  const keyOf = (m: T) =>
    messageKey(
      m.key.slice(m.key.lastIndexOf('/') + 1),
      domain,
      Number(m.metadata.replay_generation ?? '0') || 0,
    );
  const records = await ledger.read(open.map(keyOf));
  const forgottenBefore = now - LEDGER_RETENTION_SECONDS * 1000;
  return mails.map((mail) => {
    if (mail.metadata.status !== undefined) return mail;
    const verdict = records.get(keyOf(mail))?.verdict;
    if (verdict) {
      const recorded = {
        processed: 'true',
        processed_at: String(verdict.at),
        processed_by: `worker-${domain} (ledger)`,
        status: verdict.status,
      };
      return { ...mail, metadata: { ...mail.metadata, ...recorded } };
    }
    const old = mail.lastModified !== undefined && mail.lastModified.getTime() < forgottenBefore;
    return old ? { ...mail, metadata: { ...mail.metadata, processed: 'unknown' } } : mail;
  });
}

/** What reading the ledger needs: the daemon's settings and clients. */
export type LedgerContext = Pick<CommandContext, 'config' | 'clients'>;

const ledgers = new WeakMap<LedgerContext, EffectLedger | null>();

function ledgerOf(context: LedgerContext): EffectLedger | undefined {
  let ledger = ledgers.get(context);
  if (ledger === undefined) {
    const table = context.config.tables.idempotency;
    ledger = table ? createDynamoLedger(context.clients.ddb, { table, clock: systemClock }) : null;
    ledgers.set(context, ledger);
  }
  return ledger ?? undefined;
}

/** The final verdict (`processed` set), `removed` when every recipient blocked the sender, or undefined. */
export type AuditResult = { kind: 'final'; metadata: Record<string, string> } | { kind: 'removed' };

/**
 * Waits until the daemon recorded its outcome in the object's metadata (or, for a plain delivery, in the ledger of
 * `context`) or removed the object. Undefined after `timeoutMs`, e.g. when delivery was deferred and will be retried.
 */
export async function waitForAudit(
  context: LedgerContext,
  location: { bucket: string; key: string; domain: string },
  timeoutMs: number,
): Promise<AuditResult | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stored = await headMail(context.clients.s3, location.bucket, location.key);
    if (stored.kind === 'missing') return { kind: 'removed' };
    const [mail] = await withLedgerVerdicts(context, location.domain, [
      { key: location.key, metadata: stored.metadata },
    ]);
    const metadata = mail?.metadata ?? stored.metadata;
    if (metadata.processed === 'true' || metadata.processed === 'false') return { kind: 'final', metadata };
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
