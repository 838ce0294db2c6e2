/**
 * `unified-worker dlq show|redrive`: what waits in a domain's dead-letter queue, and moving it back to the
 * domain's queue. The redrive uses SQS's own StartMessageMoveTask (followed with ListMessageMoveTasks); on an
 * endpoint without that API (the fauxqs emulator, older SQS-compatible services) it falls back to what redrives
 * were before it: receive, send to the source queue, delete, in batches of ten.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  ListMessageMoveTasksCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  StartMessageMoveTaskCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { Command } from 'commander';

import { createSqsQueue } from '../aws/queue.ts';
import { awsError, awsErrorName } from '../errors.ts';
import { parseSqsBody } from '../pipeline/notification.ts';
import { headMail, withLedgerVerdicts } from './audit.ts';
import {
  EXIT_FAILED,
  EXIT_OK,
  UsageError,
  describeError,
  runWithContext,
  withCommonOptions,
  type CliApp,
  type CommandContext,
  type CommonOptions,
} from './command.ts';
import { plural } from './output.ts';
import { domainQueueNames, findQueue, queueFacts, queueNameFromArn } from './queues.ts';

const DEFAULT_SAMPLE = 10;
const MAX_SAMPLE = 100;
/** How long sampled messages stay hidden while `show` reads them (they are released right after). */
const SAMPLE_VISIBILITY_SECONDS = 30;
/** The fallback hides a batch this long; what could not be sent on is released at once. */
const MOVE_VISIBILITY_SECONDS = 60;
const TASK_POLL_MS = 1_000;
/**
 * Answers of an endpoint that does not know the action at all. SQS's own `UnsupportedOperation` is not among them:
 * there the API exists and refuses this move (a task already running, a source that is no DLQ), which is reported.
 */
const NO_MOVE_API = new Set(['InvalidAction', 'UnknownOperationException']);

interface DomainQueues {
  domain: string;
  queueName: string;
  queueUrl: string;
  queueArn: string;
  dlqName: string;
  dlqUrl: string;
  dlqArn: string;
}

interface ShowOptions extends CommonOptions {
  sample?: string;
}

interface RedriveOptions extends CommonOptions {
  max?: string;
  wait?: boolean;
}

export function dlqCommand(app: CliApp): Command {
  const dlq = new Command('dlq').description(
    "what waits in each domain's dead-letter queue, and moving it back",
  );
  dlq.addCommand(
    withCommonOptions(
      new Command('show')
        .description('count, oldest, and a sample of SES ids with the reasons from the S3 metadata')
        .option(
          '--sample <n>',
          `how many messages to look at (default ${DEFAULT_SAMPLE}, at most ${MAX_SAMPLE})`,
        ),
    ).action(
      app.action('dlq show', (options: ShowOptions) =>
        runWithContext(app.streams, options, { domains: true }, (context) => showDlq(context, options)),
      ),
    ),
  );
  dlq.addCommand(
    withCommonOptions(
      new Command('redrive')
        .description(
          "move the dead-letter queue back to the domain's queue (StartMessageMoveTask, or receive/send/delete)",
        )
        .option(
          '--max <n>',
          'with the receive/send/delete fallback: move at most this many (default: the count at start)',
        )
        .option('--no-wait', 'start the SQS move task and return without following it'),
    ).action(
      app.action('dlq redrive', (options: RedriveOptions) =>
        runWithContext(app.streams, options, { domains: true }, (context) => redriveDlq(context, options)),
      ),
    ),
  );
  return dlq;
}

async function resolveQueues(context: CommandContext, domain: string): Promise<DomainQueues> {
  const { sqs } = context.clients;
  const names = domainQueueNames(context.config, domain);
  const queueUrl = await findQueue(sqs, names.queue);
  if (queueUrl === undefined)
    throw new Error(`queue ${names.queue} does not exist (unified-worker setup creates it)`);
  const facts = await queueFacts(sqs, queueUrl);
  const dlqName = facts.redrive ? queueNameFromArn(facts.redrive.deadLetterTargetArn) : names.deadLetter;
  const dlqUrl = await findQueue(sqs, dlqName);
  if (dlqUrl === undefined) {
    throw new Error(
      facts.redrive
        ? `the dead-letter queue ${dlqName} named by ${names.queue}'s redrive policy does not exist`
        : `${names.queue} has no redrive policy and there is no ${dlqName} (unified-worker setup adds both)`,
    );
  }
  const dlqArn = facts.redrive?.deadLetterTargetArn ?? (await queueFacts(sqs, dlqUrl)).arn;
  return { domain, queueName: names.queue, queueUrl, queueArn: facts.arn, dlqName, dlqUrl, dlqArn };
}

