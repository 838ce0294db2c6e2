/**
 * Which stored mail `replay` takes: named by `--key`, or found by scanning a domain's bucket on the audit metadata
 * (`--status`, `--since`, `--until`, `--prefix`), at most `--limit` per domain.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';

import { AUDIT_STATUSES, readVerdict } from '../aws/audit-metadata.ts';
import { awsError } from '../errors.ts';
import { parseMailboxes } from './addresses.ts';
import { headMail, readStoredMail, withLedgerVerdicts, type VerdictReader } from './audit.ts';
import { UsageError } from './exit.ts';
import { listOption, parseChoice, parseInteger, parseTime } from './options.ts';
import type { Output } from './output.ts';
import { plural } from './output.ts';

/** Every status the audit metadata can hold, and `unprocessed` for mail without a verdict. */
export const REPLAY_STATUSES = [...AUDIT_STATUSES, 'unprocessed'] as const;
export type ReplayStatus = (typeof REPLAY_STATUSES)[number];

export const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 100_000;
const MAX_KEYS = 1000;
/** HeadObject calls in flight while scanning. */
const SCAN_CONCURRENCY = 8;

export interface SelectionOptions {
  key?: string[];
  to?: string[];
  status?: string;
  since?: string;
  until?: string;
  prefix?: string;
  limit?: string;
}

export interface Selection {
  keys: string[];
  recipients: string[];
  statuses: ReadonlySet<ReplayStatus> | undefined;
  since?: number;
  until?: number;
  prefix: string;
  limit: number;
}

/** A stored mail chosen for replay. */
export interface Candidate {
  bucket: string;
  key: string;
  metadata: Record<string, string>;
}

export interface NotReplayed {
  bucket: string;
  key: string;
  reason: string;
}

export interface Selected {
  candidates: Candidate[];
  missing: NotReplayed[];
  /** More mail matched than `--limit`. */
  more: boolean;
}

export function parseSelection(options: SelectionOptions, now: number): Selection {
  const keys = listOption(options.key);
  const recipients = parseMailboxes(listOption(options.to), '--to');
  const scanning = options.status !== undefined || options.since !== undefined || options.until !== undefined;
  if (keys.length === 0 && !scanning) {
    throw new UsageError(
      'say which mail: --key <key>, or --status (with --since/--until) to scan the bucket',
    );
  }
  if (keys.length > 0 && (scanning || options.prefix !== undefined)) {
    throw new UsageError(
      '--key names the mail itself: it does not go with --status, --since, --until or --prefix',
    );
  }
  if (recipients.length > 0 && keys.length === 0) {
    throw new UsageError("--to goes with --key: a scan takes each mail's recorded recipients");
  }
  if (keys.length > MAX_KEYS) throw new UsageError(`at most ${MAX_KEYS} --key options`);
  for (const key of keys) {
    if (key.length > 1024 || /[\0-\x1f]/.test(key))
      throw new UsageError(`--key ${JSON.stringify(key)} is not an S3 key`);
  }
  const statuses =
    options.status === undefined
      ? undefined
      : new Set(listOption(options.status).map((s) => parseChoice('--status', s, REPLAY_STATUSES)));
  const limit = parseInteger('--limit', options.limit, { min: 1, max: MAX_LIMIT }, DEFAULT_LIMIT);
  const since = options.since === undefined ? undefined : parseTime('--since', options.since, now);
  const until = options.until === undefined ? undefined : parseTime('--until', options.until, now);
  if (since !== undefined && until !== undefined && since >= until)
    throw new UsageError('--since must be before --until');
  return {
    keys,
    recipients,
    statuses,
    ...(since !== undefined && { since }),
    ...(until !== undefined && { until }),
    prefix: options.prefix ?? '',
    limit,
  };
}

/** The audit status of a stored mail; `unprocessed` when the daemon never recorded an outcome. */
export function statusOf(metadata: Record<string, string>): string {
  const verdict = readVerdict(metadata);
  return verdict.status ?? (metadata.processed === undefined ? 'unprocessed' : 'unknown');
}

