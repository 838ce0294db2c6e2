/**
 * `unified-worker replay`: runs stored mail through the daemon again by enqueueing a fresh SES notification for
 * the same SES message id and S3 object — after an outage, a fixed mailbox, a raised limit. The mail is chosen
 * by `--key`, or by a scan of the domain's bucket on the audit metadata (`--status`, `--since`, `--until`).
 *
 * The contract with the daemon: every replayed notification carries the SQS message attribute `uw-replay`
 * (String `true`), so the daemon does not take the mail's `processed=true` metadata for a duplicate delivery.
 * Recipients the ledger (IDEMPOTENCY_TABLE) saw delivered are skipped, so a replay never delivers twice. With
 * `--force`, the notification also carries `uw-replay-generation` (Number): one more than the generation recorded
 * in the object's metadata (`replay_generation`, written here before enqueueing); the daemon puts a generation
 * above 0 into its ledger keys and delivery ids, so the mail is delivered again, on purpose, exactly once more.
 *
 * SES keeps the envelope recipients only in the notification, so a replay needs them from elsewhere: `--to`, or
 * the recipients the mail server rejected (`invalid_inboxes`) for invalid and partial mail. The envelope sender
 * and SES's verdicts come from the trace headers SES put on the stored mail (see ses-trace.ts).
 */
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { MessageAttributeValue } from '@aws-sdk/client-sqs';
import { Command } from 'commander';

import { createS3MailStore } from '../aws/mail-store.ts';
import { nameFromTemplate } from '../aws/resources.ts';
import { systemClock } from '../clock.ts';
import { awsError } from '../errors.ts';
import { splitMessage } from '../mail/header-block.ts';
import { headerView } from '../pipeline/parse.ts';
import { domainPart, parseMailbox } from './addresses.ts';
import { headMail, withLedgerVerdicts } from './audit.ts';
import {
  EXIT_FAILED,
  EXIT_OK,
  UsageError,
  collect,
  describeError,
  listOption,
  runWithContext,
  withCommonOptions,
  type CliApp,
  type CommandContext,
  type CommonOptions,
} from './command.ts';
import { REPLAY_ATTRIBUTE, REPLAY_GENERATION_ATTRIBUTE } from '../aws/queue.ts';
import { enqueueReceipt } from './inject.ts';
import { plural } from './output.ts';
import { readSesTrace } from './ses-trace.ts';

/** Object metadata key holding the last forced replay's generation. */
export const REPLAY_GENERATION_METADATA = 'replay_generation';

export const REPLAY_STATUSES = [
  'delivered',
  'partial',
  'invalid',
  'blocked',
  'failed',
  'unprocessed',
] as const;
export type ReplayStatus = (typeof REPLAY_STATUSES)[number];

const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 100_000;
const MAX_KEYS = 1000;
/** SES's trace headers are on top: this much of the object is read to find them. */
const HEADER_READ_BYTES = 64 * 1024;
/** HeadObject calls in flight while scanning. */
const SCAN_CONCURRENCY = 8;
/** The daemon's own check of an SES message id (pipeline/notification.ts). */
const SES_MESSAGE_ID = /^[A-Za-z0-9._-]{1,200}$/;

interface ReplayOptions extends CommonOptions {
  key?: string[];
  to?: string[];
  status?: string;
  since?: string;
  until?: string;
  prefix?: string;
  limit?: string;
  force?: boolean;
  dryRun?: boolean;
}

/** A stored mail chosen for replay. */
interface Candidate {
  bucket: string;
  key: string;
  metadata: Record<string, string>;
}

export interface ReplayedMail {
  bucket: string;
  key: string;
  sesMessageId: string;
  recipients: string[];
  status: string;
  /** Only with --force. */
  generation?: number;
}

export interface NotReplayed {
  bucket: string;
  key: string;
  reason: string;
}

interface Selection {
  keys: string[];
  recipients: string[];
  statuses: ReadonlySet<ReplayStatus> | undefined;
  since?: number;
  until?: number;
  prefix: string;
  limit: number;
}