// ---------------------------------------------------------------------------------------------------------------------
// show
// ---------------------------------------------------------------------------------------------------------------------

export interface DlqSample {
  sqsMessageId: string;
  sentAt?: string;
  receiveCount?: number;
  sesMessageId?: string;
  recipients?: string[];
  reason: string;
}

export interface DlqReport {
  domain: string;
  queue: string;
  deadLetterQueue: string;
  waiting: number;
  inFlight: number;
  /** The oldest send time among the sampled messages; `oldestExact` when the sample is the whole queue. */
  oldest?: string;
  oldestExact: boolean;
  samples: DlqSample[];
}

async function showDlq(context: CommandContext, options: ShowOptions): Promise<number> {
  const sample = options.sample === undefined ? DEFAULT_SAMPLE : Number(options.sample);
  if (!Number.isInteger(sample) || sample < 0 || sample > MAX_SAMPLE) {
    throw new UsageError(`--sample ${options.sample}: a number 0..${MAX_SAMPLE}`);
  }
  const reports: DlqReport[] = [];
  const errors: Array<{ domain: string; error: string }> = [];
  for (const domain of context.config.domains) {
    try {
      reports.push(await inspectDlq(context, await resolveQueues(context, domain), sample));
    } catch (error) {
      errors.push({ domain, error: describeError(error) });
    }
  }
  context.out.result({ deadLetterQueues: reports, errors });
  for (const report of reports) printReport(context, report);
  for (const { domain, error } of errors) context.out.line(`${domain}: ${error}`);
  return errors.length > 0 ? EXIT_FAILED : EXIT_OK;
}

async function inspectDlq(context: CommandContext, queues: DomainQueues, sample: number): Promise<DlqReport> {
  const { sqs } = context.clients;
  const attributes = await createSqsQueue(sqs, queues.dlqUrl).attributes();
  const messages = sample > 0 ? await receiveSample(sqs, queues.dlqUrl, sample) : [];
  const samples: DlqSample[] = [];
  try {
    for (const message of messages) {
      const sentAt = Number(message.Attributes?.SentTimestamp);
      const base: Omit<DlqSample, 'reason'> = {
        sqsMessageId: message.MessageId ?? '',
        ...(Number.isFinite(sentAt) && { sentAt: new Date(sentAt).toISOString() }),
        ...(message.Attributes?.ApproximateReceiveCount !== undefined && {
          receiveCount: Number(message.Attributes.ApproximateReceiveCount),
        }),
      };
      const parsed = parseSqsBody(message.Body);
      if (parsed.kind === 'invalid') {
        samples.push({ ...base, reason: `malformed: ${parsed.reason}` });
        continue;
      }
      if (parsed.kind === 'setup') {
        samples.push({
          ...base,
          reason: 'an SES setup notification (safe to redrive: the daemon deletes it)',
        });
        continue;
      }
      const { receipt } = parsed;
      const described = { ...base, sesMessageId: receipt.sesMessageId, recipients: receipt.recipients };
      if (receipt.mail.kind !== 's3') {
        samples.push({ ...described, reason: 'mail inline in the notification (SNS action): no S3 audit' });
        continue;
      }
      const stored = await storedVerdict(context, queues.domain, receipt.mail).catch((error: unknown) => ({
        kind: 'error' as const,
        error: describeError(error),
      }));
      samples.push({ ...described, reason: reasonOf(stored, receipt.mail.bucket, receipt.mail.key) });
    }
  } finally {
    await releaseSample(sqs, queues.dlqUrl, messages);
  }
  const times = samples.flatMap((s) => (s.sentAt ? [s.sentAt] : [])).sort();
  return {
    domain: queues.domain,
    queue: queues.queueName,
    deadLetterQueue: queues.dlqName,
    waiting: attributes.visible,
    inFlight: attributes.inFlight,
    ...(times[0] !== undefined && { oldest: times[0] }),
    oldestExact: messages.length > 0 && messages.length >= attributes.visible,
    samples,
  };
}

