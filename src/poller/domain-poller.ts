import { setMaxListeners } from 'node:events';
import type { Claim } from '../aws/effect-ledger.ts';
import type { MailQueue, QueueMessage } from '../aws/queue.ts';
import { backoffMs } from '../clock.ts';
import { errorMessage } from '../errors.ts';
import type { MessageOutcome } from '../pipeline/outcome.ts';
import type { PipelinePorts } from '../pipeline/ports.ts';
import { processMessage } from './pipeline-loader.ts';
import { DeleteBatcher } from './delete-batcher.ts';
import { startHeartbeat, type HeartbeatDeps } from './heartbeat.ts';
import { resolvePollerOptions, type PollerOptions, type ResolvedPollerOptions } from './options.ts';
import { OutcomeObserver } from './outcome-observer.ts';
import { decideRetry, type RetryDecision } from './retry-policy.ts';
import { settle, type SettleDeps } from './settle.ts';
import { Slots } from './slots.ts';

/** `held`: a deployment check (a table) failed; the domain receives nothing until it passes. */
export type PollerState = 'starting' | 'polling' | 'paused' | 'held' | 'stopping' | 'stopped';

export interface PollerStatus {
  domain: string;
  state: PollerState;
  /** Epoch ms of the last ReceiveMessage that returned (with or without messages). */
  lastPollAt?: number;
  /** Epoch ms when a message last finished: a poller busy with slow mail is alive though it is not polling. */
  lastActivityAt?: number;
  inFlight: number;
  /** Set while polling is paused because the mail server is unreachable or refuses the domain. */
  pausedReason?: string;
  /**
   * The mail server's reply while it says this deployment is wrong (relay denied, client rejected): mail is retried,
   * not ended, until a delivery gets through again.
   */
  degraded?: string;
  lastError?: string;
}

/**
 * The receive → process → settle loop of one domain (a small sqs-consumer). Messages are processed concurrently up
 * to `concurrency`; the retry policy decides what happens to each; finished ones are deleted in batches; when the
 * mail server is unreachable or refuses the domain the poller stops receiving for a while instead of burning
 * receives.
 */
export class DomainPoller {
  private readonly options: ResolvedPollerOptions;
  private readonly slots: Slots;
  private readonly batcher: DeleteBatcher;
  private readonly observer: OutcomeObserver;
  private readonly heartbeatDeps: HeartbeatDeps;
  private readonly settleDeps: SettleDeps;
  /** Aborts work that has not really started (waiting for memory budget, fetching) when stopping. */
  private readonly stopAbort = new AbortController();
  private stopping = false;
  private status: PollerStatus;
  private pauseUntil = 0;
  private pauseLevel = 0;
  /** The last receive came back full: more is waiting, so the further receivers poll too. */
  private backlog = false;
  private readonly backlogWaiters = new Set<() => void>();
  /** Why the domain must not receive (a failed table check), and the wake-up for when that ends. */
  private holdReason: string | undefined;
  private readonly holdWaiters = new Set<() => void>();

  constructor(
    private readonly queue: MailQueue,
    private readonly ports: PipelinePorts,
    options: PollerOptions,
    private readonly onStatus: (status: PollerStatus) => void = () => undefined,
  ) {
    this.options = resolvePollerOptions(options);
    const { domain, logger, metrics } = ports;
    this.slots = new Slots(this.options.concurrency);
    this.batcher = new DeleteBatcher(queue, logger, {
      onFailed: (count) => metrics.deleteFailed(domain, count),
    });
    this.observer = new OutcomeObserver({
      domain,
      logger,
      metrics,
      redact: ports.redact,
      onDegraded: (reply) => this.degrade(reply),
      ...(this.options.onTableFault && { onTableFault: this.options.onTableFault }),
    });
    this.heartbeatDeps = {
      queue,
      ledger: ports.ledger,
      domain,
      logger,
      metrics,
      visibilityTimeoutSeconds: this.options.visibilityTimeoutSeconds,
      heartbeatSeconds: this.options.heartbeatSeconds,
    };
    this.settleDeps = {
      queue,
      batcher: this.batcher,
      mailStore: ports.mailStore,
      domain,
      logger,
      clock: ports.clock,
    };
    this.status = { domain, state: 'starting', inFlight: 0 };
    // Every message in flight (and every one waiting for SES) listens for the stop: hundreds, by design.
    setMaxListeners(0, this.stopAbort.signal);
  }

