import type { SQSClient } from '@aws-sdk/client-sqs';
import { backoffMs, type Clock } from '../clock.ts';
import { errorMessage, WorkerError } from '../errors.ts';
import type { Logger } from '../log/logger.ts';
import { createSqsQueue, resolveQueueUrl, type MailQueue, type QueueMessage } from '../aws/queue.ts';
import type { AwsDeadlines } from '../aws/deadlines.ts';
import { parseOutboundEvent, type OutboundEvent } from './outbound-event.ts';
import type { ConsumerState, OutboundMetrics } from './outbound-metrics.ts';
import type { OutboundWriter } from './outbound-writer.ts';

export interface OutboundConsumerOptions {
  sqs: SQSClient;
  /** The AWS deadlines the events queue's calls get (default: the daemon's defaults). */
  deadlines?: AwsDeadlines;
  records: OutboundWriter;
  /** OUTBOUND_EVENTS_QUEUE. */
  queueName: string;
  waitTimeSeconds: number;
  clock: Clock;
  logger: Logger;
  metrics: OutboundMetrics;
  /** How often a missing queue is looked for again. */
  recheckMs?: number;
}

/** For /health and /ready: shown, never a reason to be unready (delivery does not depend on it). */
export interface OutboundConsumerStatus {
  state: ConsumerState;
  queue: string;
  lastError?: string;
}

/** Visibility (seconds) of an event whose write failed, by receive count: as the domain queues retry. */
const RETRY_SCHEDULE = [30, 60, 120, 300, 600, 900] as const;
const MAX_MESSAGES = 10;

/**
 * The one consumer of SES sending events per process: it records each mail sent out through SES in the outbound
 * table (src/outbound/outbound-writer.ts), so the bounce stage can rewrite its bounce, and deletes an event only
 * after its record was written. It runs in the main thread: an event costs one JSON parse and a share of one
 * DynamoDB call, nothing a domain thread's isolation is needed for. Nothing here ends the process or touches mail
 * delivery: a missing queue, failing calls, even a bug are logged, counted and retried.
 */
export class OutboundEventsConsumer {
  private state: ConsumerState = 'starting';
  private lastError: string | undefined;
  private queue: MailQueue | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private failures = 0;
  /** Wakes the loop from a pause when stopping. */
  private readonly wake = new AbortController();
  /** Cancels calls in flight once the grace period is over. */
  private readonly cancel = new AbortController();
  private readonly logger: Logger;
  private readonly recheckMs: number;

  constructor(private readonly options: OutboundConsumerOptions) {
    this.logger = options.logger.child({ component: 'outbound-events', queue: options.queueName });
    this.recheckMs = options.recheckMs ?? 30_000;
    options.metrics.state('starting');
  }

  start(): void {
    this.loop ??= this.run();
  }

  status(): OutboundConsumerStatus {
    return {
      state: this.state,
      queue: this.options.queueName,
      ...(this.lastError !== undefined && this.state !== 'consuming' && { lastError: this.lastError }),
    };
  }