/** The object's S3 metadata, completed from the ledger for a plain delivery (cli/audit.ts). */
async function storedVerdict(
  context: CommandContext,
  domain: string,
  location: { bucket: string; key: string },
): Promise<Awaited<ReturnType<typeof headMail>>> {
  const stored = await headMail(context.clients.s3, location.bucket, location.key);
  if (stored.kind !== 'stored') return stored;
  const [completed] = await withLedgerVerdicts(context, domain, [{ ...stored, key: location.key }]);
  return completed ? { ...stored, metadata: completed.metadata } : stored;
}

function reasonOf(
  stored: Awaited<ReturnType<typeof headMail>> | { kind: 'error'; error: string },
  bucket: string,
  key: string,
): string {
  if (stored.kind === 'error') return `S3 metadata not readable: ${stored.error}`;
  if (stored.kind === 'missing')
    return `s3://${bucket}/${key} does not exist (deleted, or the notification names a wrong bucket)`;
  const m = stored.metadata;
  if (m.failure_reason) return `${m.status ?? 'failed'}: ${m.failure_reason}`;
  if (m.status) return `status ${m.status}${m.invalid_inboxes ? `, rejected ${m.invalid_inboxes}` : ''}`;
  return 'no outcome recorded in S3 (retried until MAX_RECEIVES without a final answer: see the worker log for this SES id)';
}

/** Receives up to `count` distinct messages; each stays hidden until released. */
async function receiveSample(sqs: SQSClient, url: string, count: number): Promise<Message[]> {
  const messages: Message[] = [];
  while (messages.length < count) {
    const batch = await receive(sqs, url, Math.min(10, count - messages.length), SAMPLE_VISIBILITY_SECONDS);
    if (batch.length === 0) break;
    messages.push(...batch);
  }
  return messages;
}

async function releaseSample(sqs: SQSClient, url: string, messages: readonly Message[]): Promise<void> {
  for (let i = 0; i < messages.length; i += 10) {
    const chunk = messages.slice(i, i + 10);
    await sqs
      .send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: url,
          Entries: chunk.map((m, index) => ({
            Id: String(index),
            ReceiptHandle: m.ReceiptHandle ?? '',
            VisibilityTimeout: 0,
          })),
        }),
      )
      .catch(() => undefined);
  }
}

async function receive(sqs: SQSClient, url: string, max: number, visibility: number): Promise<Message[]> {
  try {
    const result = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: max,
        VisibilityTimeout: visibility,
        WaitTimeSeconds: 1,
        MessageAttributeNames: ['All'],
        MessageSystemAttributeNames: ['SentTimestamp', 'ApproximateReceiveCount', 'MessageGroupId'],
      }),
    );
    return result.Messages ?? [];
  } catch (error) {
    throw awsError('SQS_ERROR', `ReceiveMessage ${url}`, error);
  }
}

function printReport(context: CommandContext, report: DlqReport): void {
  const { out } = context;
  const oldest = report.oldest
    ? `, oldest ${report.oldest}${report.oldestExact ? '' : ' (of the sample)'}`
    : '';
  out.line(
    `${report.domain}: ${plural(report.waiting, 'message')} waiting in ${report.deadLetterQueue}` +
      `${report.inFlight > 0 ? ` (+${report.inFlight} being received)` : ''}${oldest}`,
  );
  for (const s of report.samples) {
    const who = s.sesMessageId ? `${s.sesMessageId} to ${(s.recipients ?? []).join(', ')}` : s.sqsMessageId;
    out.line(`  ${s.sentAt ?? '?'}  ${who}: ${s.reason}`);
  }
  if (report.waiting > 0)
    out.line(
      `  move them back once the cause is fixed: unified-worker dlq redrive --domains ${report.domain}`,
    );
}

// ---------------------------------------------------------------------------------------------------------------------
// redrive
// ---------------------------------------------------------------------------------------------------------------------

export type RedrivePath = 'message-move-task' | 'receive-send-delete';