  getStatus(): PollerStatus {
    return { ...this.status, inFlight: this.slots.busy };
  }

  /** Runs until `stop()`; resolves once in-flight work has finished. */
  async run(): Promise<void> {
    // The queue is resolved by now; waiting for the first long poll to return would keep /ready at 503 for 20 s.
    this.update({ state: 'polling' });
    await Promise.all(Array.from({ length: this.options.receivers }, (_, i) => this.receiveLoop(i === 0)));
    await this.slots.drained();
    await this.batcher.flush();
    this.update({ state: 'stopped' });
  }

  /** Stops receiving; in-flight messages finish. Await `run()`'s promise for the drain. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.update({ state: 'stopping' });
    this.stopAbort.abort();
    this.slots.wake();
    wakeAll(this.holdWaiters);
    this.noteBacklog(true);
  }

  /**
   * Stops receiving because the deployment is wrong (`reason` names the table and the problem), or, with
   * `undefined`, receives again. Messages in flight finish; the rest wait in SQS.
   */
  hold(reason: string | undefined): void {
    const wasHeld = this.holdReason !== undefined;
    this.holdReason = reason;
    if (reason !== undefined) {
      this.update({ state: 'held', lastError: reason });
      return;
    }
    if (wasHeld) {
      delete this.status.lastError;
      this.update({ state: 'polling' });
    }
    wakeAll(this.holdWaiters);
  }