export function replayCommand(app: CliApp): Command {
  return withCommonOptions(
    new Command('replay')
      .description('run stored mail through the daemon again (a fresh notification for the same S3 object)')
      .option(
        '--key <key>',
        "the S3 key of a mail in the domain's bucket (repeatable; needs one domain)",
        collect,
      )
      .option(
        '--to <list>',
        'with --key: the envelope recipients (needed unless the mail has invalid_inboxes)',
        collect,
      )
      .option(
        '--status <list>',
        `scan the bucket for mail with this audit status: ${REPLAY_STATUSES.join(', ')}`,
      )
      .option(
        '--since <time>',
        'only mail processed at or after: 2026-11-27, 2026-11-27T10:00Z, or 90m, 6h, 2d ago',
      )
      .option('--until <time>', 'only mail processed before (same forms)')
      .option('--prefix <prefix>', "only keys starting with this (the receipt rule's object key prefix)")
      .option('--limit <n>', `replay at most this many mails per domain (default ${DEFAULT_LIMIT})`)
      .option(
        '--force',
        'deliver again even to recipients that already got the mail (a new replay generation)',
      )
      .option('--dry-run', 'show what would be replayed, change nothing'),
  ).action(
    app.action('replay', (options: ReplayOptions) =>
      runWithContext(app.streams, options, { domains: true }, (context) => runReplay(context, options)),
    ),
  );
}

async function runReplay(context: CommandContext, options: ReplayOptions): Promise<number> {
  const { out, config } = context;
  const selection = parseSelection(options, Date.now());
  if (selection.keys.length > 0 && config.domains.length !== 1) {
    throw new UsageError(
      "--key needs exactly one domain (--domains): the key is looked up in that domain's bucket",
    );
  }
  if (!config.tables.idempotency && !options.force) {
    out.warn(
      'IDEMPOTENCY_TABLE is off: the daemon cannot tell who already got a mail, so recipients that were delivered get it again',
    );
  }
  const replayed: ReplayedMail[] = [];
  const notReplayed: NotReplayed[] = [];
  let selected = 0;
  for (const domain of config.domains) {
    const bucket = nameFromTemplate(config.bucketNameTemplate, domain);
    const { candidates, missing, more } =
      selection.keys.length > 0
        ? await candidatesByKey(context, domain, bucket, selection.keys)
        : await scanBucket(context, domain, bucket, selection);
    notReplayed.push(...missing);
    selected += candidates.length + missing.length;
    if (out.plainProgress || options.dryRun)
      for (const item of missing) out.line(describeOutcome(item, false));
    if (more) {
      out.warn(
        `${bucket}: more mail matches; stopped at --limit ${selection.limit} (run replay again for the rest)`,
      );
    }
    const progress = out.progress(
      options.dryRun ? `checking ${bucket}` : `replaying ${bucket}`,
      candidates.length,
    );
    for (const candidate of candidates) {
      const outcome = await replayOne(context, domain, candidate, selection, options);
      progress.tick();
      if ('reason' in outcome) notReplayed.push(outcome);
      else replayed.push(outcome);
      if (out.plainProgress || options.dryRun) out.line(describeOutcome(outcome, options.dryRun === true));
    }
    progress.finish();
  }
  out.result({
    dryRun: options.dryRun === true,
    force: options.force === true,
    selected,
    replayed,
    notReplayed,
  });
  const verb = options.dryRun ? 'would be replayed' : 'replayed';
  out.line(
    `${plural(selected, 'mail')} selected: ${replayed.length} ${verb}, ${notReplayed.length} not replayed` +
      (options.force && replayed.length > 0 ? ' (forced: a new replay generation, delivered again)' : ''),
  );
  if (!out.plainProgress && !options.dryRun) {
    for (const item of notReplayed) out.line(`  not replayed ${item.bucket}/${item.key}: ${item.reason}`);
  }
  return notReplayed.length > 0 ? EXIT_FAILED : EXIT_OK;
}

function describeOutcome(outcome: ReplayedMail | NotReplayed, dryRun: boolean): string {
  if ('reason' in outcome) return `  not replayed ${outcome.bucket}/${outcome.key}: ${outcome.reason}`;
  const generation = outcome.generation !== undefined ? `, generation ${outcome.generation}` : '';
  return `  ${dryRun ? 'would replay' : 'replayed'} ${outcome.bucket}/${outcome.key} (status ${outcome.status}) to ${outcome.recipients.join(', ')}${generation}`;
}

