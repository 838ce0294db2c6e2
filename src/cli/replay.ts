/**
 * `unified-worker replay`: runs stored mail through the daemon again by enqueueing a fresh SES notification for
 * the same SES message id and S3 object — after an outage, a fixed mailbox, a raised limit. The mail is chosen
 * by `--key`, or by a scan of the domain's bucket on the audit metadata (replay-selection.ts).
 *
 * The contract with the daemon: every replayed notification carries the SQS message attribute `uw-replay`
 * (String `true`), so the daemon does not take the mail's `processed=true` metadata for a duplicate delivery.
 * Recipients the ledger (IDEMPOTENCY_TABLE) saw delivered are skipped, so a replay never delivers twice. With
 * `--force`, the notification also carries `uw-replay-generation` (Number): one more than the generation recorded
 * in the object's metadata (`replay_generation`, written here before enqueueing); the daemon puts a generation
 * above 0 into its ledger keys and delivery ids, so the mail is delivered again, on purpose, exactly once more.
 *
 * SES keeps the envelope recipients only in the notification; the daemon records them in the audit metadata
 * (`envelope_recipients`, bounded), which is where a replay takes them from, unless `--to` names them. The
 * envelope sender and SES's verdicts come from the trace headers SES put on the stored mail (see ses-trace.ts).
 * With `--wait`, each mail is marked `replay_pending` before its notification goes out; the daemon's next verdict
 * removes the mark, and that verdict is the replay's.
 */
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { MessageAttributeValue } from '@aws-sdk/client-sqs';
import { Command } from 'commander';

import {
  REPLAY_GENERATION_KEY,
  REPLAY_PENDING_KEY,
  readVerdict,
  replayPendingMetadata,
  type RecordedVerdict,
} from '../aws/audit-metadata.ts';
import { createS3MailStore } from '../aws/mail-store.ts';
import { REPLAY_ATTRIBUTE, REPLAY_GENERATION_ATTRIBUTE } from '../aws/queue.ts';
import { nameFromTemplate } from '../aws/resources.ts';
import { systemClock } from '../clock.ts';
import { awsError } from '../errors.ts';
import { splitMessage } from '../mail/header-block.ts';
import { headerView } from '../pipeline/parse.ts';
import { domainPart } from './addresses.ts';
import { awaitOutcomes, verdictReader, type AwaitedOutcome } from './audit.ts';
import { command, describeError, type CliApp, type CommandContext, type CommonOptions } from './command.ts';
import { EXIT_FAILED, EXIT_OK, UsageError } from './exit.ts';
import { collect, parseDuration } from './options.ts';
import { plural } from './output.ts';
import {
  DEFAULT_LIMIT,
  REPLAY_STATUSES,
  candidatesByKey,
  parseSelection,
  scanBucket,
  statusOf,
  type Candidate,
  type NotReplayed,
  type Selection,
  type SelectionOptions,
} from './replay-selection.ts';
import { enqueueReceipt } from './ses-inbound.ts';
import { readSesTrace } from './ses-trace.ts';

/** SES's trace headers are on top: this much of the object is read to find them. */
const HEADER_READ_BYTES = 64 * 1024;
/** The daemon's own check of an SES message id (pipeline/notification.ts). */
const SES_MESSAGE_ID = /^[A-Za-z0-9._-]{1,200}$/;
/** --wait bound, and how many replayed mails it follows (each is polled on S3 until its verdict comes). */
const MAX_WAIT_SECONDS = 600;
const MAX_WAITED_MAILS = 200;

interface ReplayOptions extends CommonOptions, SelectionOptions {
  force?: boolean;
  dryRun?: boolean;
  wait?: string;
}

export interface ReplayedMail {
  domain: string;
  bucket: string;
  key: string;
  sesMessageId: string;
  recipients: string[];
  status: string;
  /** Only with --force. */
  generation?: number;
}

export type { NotReplayed };