  /**
   * One receiver. All but the first poll only while the queue has a backlog (the last receive came back full) and a
   * whole batch fits: an idle domain keeps a single long poll open, a busy one several.
   */
  private async receiveLoop(first: boolean): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      if (!first && !this.backlog) {
        await new Promise<void>((resolve) => this.backlogWaiters.add(resolve));
        continue;
      }
      await this.slots.waitFor(first ? 1 : this.options.maxMessages, () => this.stopping);
      if (this.stopping) break;
      if (await this.waitWhileHeldOrPaused()) continue;
      const room = Math.min(this.options.maxMessages, this.slots.free());
      if (room <= 0) continue;
      const received = await this.receive(room);
      if (received === 'stopped') break;
      if (received === 'failed') {
        failures += 1;
        await this.sleep(backoffMs(failures - 1, 500, 30_000));
        continue;
      }
      failures = 0;
      for (const message of received) this.slots.track(this.handle(message), () => this.noteActivity());
    }
  }

  /** True when it waited (held by a failed check, or paused): the caller looks at everything again. */
  private async waitWhileHeldOrPaused(): Promise<boolean> {
    if (this.holdReason !== undefined) {
      this.update({ state: 'held', lastError: this.holdReason });
      await new Promise<void>((resolve) => this.holdWaiters.add(resolve));
      return true;
    }
    const now = this.ports.clock.now();
    if (now >= this.pauseUntil) return false;
    this.update({ state: 'paused' });
    await this.sleep(this.pauseUntil - now);
    return true;
  }

  private async receive(room: number): Promise<QueueMessage[] | 'failed' | 'stopped'> {
    const unreserve = this.slots.reserve(room);
    try {
      // Never aborted: SQS keeps serving a long poll whose client went away, and hides whatever it hands to it
      // until the visibility timeout. Letting the poll end costs at most WAIT_TIME_SECONDS on shutdown; what it
      // returns is released at once.
      const messages = await this.queue.receive({
        maxMessages: room,
        waitTimeSeconds: this.options.waitTimeSeconds,
      });
      if (this.stopping) {
        await this.releaseReceived(messages);
        return 'stopped';
      }
      this.noteBacklog(messages.length >= room);
      delete this.status.lastError;
      this.update({ state: 'polling', lastPollAt: this.ports.clock.now() });
      return messages;
    } catch (error) {
      if (this.stopping) return 'stopped';
      this.update({ lastError: errorMessage(error) });
      this.ports.logger.error({ err: errorMessage(error) }, 'ReceiveMessage failed');
      return 'failed';
    } finally {
      unreserve();
    }
  }

  /** Received while stopping: make them visible again at once for another consumer. */
  private async releaseReceived(messages: QueueMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const entries = messages.map((m) => ({ messageId: m.messageId, receiptHandle: m.receiptHandle }));
    try {
      await this.queue.changeVisibilityBatch(entries, 0);
      this.ports.logger.info({ released: entries.length }, 'released messages received during shutdown');
    } catch (error) {
      this.ports.logger.warn(
        { err: errorMessage(error) },
        'could not release messages received during shutdown; they reappear after their visibility timeout',
      );
    }
  }

  private async handle(message: QueueMessage): Promise<void> {
    const { ports } = this;
    const started = ports.clock.now();
    ports.metrics.inFlight(ports.domain, 1);
    const outcome = await this.process(message).finally(() => ports.metrics.inFlight(ports.domain, -1));
    const decision = decideRetry(outcome, message.receiveCount, this.options.retry);
    this.observer.observe({ message, outcome, decision, durationMs: ports.clock.now() - started });
    this.react(decision);
    try {
      await settle(message, outcome, decision, this.settleDeps);
    } catch (error) {
      ports.logger.error(
        { sqsMessageId: message.messageId, err: errorMessage(error) },
        'could not settle the SQS message; it will reappear after its visibility timeout',
      );
    }
  }

  /** The pipeline, with the heartbeat running and the message's claims renewed while it works. */
  private async process(message: QueueMessage): Promise<MessageOutcome> {
    const liveClaims = new Set<Claim>();
    const stopHeartbeat = startHeartbeat(message, liveClaims, this.heartbeatDeps);
    try {
      return await processMessage(message, this.ports, {
        signal: this.stopAbort.signal,
        liveClaims,
        onWait: (waiting) => this.slots.park(waiting),
      });
    } finally {
      await stopHeartbeat();
    }
  }

  /** What the decision means for receiving: a delivery gets through, or more mail would only meet the same fault. */
  private react(decision: RetryDecision): void {
    if (decision.action === 'delete') this.pauseLevel = 0;
    else if (decision.reason === 'unreachable') this.pause('mail server unreachable');
  }

  private degrade(reply: string | undefined): void {
    if (reply === undefined) {
      delete this.status.degraded;
      this.update({});
      return;
    }
    this.update({ degraded: reply });
    this.pause('mail server refuses the domain');
  }

  private pause(reason: string): void {
    const now = this.ports.clock.now();
    if (now < this.pauseUntil) return;
    this.pauseUntil = now + backoffMs(this.pauseLevel, 2_000, 60_000);
    this.pauseLevel += 1;
    this.ports.logger.warn({ pauseMs: this.pauseUntil - now, reason }, 'pausing polling');
    this.update({ pausedReason: reason });
  }

  private async sleep(ms: number): Promise<void> {
    try {
      await this.ports.clock.sleep(ms, this.stopAbort.signal);
    } catch {
      // Aborted by stop().
    }
    if (this.ports.clock.now() >= this.pauseUntil) delete this.status.pausedReason;
  }

  private noteBacklog(full: boolean): void {
    this.backlog = full;
    if (full) wakeAll(this.backlogWaiters);
  }

  private noteActivity(): void {
    this.update({ lastActivityAt: this.ports.clock.now() });
  }

  private update(patch: Partial<PollerStatus>): void {
    this.status = { ...this.status, ...patch };
    this.onStatus(this.getStatus());
  }
}

function wakeAll(waiters: Set<() => void>): void {
  const all = [...waiters];
  waiters.clear();
  for (const wake of all) wake();
}