function parseSelection(options: ReplayOptions, now: number): Selection {
  const keys = listOption(options.key);
  const recipients = [...new Set(listOption(options.to).map((r) => parseMailbox(r, '--to')))];
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
    throw new UsageError('--to goes with --key: a scan cannot know which recipients each mail had');
  }
  if (keys.length > MAX_KEYS) throw new UsageError(`at most ${MAX_KEYS} --key options`);
  for (const key of keys) {
    if (key.length > 1024 || /[\0-\x1f]/.test(key))
      throw new UsageError(`--key ${JSON.stringify(key)} is not an S3 key`);
  }
  const statuses =
    options.status === undefined ? undefined : new Set(listOption(options.status).map(parseStatus));
  const limit = options.limit === undefined ? DEFAULT_LIMIT : Number(options.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new UsageError(`--limit ${options.limit}: a number 1..${MAX_LIMIT}`);
  }
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

function parseStatus(text: string): ReplayStatus {
  const status = text.toLowerCase() as ReplayStatus;
  if (!REPLAY_STATUSES.includes(status)) {
    throw new UsageError(`--status ${text}: one of ${REPLAY_STATUSES.join(', ')}`);
  }
  return status;
}

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Epoch ms of `2026-11-27`, `2026-11-27T10:00Z` (ISO 8601, UTC unless an offset is given), or `90m`/`6h`/`2d` ago. */
export function parseTime(option: string, text: string, now: number): number {
  const relative = /^(\d{1,6})([mhd])$/.exec(text);
  if (relative) return now - Number(relative[1]) * (UNIT_MS[relative[2] ?? 'd'] ?? 0);
  const iso = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(
    text,
  );
  const date = /^\d{4}-\d{2}-\d{2}$/.test(text)
    ? `${text}T00:00:00Z`
    : /[Zz]|[+-]\d{2}:?\d{2}$/.test(text)
      ? text
      : `${text}Z`;
  const ms = iso ? Date.parse(date.replace(' ', 'T')) : Number.NaN;
  if (!Number.isFinite(ms)) {
    throw new UsageError(
      `${option} ${JSON.stringify(text)}: expected 2026-11-27, 2026-11-27T10:00Z, or 90m, 6h, 2d`,
    );
  }
  return ms;
}

/**
 * The audit status of a stored mail; `unprocessed` when the daemon never recorded an outcome, `unknown` when it may
 * have in a ledger record that has expired since (see `withLedgerVerdicts`).
 */
function statusOf(metadata: Record<string, string>): ReplayStatus | string {
  return metadata.status ?? (metadata.processed === undefined ? 'unprocessed' : 'unknown');
}

async function candidatesByKey(
  context: CommandContext,
  domain: string,
  bucket: string,
  keys: readonly string[],
): Promise<{ candidates: Candidate[]; missing: NotReplayed[]; more: boolean }> {
  const stored: Array<Candidate & { lastModified?: Date }> = [];
  const missing: NotReplayed[] = [];
  for (const key of keys) {
    const head = await headMail(context.clients.s3, bucket, key);
    if (head.kind === 'missing') missing.push({ bucket, key, reason: 'no such object' });
    else
      stored.push({
        bucket,
        key,
        metadata: head.metadata,
        ...(head.lastModified && { lastModified: head.lastModified }),
      });
  }
  const candidates = await withLedgerVerdicts(context, domain, stored);
  return { candidates, missing, more: false };
}

/**
 * Lists the bucket and reads each object's metadata (and, for a plain delivery, its ledger record), keeping what
 * matches the selection. An object last modified before `--since` is skipped unread: the daemon writes the audit
 * metadata after taking `processed_at`, so LastModified is never earlier than the recorded processing time; a plain
 * delivery, whose verdict is in the ledger, is selected by its processing time only when SES stored it after
 * `--since`.
 */
async function scanBucket(
  context: CommandContext,
  domain: string,
  bucket: string,
  selection: Selection,
): Promise<{ candidates: Candidate[]; missing: NotReplayed[]; more: boolean }> {
  const { s3 } = context.clients;
  const candidates: Candidate[] = [];
  const progress = context.out.progress(`scanning ${bucket}`, 0);
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
        const read = await Promise.all(
          objects.slice(i, i + SCAN_CONCURRENCY).map(async (o) => {
            const key = o.Key ?? '';
            const stored = await headMail(s3, bucket, key);
            return stored.kind === 'stored'
              ? { key, metadata: stored.metadata, ...(o.LastModified && { lastModified: o.LastModified }) }
              : undefined;
          }),
        );
        scanned += read.length;
        const heads = await withLedgerVerdicts(
          context,
          domain,
          read.filter((h) => h !== undefined),
        );
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
  const processedAt = Number(metadata.processed_at);
  const when =
    Number.isFinite(processedAt) && metadata.processed_at !== undefined
      ? processedAt * 1000
      : lastModified?.getTime();
  if (when === undefined) return selection.since === undefined && selection.until === undefined;
  if (selection.since !== undefined && when < selection.since) return false;
  if (selection.until !== undefined && when >= selection.until) return false;
  return true;
}