export interface RedriveReport {
  domain: string;
  from: string;
  to: string;
  path: RedrivePath;
  /** SQS's task handle (message-move-task). */
  taskHandle?: string;
  status: 'completed' | 'running' | 'failed';
  moved: number;
  toMove: number;
  failed: number;
  failure?: string;
}

async function redriveDlq(context: CommandContext, options: RedriveOptions): Promise<number> {
  const max = options.max === undefined ? undefined : Number(options.max);
  if (max !== undefined && !(Number.isInteger(max) && max > 0))
    throw new UsageError(`--max ${options.max}: a positive number`);
  const reports: RedriveReport[] = [];
  const errors: Array<{ domain: string; error: string }> = [];
  for (const domain of context.config.domains) {
    try {
      reports.push(
        await redriveDomain(context, await resolveQueues(context, domain), options.wait !== false, max),
      );
    } catch (error) {
      errors.push({ domain, error: describeError(error) });
    }
  }
  context.out.result({ redrives: reports, errors });
  for (const r of reports) {
    const how =
      r.path === 'message-move-task'
        ? `SQS StartMessageMoveTask, task ${r.taskHandle ?? '?'}`
        : 'receive → send → delete: this endpoint has no StartMessageMoveTask';
    const state =
      r.status === 'running'
        ? ' so far (the task goes on in SQS)'
        : r.status === 'failed'
          ? ` — failed: ${r.failure ?? ''}`
          : '';
    context.out.line(
      `${r.domain}: moved ${r.moved} of ${plural(r.toMove, 'message')} from ${r.from} to ${r.to}${state} (${how})` +
        (r.failed > 0 ? `; ${r.failed} could not be sent and stay in ${r.from}` : ''),
    );
  }
  for (const { domain, error } of errors) context.out.line(`${domain}: ${error}`);
  return errors.length > 0 || reports.some((r) => r.status === 'failed' || r.failed > 0)
    ? EXIT_FAILED
    : EXIT_OK;
}

async function redriveDomain(
  context: CommandContext,
  queues: DomainQueues,
  wait: boolean,
  max: number | undefined,
): Promise<RedriveReport> {
  const { sqs } = context.clients;
  const base = { domain: queues.domain, from: queues.dlqName, to: queues.queueName };
  let taskHandle: string;
  try {
    const started = await sqs.send(
      new StartMessageMoveTaskCommand({ SourceArn: queues.dlqArn, DestinationArn: queues.queueArn }),
    );
    taskHandle = started.TaskHandle ?? '';
  } catch (error) {
    if (!lacksMoveApi(error)) throw awsError('SQS_ERROR', `StartMessageMoveTask ${queues.dlqName}`, error);
    return { ...base, path: 'receive-send-delete', ...(await moveByHand(context, queues, max)) };
  }
  return {
    ...base,
    path: 'message-move-task',
    taskHandle,
    ...(await followTask(context, queues, taskHandle, wait)),
  };
}

function lacksMoveApi(error: unknown): boolean {
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return NO_MOVE_API.has(awsErrorName(error) ?? '') || status === 404 || status === 501;
}

type MoveProgress = Pick<RedriveReport, 'status' | 'moved' | 'toMove' | 'failed' | 'failure'>;

async function followTask(
  context: CommandContext,
  queues: DomainQueues,
  taskHandle: string,
  wait: boolean,
): Promise<MoveProgress> {
  const { sqs } = context.clients;
  let progress: ReturnType<CommandContext['out']['progress']> | undefined;
  try {
    for (;;) {
      let result;
      try {
        result = await sqs.send(
          new ListMessageMoveTasksCommand({ SourceArn: queues.dlqArn, MaxResults: 10 }),
        );
      } catch (error) {
        throw awsError('SQS_ERROR', `ListMessageMoveTasks ${queues.dlqName}`, error);
      }
      const task = (result.Results ?? []).find((t) => t.TaskHandle === taskHandle) ?? result.Results?.[0];
      const moved = task?.ApproximateNumberOfMessagesMoved ?? 0;
      const toMove = task?.ApproximateNumberOfMessagesToMove ?? moved;
      progress ??= context.out.progress(`moving ${queues.dlqName}`, toMove);
      progress.update(moved, toMove);
      const status = task?.Status ?? 'UNKNOWN';
      if (status === 'COMPLETED') return { status: 'completed', moved, toMove, failed: 0 };
      if (status === 'FAILED' || status === 'CANCELLED' || status === 'CANCELLING') {
        return { status: 'failed', moved, toMove, failed: 0, failure: task?.FailureReason ?? status };
      }
      if (!wait) return { status: 'running', moved, toMove, failed: 0 };
      await sleep(TASK_POLL_MS);
    }
  } finally {
    progress?.finish();
  }
}