/** A domain's bucket. */
export interface DomainBucket {
  bucket: string;
  domain: string;
}

export async function candidatesByKey(
  reader: VerdictReader,
  { bucket, domain }: DomainBucket,
  keys: readonly string[],
): Promise<Selected> {
  const candidates: Candidate[] = [];
  const missing: NotReplayed[] = [];
  for (const key of keys) {
    const stored = await readStoredMail(reader, { bucket, key, domain });
    if (stored.kind === 'missing') missing.push({ bucket, key, reason: 'no such object' });
    else candidates.push({ bucket, key, metadata: stored.metadata });
  }
  return { candidates, missing, more: false };
}

/**
 * Lists the bucket and reads each object's metadata, keeping what matches the selection. An object last modified
 * before `--since` is skipped unread: the daemon writes the audit metadata after taking `processed_at`, so
 * LastModified is never earlier than the recorded processing time.
 */
export async function scanBucket(
  reader: VerdictReader,
  out: Output,
  { bucket, domain }: DomainBucket,
  selection: Selection,
): Promise<Selected> {
  const { s3 } = reader;
  const candidates: Candidate[] = [];
  const progress = out.progress(`scanning ${bucket}`, 0);
  let scanned = 0;
  let token: string | undefined;
  try {
    do {
      const page = await listPage(s3, bucket, selection.prefix, token);
      token = page.NextContinuationToken;
      const objects = (page.Contents ?? []).filter(
        (o) =>
          o.Key !== undefined &&
          !o.Key.endsWith('AMAZON_SES_SETUP_NOTIFICATION') &&
          (selection.since === undefined ||
            o.LastModified === undefined ||
            o.LastModified.getTime() >= selection.since),
      );
      for (let i = 0; i < objects.length; i += SCAN_CONCURRENCY) {
        const heads = await withLedgerVerdicts(
          reader,
          domain,
          (
            await Promise.all(objects.slice(i, i + SCAN_CONCURRENCY).map((o) => storedHead(s3, bucket, o)))
          ).flatMap((head) => (head ? [head] : [])),
        );
        scanned += heads.length;
        for (const head of heads) {
          if (matches(head.metadata, head.lastModified, selection)) {
            if (candidates.length >= selection.limit) return { candidates, missing: [], more: true };
            candidates.push({ bucket, key: head.key, metadata: head.metadata });
          }
        }
        progress.status(`${plural(scanned, 'object')}, ${candidates.length} selected`);
      }
    } while (token !== undefined);
  } finally {
    progress.finish();
  }
  return { candidates, missing: [], more: false };
}

async function storedHead(
  s3: S3Client,
  bucket: string,
  object: { Key?: string; LastModified?: Date },
): Promise<{ key: string; metadata: Record<string, string>; lastModified?: Date } | undefined> {
  const key = object.Key ?? '';
  const stored = await headMail(s3, bucket, key);
  if (stored.kind !== 'stored') return undefined;
  return {
    key,
    metadata: stored.metadata,
    ...(object.LastModified && { lastModified: object.LastModified }),
  };
}

async function listPage(s3: S3Client, bucket: string, prefix: string, token: string | undefined) {
  try {
    return await s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        ...(prefix !== '' && { Prefix: prefix }),
        ...(token !== undefined && { ContinuationToken: token }),
      }),
    );
  } catch (error) {
    throw awsError('S3_ERROR', `ListObjectsV2 ${bucket}`, error);
  }
}

function matches(
  metadata: Record<string, string>,
  lastModified: Date | undefined,
  selection: Selection,
): boolean {
  if (selection.statuses && !selection.statuses.has(statusOf(metadata) as ReplayStatus)) return false;
  const processedAt = readVerdict(metadata).processedAt;
  const when = processedAt !== undefined ? processedAt * 1000 : lastModified?.getTime();
  if (when === undefined) return selection.since === undefined && selection.until === undefined;
  if (selection.since !== undefined && when < selection.since) return false;
  if (selection.until !== undefined && when >= selection.until) return false;
  return true;
}