/** The envelope recipients of a replay of this mail in `domain`, or why there are none. */
function recipientsOf(candidate: Candidate, domain: string, selection: Selection): string[] | string {
  if (selection.recipients.length > 0) {
    const foreign = selection.recipients.filter((r) => domainPart(r) !== domain);
    if (foreign.length > 0) return `--to ${foreign.join(', ')} is not in ${domain}`;
    return selection.recipients;
  }
  const rejected = candidate.metadata.invalid_inboxes;
  if (rejected !== undefined && rejected !== '' && !rejected.endsWith('(cut)')) {
    const list = rejected
      .split(',')
      .map((r) => r.trim().toLowerCase())
      .filter((r) => domainPart(r) === domain);
    if (list.length > 0) return list;
  }
  return (
    `the envelope recipients are not recorded (status ${statusOf(candidate.metadata)}): ` +
    `replay --domains ${domain} --key ${candidate.key} --to <recipients>`
  );
}

async function replayOne(
  context: CommandContext,
  domain: string,
  candidate: Candidate,
  selection: Selection,
  options: ReplayOptions,
): Promise<ReplayedMail | NotReplayed> {
  const { bucket, key, metadata } = candidate;
  const sesMessageId = key.slice(key.lastIndexOf('/') + 1);
  if (!SES_MESSAGE_ID.test(sesMessageId)) {
    return { bucket, key, reason: 'the key does not end in an SES message id, which the notification needs' };
  }
  const recipients = recipientsOf(candidate, domain, selection);
  if (typeof recipients === 'string') return { bucket, key, reason: recipients };
  const status = statusOf(metadata);
  const generation = options.force ? nextGeneration(metadata) : undefined;
  const planned: ReplayedMail = {
    bucket,
    key,
    sesMessageId,
    recipients,
    status,
    ...(generation !== undefined && { generation }),
  };
  if (options.dryRun) return planned;
  try {
    const head = await readHeaderBlock(context.clients.s3, bucket, key);
    const trace = readSesTrace(head);
    const source = trace.source ?? headerView(splitMessage(head)).from?.address ?? '';
    if (generation !== undefined) {
      await createS3MailStore(context.clients.s3, { maxAttempts: 1, clock: systemClock }).updateMetadata(
        { bucket, key },
        { [REPLAY_GENERATION_METADATA]: String(generation) },
      );
    }
    const attributes: Record<string, MessageAttributeValue> = {
      [REPLAY_ATTRIBUTE]: { DataType: 'String', StringValue: 'true' },
      ...(generation !== undefined && {
        [REPLAY_GENERATION_ATTRIBUTE]: { DataType: 'Number', StringValue: String(generation) },
      }),
    };
    await enqueueReceipt(context, {
      domain,
      sesMessageId,
      source,
      recipients,
      destination: recipients,
      verdicts: trace.verdicts,
      mail: head,
      location: { bucket, key },
      messageAttributes: attributes,
    });
    return planned;
  } catch (error) {
    return { bucket, key, reason: describeError(error) };
  }
}

function nextGeneration(metadata: Record<string, string>): number {
  const last = Number(metadata[REPLAY_GENERATION_METADATA] ?? '0');
  return (Number.isInteger(last) && last >= 0 ? last : 0) + 1;
}

/** The first bytes of the stored mail, cut after the last complete line: enough for SES's trace headers. */
async function readHeaderBlock(s3: S3Client, bucket: string, key: string): Promise<Buffer> {
  try {
    const result = await s3.send(
      new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=0-${HEADER_READ_BYTES - 1}` }),
    );
    const bytes = Buffer.from((await result.Body?.transformToByteArray()) ?? new Uint8Array());
    const end = bytes.indexOf('\r\n\r\n');
    if (end >= 0) return bytes.subarray(0, end + 4);
    const lf = bytes.indexOf('\n\n');
    if (lf >= 0) return bytes.subarray(0, lf + 2);
    const last = bytes.lastIndexOf('\n');
    return last >= 0 ? bytes.subarray(0, last + 1) : bytes;
  } catch (error) {
    throw awsError('S3_ERROR', `GetObject s3://${bucket}/${key}`, error);
  }
}