export function replayCommand(app: CliApp): Command {
  return command(
    app,
    new Command('replay')
      .description('run stored mail through the daemon again (a fresh notification for the same S3 object)')
      .option(
        '--key <key>',
        "the S3 key of a mail in the domain's bucket (repeatable; needs one domain)",
        collect,
      )
      .option(
        '--to <list>',
        'with --key: the envelope recipients (default: those recorded in the audit metadata)',
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
      .option('--dry-run', 'show what would be replayed, change nothing')
      .option(
        '--wait <seconds>',
        `wait this long (90, 5m) for the daemon's verdicts and say every effect; exit 1 if one is not final (at most ${MAX_WAITED_MAILS} mails)`,
      ),
    { domains: 'required', run: (context, options: ReplayOptions) => runReplay(context, options) },
  );
}

async function runReplay(context: CommandContext, options: ReplayOptions): Promise<number> {
  const { out } = context;
  const selection = parseSelection(options, Date.now());
  const waitSeconds = parseDuration('--wait', options.wait, MAX_WAIT_SECONDS);
  checkRequest(context, selection, options, waitSeconds);
  const { planned, notReplayed } = await selectCandidates(context, selection, options.dryRun === true);
  if (waitSeconds !== undefined && planned.length > MAX_WAITED_MAILS) {
    throw new UsageError(
      `--wait follows at most ${MAX_WAITED_MAILS} mails and ${planned.length} are selected: add --limit ${MAX_WAITED_MAILS}, or drop --wait`,
    );
  }
  const selected = planned.length + notReplayed.length;
  const replayed = await replayAll(
    context,
    planned,
    selection,
    options,
    waitSeconds !== undefined,
    notReplayed,
  );
  const verb = options.dryRun ? 'would be replayed' : 'replayed';
  out.line(
    `${plural(selected, 'mail')} selected: ${replayed.length} ${verb}, ${notReplayed.length} not replayed` +
      (options.force && replayed.length > 0 ? ' (forced: a new replay generation, delivered again)' : ''),
  );
  if (!out.plainProgress && !options.dryRun) {
    for (const item of notReplayed) out.line(describeReplay(item, false));
  }
  const waited =
    waitSeconds === undefined
      ? undefined
      : await awaitOutcomes(
          verdictReader(context),
          out,
          replayed.map((r) => ({
            label: `${r.bucket}/${r.key}`,
            bucket: r.bucket,
            key: r.key,
            domain: r.domain,
          })),
          waitSeconds * 1000,
          (metadata) => metadata[REPLAY_PENDING_KEY] === undefined,
        );
  out.result({
    dryRun: options.dryRun === true,
    force: options.force === true,
    selected,
    replayed: withOutcomes(replayed, waited?.outcomes),
    notReplayed,
  });
  return notReplayed.length > 0 || waited?.allFinal === false ? EXIT_FAILED : EXIT_OK;
}

/** What cannot go together, and the warning when the ledger cannot keep replays single. */
function checkRequest(
  context: CommandContext,
  selection: Selection,
  options: ReplayOptions,
  waitSeconds: number | undefined,
): void {
  const { config, out } = context;
  if (waitSeconds !== undefined && options.dryRun) {
    throw new UsageError('--wait has nothing to wait for with --dry-run');
  }
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
}

/** Every domain's candidates (by key or by scan), and the keys that name no object. */
async function selectCandidates(
  context: CommandContext,
  selection: Selection,
  dryRun: boolean,
): Promise<{ planned: Array<{ domain: string; candidate: Candidate }>; notReplayed: NotReplayed[] }> {
  const { out, config } = context;
  const planned: Array<{ domain: string; candidate: Candidate }> = [];
  const notReplayed: NotReplayed[] = [];
  const reader = verdictReader(context);
  for (const domain of config.domains) {
    const bucket = nameFromTemplate(config.bucketNameTemplate, domain);
    const { candidates, missing, more } =
      selection.keys.length > 0
        ? await candidatesByKey(reader, { bucket, domain }, selection.keys)
        : await scanBucket(reader, out, { bucket, domain }, selection);
    notReplayed.push(...missing);
    if (out.plainProgress || dryRun) for (const item of missing) out.line(describeReplay(item, false));
    if (more) {
      out.warn(
        `${bucket}: more mail matches; stopped at --limit ${selection.limit} (run replay again for the rest)`,
      );
    }
    planned.push(...candidates.map((candidate) => ({ domain, candidate })));
  }
  return { planned, notReplayed };
}

async function replayAll(
  context: CommandContext,
  planned: ReadonlyArray<{ domain: string; candidate: Candidate }>,
  selection: Selection,
  options: ReplayOptions,
  wait: boolean,
  notReplayed: NotReplayed[],
): Promise<ReplayedMail[]> {
  const { out } = context;
  const replayed: ReplayedMail[] = [];
  const progress = out.progress(options.dryRun ? 'checking' : 'replaying', planned.length);
  try {
    for (const { domain, candidate } of planned) {
      const outcome = await replayOne(context, domain, candidate, selection, options, wait);
      progress.tick();
      if ('reason' in outcome) notReplayed.push(outcome);
      else replayed.push(outcome);
      if (out.plainProgress || options.dryRun) out.line(describeReplay(outcome, options.dryRun === true));
    }
  } finally {
    progress.finish();
  }
  return replayed;
}

function withOutcomes(
  replayed: readonly ReplayedMail[],
  outcomes: readonly AwaitedOutcome[] | undefined,
): Array<ReplayedMail & { outcome?: AwaitedOutcome['outcome'] }> {
  if (!outcomes) return [...replayed];
  return replayed.map((r) => {
    const found = outcomes.find((o) => o.bucket === r.bucket && o.key === r.key);
    return found ? { ...r, outcome: found.outcome } : r;
  });
}

function describeReplay(outcome: ReplayedMail | NotReplayed, dryRun: boolean): string {
  if ('reason' in outcome) return `  not replayed ${outcome.bucket}/${outcome.key}: ${outcome.reason}`;
  const generation = outcome.generation !== undefined ? `, generation ${outcome.generation}` : '';
  return `  ${dryRun ? 'would replay' : 'replayed'} ${outcome.bucket}/${outcome.key} (status ${outcome.status}) to ${outcome.recipients.join(', ')}${generation}`;
}

/**
 * The envelope recipients of a replay of this mail in `domain`, or why there are none: `--to`, else those the
 * daemon recorded. `toAll` when the ledger skips who got it already, or `--force` delivers again; otherwise a
 * partial mail goes only to the recipients that did not get it.
 */
export function recipientsOf(
  candidate: Candidate,
  domain: string,
  selection: Pick<Selection, 'recipients'>,
  toAll: boolean,
): string[] | string {
  const howTo = `replay --domains ${domain} --key ${candidate.key} --to <recipients>`;
  if (selection.recipients.length > 0) {
    const foreign = selection.recipients.filter((r) => domainPart(r) !== domain);
    if (foreign.length > 0) return `--to ${foreign.join(', ')} is not in ${domain}`;
    return selection.recipients;
  }
  const verdict = readVerdict(candidate.metadata);
  const recorded = verdict.envelopeRecipients;
  if (recorded && !recorded.complete) {
    return `the envelope recipients were too many to record whole (${recorded.addresses.length} kept): ${howTo}`;
  }
  const inDomain = (list: readonly string[]) =>
    [...new Set(list.map((r) => r.trim().toLowerCase()))].filter((r) => domainPart(r) === domain);
  const all = inDomain(recorded?.addresses ?? []);
  if (all.length > 0) {
    if (toAll || verdict.status !== 'partial') return all;
    const missed = notDelivered(verdict, all);
    return missed.length > 0 ? missed : `every recipient got it already (status partial): ${howTo}`;
  }
  // A verdict from before envelope_recipients was recorded: the recipients the mail server refused, if listed.
  const refused = inDomain(verdict.invalid.filter((r) => !r.endsWith('(cut)')));
  if (refused.length > 0) return refused;
  return `the envelope recipients are not recorded (status ${statusOf(candidate.metadata)}): ${howTo}`;
}

/** Of a partial mail's recipients, those without a copy. */
function notDelivered(verdict: RecordedVerdict, recipients: readonly string[]): string[] {
  if (verdict.deliveredTo?.complete) {
    const got = new Set(verdict.deliveredTo.addresses.map((a) => a.toLowerCase()));
    return recipients.filter((r) => !got.has(r));
  }
  const missed = new Set(
    [...verdict.invalid, ...verdict.contentRejected.map((r) => r.recipient)].map((r) =>
      r.trim().toLowerCase(),
    ),
  );
  return recipients.filter((r) => missed.has(r));
}

async function replayOne(
  context: CommandContext,
  domain: string,
  candidate: Candidate,
  selection: Selection,
  options: ReplayOptions,
  wait: boolean,
): Promise<ReplayedMail | NotReplayed> {
  const { bucket, key, metadata } = candidate;
  const sesMessageId = key.slice(key.lastIndexOf('/') + 1);
  if (!SES_MESSAGE_ID.test(sesMessageId)) {
    return { bucket, key, reason: 'the key does not end in an SES message id, which the notification needs' };
  }
  const toAll = Boolean(context.config.tables.idempotency) || options.force === true;
  const recipients = recipientsOf(candidate, domain, selection, toAll);
  if (typeof recipients === 'string') return { bucket, key, reason: recipients };
  const generation = options.force ? readVerdict(metadata).replayGeneration + 1 : undefined;
  const planned: ReplayedMail = {
    domain,
    bucket,
    key,
    sesMessageId,
    recipients,
    status: statusOf(metadata),
    ...(generation !== undefined && { generation }),
  };
  if (options.dryRun) return planned;
  try {
    const head = await readHeaderBlock(context.clients.s3, bucket, key);
    const trace = readSesTrace(head);
    const source = trace.source ?? headerView(splitMessage(head)).from?.address ?? '';
    const marks = {
      ...(generation !== undefined && { [REPLAY_GENERATION_KEY]: String(generation) }),
      ...(wait && replayPendingMetadata(Date.now())),
    };
    if (Object.keys(marks).length > 0) {
      await createS3MailStore(context.clients.s3, { maxAttempts: 1, clock: systemClock }).updateMetadata(
        { bucket, key },
        marks,
      );
    }
    await enqueueReceipt(context, {
      domain,
      sesMessageId,
      source,
      recipients,
      destination: recipients,
      verdicts: trace.verdicts,
      mail: head,
      location: { bucket, key },
      messageAttributes: replayAttributes(generation),
    });
    return planned;
  } catch (error) {
    return { bucket, key, reason: describeError(error) };
  }
}

function replayAttributes(generation: number | undefined): Record<string, MessageAttributeValue> {
  return {
    [REPLAY_ATTRIBUTE]: { DataType: 'String', StringValue: 'true' },
    ...(generation !== undefined && {
      [REPLAY_GENERATION_ATTRIBUTE]: { DataType: 'Number', StringValue: String(generation) },
    }),
  };
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
