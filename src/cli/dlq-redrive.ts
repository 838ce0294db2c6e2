/**
 * `unified-worker dlq redrive`: moves a domain's dead-letter queue back to the domain's queue with SQS's own
 * StartMessageMoveTask (followed with ListMessageMoveTasks); on an endpoint without that API (the fauxqs
 * emulator, older SQS-compatible services) it falls back to what redrives were before it: receive, send to the
 * source queue, delete, in batches of ten.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { ListMessageMoveTasksCommand, StartMessageMoveTaskCommand } from '@aws-sdk/client-sqs';

import { createOperatorQueue, type HeldMessage, type OperatorQueue } from '../aws/operator-queue.ts';
import { awsError, awsErrorName, awsHttpStatus } from '../errors.ts';
import { describeError, type CommandContext, type CommonOptions } from './command.ts';
import { EXIT_FAILED, EXIT_OK } from './exit.ts';
import { parseInteger } from './options.ts';
import { plural } from './output.ts';
import { resolveDomainQueues, type DomainQueues } from './queues.ts';

/** The fallback hides a batch this long; what could not be sent on is released at once. */
const MOVE_HOLD_SECONDS = 60;
const TASK_POLL_MS = 1_000;
/**
 * Answers of an endpoint that does not know the action at all. SQS's own `UnsupportedOperation` is not among them:
 * there the API exists and refuses this move (a task already running, a source that is no DLQ), which is reported.
 */
const NO_MOVE_API = new Set(['InvalidAction', 'UnknownOperationException']);

export interface RedriveOptions extends CommonOptions {
  max?: string;
  wait?: boolean;
}

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

export async function redriveDlq(context: CommandContext, options: RedriveOptions): Promise<number> {
  const max = parseInteger('--max', options.max, { min: 1 });
  const reports: RedriveReport[] = [];
  const errors: Array<{ domain: string; error: string }> = [];
  for (const domain of context.config.domains) {
    try {
      const queues = await resolveDomainQueues(context.clients.sqs, context.config, domain);
      reports.push(await redriveDomain(context, queues, options.wait !== false, max));
    } catch (error) {
      errors.push({ domain, error: describeError(error) });
    }
  }
  context.out.result({ redrives: reports, errors });
  for (const r of reports) context.out.line(describeRedrive(r));
  for (const { domain, error } of errors) context.out.line(`${domain}: ${error}`);
  return errors.length > 0 || reports.some((r) => r.status === 'failed' || r.failed > 0)
    ? EXIT_FAILED
    : EXIT_OK;
}

function describeRedrive(r: RedriveReport): string {
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
  return (
    `${r.domain}: moved ${r.moved} of ${plural(r.toMove, 'message')} from ${r.from} to ${r.to}${state} (${how})` +
    (r.failed > 0 ? `; ${r.failed} could not be sent and stay in ${r.from}` : '')
  );
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
  const status = awsHttpStatus(error);
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
  const dlq = createOperatorQueue(sqs, queues.dlqUrl);
  const target = createOperatorQueue(sqs, queues.queueUrl);
  const { visible: waiting, inFlight } = await dlq.attributes();
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
    // Two empty receives in a row: a receive may miss messages now and then, rarely twice.
    while (moved + failed < toMove && empty < 2) {
      const batch = await dlq.receive(Math.min(10, toMove - moved - failed), MOVE_HOLD_SECONDS);
      empty = batch.length === 0 ? empty + 1 : 0;
      if (batch.length === 0) continue;
      const sent = await target.sendCopies(batch);
      const unsent = batch.filter((m) => !sent.has(m.messageId));
      await deleteMoved(
        dlq,
        queues.dlqName,
        batch.filter((m) => sent.has(m.messageId)),
      );
      if (unsent.length > 0) await dlq.release(unsent).catch(() => undefined);
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

/** Sent on but not deleted: the daemon gets these twice; said loudly, the ledger keeps delivery single. */
async function deleteMoved(
  dlq: OperatorQueue,
  name: string,
  messages: readonly HeldMessage[],
): Promise<void> {
  if (messages.length === 0) return;
  const notDeleted = await dlq.remove(messages);
  if (notDeleted.length > 0) {
    throw new Error(
      `DeleteMessageBatch ${name}: ${plural(notDeleted.length, 'moved message')} could not be deleted and ` +
        'are in both queues (the ledger keeps delivery single)',
    );
  }
}