  /** Ends the long poll at once, lets a batch being recorded finish within `graceMs`, then cancels the rest. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.wake.abort();
    if (this.loop) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.loop.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        this.cancel.abort();
        await this.loop;
      }
    }
    this.enter('stopped');
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      try {
        if (this.queue) await this.pollOnce(this.queue);
        else await this.connect();
      } catch (error) {
        // A bug here must not end the loop, let alone the process that delivers the mail.
        this.logger.error({ err: describe(error) }, 'outbound events consumer failed unexpectedly; going on');
        await this.pause(backoffMs(Math.min(this.failures++, 6), 1_000, 60_000));
      }
    }
  }

  private async connect(): Promise<void> {
    const { sqs, queueName, metrics } = this.options;
    let queue: MailQueue;
    try {
      queue = createSqsQueue(
        sqs,
        await resolveQueueUrl(sqs, queueName, this.cancel.signal),
        this.options.deadlines,
      );
    } catch (error) {
      metrics.failure('get-queue-url');
      if (isMissingQueue(error)) {
        this.enter('queue-missing', describe(error));
        await this.pause(this.recheckMs);
      } else {
        this.enter('failing', describe(error));
        await this.pause(backoffMs(Math.min(this.failures++, 6), 1_000, 60_000));
      }
      return;
    }
    const info = await queue.attributes().catch(() => undefined);
    if (info && !info.hasRedrivePolicy) {
      this.logger.warn(
        'the SES events queue has no redrive policy: a malformed event comes back every visibility timeout, for ' +
          'ever, instead of moving to a dead-letter queue',
      );
    }
    this.queue = queue;
    this.logger.info('recording SES sending events in the outbound table');
  }

  private async pollOnce(queue: MailQueue): Promise<void> {
    let messages: QueueMessage[];
    try {
      // The stop ends the long poll at once (waking the pause too); a batch being recorded gets the grace period.
      messages = await queue.receive({
        maxMessages: MAX_MESSAGES,
        waitTimeSeconds: this.options.waitTimeSeconds,
        signal: AbortSignal.any([this.cancel.signal, this.wake.signal]),
      });
    } catch (error) {
      if (this.stopping) return;
      this.options.metrics.failure('receive');
      if (isMissingQueue(error)) {
        this.queue = undefined;
        this.enter('queue-missing', describe(error));
        return;
      }
      this.enter('failing', describe(error));
      await this.pause(backoffMs(Math.min(this.failures++, 6), 1_000, 60_000));
      return;
    }
    this.failures = 0;
    this.enter('consuming');
    if (messages.length > 0) await this.handle(queue, messages);
  }

  /** Records what is recordable, then deletes what was recorded or needs no record. */
  private async handle(queue: MailQueue, messages: readonly QueueMessage[]): Promise<void> {
    const { metrics } = this.options;
    const done: QueueMessage[] = [];
    const pending: Array<{ message: QueueMessage; event: OutboundEvent }> = [];
    for (const message of messages) {
      const parsed = parseOutboundEvent(message.body);
      if (parsed.kind === 'record') {
        pending.push({ message, event: parsed.event });
      } else if (parsed.kind === 'ignore') {
        metrics.event(parsed.type, 'ignored');
        done.push(message);
      } else {
        metrics.event(parsed.type, 'malformed');
        this.logger.error(
          { sqsMessageId: message.messageId, receiveCount: message.receiveCount, reason: parsed.reason },
          'malformed SES sending event: left in the queue for its dead-letter queue',
        );
      }
    }
    const results = await this.options.records.write(
      pending.map((p) => p.event),
      this.cancel.signal,
    );
    const failed: QueueMessage[] = [];
    pending.forEach(({ message, event }, i) => {
      const error = results[i];
      metrics.event(event.type, error ? 'failed' : 'recorded');
      if (error) failed.push(message);
      else done.push(message);
    });
    this.logOutcome(pending, results);
    if (failed.length > 0) await this.retryLater(queue, failed);
    const notDeleted = await queue.deleteBatch(done);
    if (notDeleted.length > 0) {
      metrics.failure('delete');
      this.logger.warn(
        { count: notDeleted.length },
        'SQS did not delete recorded SES events: they come back and are written again (the same record)',
      );
    }
  }

  private logOutcome(
    pending: ReadonlyArray<{ event: OutboundEvent }>,
    results: ReadonlyArray<WorkerError | undefined>,
  ): void {
    const recorded = pending.filter((_, i) => !results[i]);
    if (recorded.length > 0) {
      this.logger.info(
        { events: recorded.map(({ event }) => ({ type: event.type, sesMessageId: event.messageId })) },
        'SES sending events recorded',
      );
    }
    const firstError = results.find((r) => r !== undefined);
    if (firstError) {
      this.logger.warn(
        { err: firstError.toJSON(), count: pending.length - recorded.length },
        'could not record SES sending events: they are retried later',
      );
    }
  }

  private async retryLater(queue: MailQueue, messages: readonly QueueMessage[]): Promise<void> {
    const bySeconds = new Map<number, QueueMessage[]>();
    for (const message of messages) {
      const seconds = RETRY_SCHEDULE[Math.min(message.receiveCount, RETRY_SCHEDULE.length) - 1] ?? 30;
      bySeconds.set(seconds, [...(bySeconds.get(seconds) ?? []), message]);
    }
    for (const [seconds, group] of bySeconds) {
      // Failing here costs nothing: the events come back after the queue's own visibility timeout instead.
      await queue.changeVisibilityBatch(group, seconds).catch(() => {
        this.options.metrics.failure('change-visibility');
      });
    }
  }

  /** Changes the state, logging each change into a problem once (the metric shows it for as long as it lasts). */
  private enter(state: ConsumerState, error?: string): void {
    if (error !== undefined) this.lastError = error;
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.options.metrics.state(state);
    if (state === 'queue-missing') {
      this.logger.warn(
        { err: error },
        `OUTBOUND_EVENTS_QUEUE ${this.options.queueName} does not exist: mail sent through SES is not recorded ` +
          'and its bounces are delivered unchanged. Create it (the AWS app does) or set OUTBOUND_EVENTS_QUEUE=none; ' +
          `looking again every ${Math.round(this.recheckMs / 1000)} s (mail delivery is not affected)`,
      );
    } else if (state === 'failing') {
      this.logger.warn(
        { err: error },
        'cannot receive SES sending events; retrying (mail delivery is not affected)',
      );
    } else if (state === 'consuming' && (previous === 'failing' || previous === 'queue-missing')) {
      this.logger.info('receiving SES sending events again');
    }
  }

  private async pause(ms: number): Promise<void> {
    if (this.stopping) return;
    await this.options.clock.sleep(ms, this.wake.signal).catch(() => undefined);
  }
}

function isMissingQueue(error: unknown): boolean {
  const code = error instanceof WorkerError ? error.awsCode : undefined;
  return code === 'QueueDoesNotExist' || code === 'AWS.SimpleQueueService.NonExistentQueue';
}

function describe(error: unknown): string {
  const message = errorMessage(error);
  return message.length > 300 ? `${message.slice(0, 300)}…` : message;
}