/** Receive → send to the source queue → delete what was sent, ten at a time, until the count at start is moved. */
async function moveByHand(
  context: CommandContext,
  queues: DomainQueues,
  max: number | undefined,
): Promise<MoveProgress> {
  const { sqs } = context.clients;
  const { visible: waiting, inFlight } = await createSqsQueue(sqs, queues.dlqUrl).attributes();
  if (inFlight > 0) {
    context.out.warn(
      `${plural(inFlight, 'message')} of ${queues.dlqName} are being received elsewhere: not moved now`,
    );
  }
  const toMove = max === undefined ? waiting : Math.min(max, waiting);
  const progress = context.out.progress(`moving ${queues.dlqName}`, toMove);
  let moved = 0;
  let failed = 0;
  let empty = 0;
  try {
    // Two empty receives in a row: SQS short polls may miss messages once, rarely twice.
    while (moved + failed < toMove && empty < 2) {
      const batch = await receive(
        sqs,
        queues.dlqUrl,
        Math.min(10, toMove - moved - failed),
        MOVE_VISIBILITY_SECONDS,
      );
      if (batch.length === 0) {
        empty += 1;
        continue;
      }
      empty = 0;
      const sent = await sendOn(sqs, queues.queueUrl, batch);
      const unsent = batch.filter((m) => !sent.has(m.MessageId ?? ''));
      await deleteMoved(
        sqs,
        queues.dlqUrl,
        batch.filter((m) => sent.has(m.MessageId ?? '')),
      );
      if (unsent.length > 0) await releaseSample(sqs, queues.dlqUrl, unsent);
      moved += batch.length - unsent.length;
      failed += unsent.length;
      progress.tick(batch.length);
    }
  } finally {
    progress.finish();
  }
  return {
    status: failed > 0 ? 'failed' : 'completed',
    moved,
    toMove,
    failed,
    ...(failed > 0 && { failure: 'SendMessageBatch refused some messages' }),
  };
}

/** Sends the batch on with its body and attributes; returns the ids SQS accepted. */
async function sendOn(sqs: SQSClient, url: string, batch: readonly Message[]): Promise<Set<string>> {
  const fifo = url.endsWith('.fifo');
  let result;
  try {
    result = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: batch.map((m, index) => ({
          Id: String(index),
          MessageBody: m.Body ?? '',
          ...(m.MessageAttributes &&
            Object.keys(m.MessageAttributes).length > 0 && { MessageAttributes: m.MessageAttributes }),
          ...(fifo && {
            MessageGroupId: m.Attributes?.MessageGroupId ?? 'redrive',
            MessageDeduplicationId: m.MessageId ?? String(index),
          }),
        })),
      }),
    );
  } catch (error) {
    throw awsError('SQS_ERROR', `SendMessageBatch ${url}`, error);
  }
  return new Set((result.Successful ?? []).map((s) => batch[Number(s.Id)]?.MessageId ?? ''));
}

async function deleteMoved(sqs: SQSClient, url: string, messages: readonly Message[]): Promise<void> {
  if (messages.length === 0) return;
  let failed: number;
  try {
    const result = await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: url,
        Entries: messages.map((m, index) => ({ Id: String(index), ReceiptHandle: m.ReceiptHandle ?? '' })),
      }),
    );
    failed = result.Failed?.length ?? 0;
  } catch (error) {
    // Sent on but not deleted: the daemon gets these twice; said loudly, the ledger keeps delivery single.
    throw awsError(
      'SQS_ERROR',
      `DeleteMessageBatch ${url} (the moved messages are still in the DLQ too)`,
      error,
    );
  }
  if (failed > 0) {
    throw new Error(
      `DeleteMessageBatch ${url}: ${failed} moved messages could not be deleted and are in both queues`,
    );
  }
}
