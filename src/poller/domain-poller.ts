import { setMaxListeners } from 'node:events';
import type { Claim } from '../aws/effect-ledger.ts';
import type { MailQueue, QueueMessage } from '../aws/queue.ts';
import { backoffMs } from '../clock.ts';
import { errorMessage } from '../errors.ts';
import type { Component, MessageOutcome } from '../pipeline/outcome.ts';
import type { PipelinePorts } from '../pipeline/ports.ts';
import { processMessage } from './pipeline-loader.ts';
import { DeleteBatcher } from './delete-batcher.ts';
import { assumedUp, type MailServerWatch } from './mail-server-watch.ts';
import { startHeartbeat, type HeartbeatDeps } from './heartbeat.ts';
import { resolvePollerOptions, type PollerOptions, type ResolvedPollerOptions } from './options.ts';
import { OutcomeObserver } from './outcome-observer.ts';
import { ParkingLot } from './parking.ts';
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
  private readonly parking: ParkingLot;
  private probeTimer: NodeJS.Timeout | undefined;
  private readonly stopWatching: () => void;
  /** Wakes the receivers waiting for the mail server to answer again. */
  private readonly serverWaiters = new Set<() => void>();
  private degradedBy = new Map<Component, string>();
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
    private readonly mailServer: MailServerWatch = assumedUp,
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
      onDegraded: (component, reply) => this.degrade(component, reply),
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
    this.parking = new ParkingLot(queue, logger, {
      capacity: this.options.outage.parkCapacity,
      holdSeconds: this.options.outage.holdSeconds,
    });
    this.stopWatching = mailServer.onChange((up) => this.mailServerChanged(up));
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
    this.probeTimer = setInterval(() => void this.probe(), this.options.outage.probeSeconds * 1000);
    await Promise.all(Array.from({ length: this.options.receivers }, (_, i) => this.receiveLoop(i === 0)));
    await this.slots.drained();
    clearInterval(this.probeTimer);
    this.stopWatching();
    await Promise.all([this.batcher.flush(), this.parking.releaseAll()]);
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
    wakeAll(this.serverWaiters);
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
      for (const message of received) void this.tracked(message);
      if (first && received.length === 0) await this.sleepToNextStep();
    }
  }

  /**
   * An idle domain's next poll waits for the clock's next step, the same for every idle poll of the process. The
   * further receivers poll only while a backlog lasts, which an empty receive ends: they need no step.
   */
  private async sleepToNextStep(): Promise<void> {
    const step = this.options.idlePollAlignMs;
    if (step > 0) await this.sleep((step - (this.ports.clock.now() % step)) % step);
  }

  /** True when it waited (held by a failed check, or paused): the caller looks at everything again. */
  private async waitWhileHeldOrPaused(): Promise<boolean> {
    if (this.holdReason !== undefined) {
      this.update({ state: 'held', lastError: this.holdReason });
      await new Promise<void>((resolve) => this.holdWaiters.add(resolve));
      return true;
    }
    if (!this.mailServer.up) {
      // Mail received now could only fail: it waits in the queue, its receive count untouched.
      this.update({ state: 'paused', pausedReason: 'mail server unreachable' });
      await new Promise<void>((resolve) => this.serverWaiters.add(resolve));
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
      // Aborted on stop, so an idle domain stops at once. SQS may still hand a message to the poll it no longer has
      // a client for: that one reappears after its visibility timeout (late, never lost); what a poll that ended
      // returns while stopping is released at once.
      const messages = await this.queue.receive({
        maxMessages: room,
        waitTimeSeconds: this.options.waitTimeSeconds,
        signal: this.stopAbort.signal,
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

  /** One attempt at a message (just received, or held for an outage and retried in place); returns the decision. */
  private async handle(message: QueueMessage): Promise<RetryDecision> {
    const { ports } = this;
    const started = ports.clock.now();
    ports.metrics.inFlight(ports.domain, 1);
    const outcome = await this.process(message).finally(() => ports.metrics.inFlight(ports.domain, -1));
    const decision = decideRetry(outcome, message.receiveCount, this.options.retry, this.parking.hasRoom());
    this.observer.observe({ message, outcome, decision, durationMs: ports.clock.now() - started });
    this.react(decision);
    try {
      if (decision.action === 'park') await this.parking.park(message, decision.component ?? 'mail-server');
      else await settle(message, outcome, decision, this.settleDeps);
    } catch (error) {
      ports.logger.error(
        { sqsMessageId: message.messageId, err: errorMessage(error) },
        'could not settle the SQS message; it will reappear after its visibility timeout',
      );
    }
    return decision;
  }

  /** The mail server answers again: the mail held for it is taken up at once, and receiving resumes. */
  private mailServerChanged(up: boolean): void {
    if (!up || this.stopping) return;
    delete this.status.pausedReason;
    wakeAll(this.serverWaiters);
    this.retryHeld(this.parking.take('mail-server'));
  }

  /**
   * Every probe interval, one held message per component is tried again in place; when it is no longer held up by
   * that component, the rest of its mail follows.
   */
  private async probe(): Promise<void> {
    if (this.stopping) return;
    await Promise.all(
      (['mail-server', 'ses'] as const).map(async (component) => {
        const [first] = this.parking.take(component, 1);
        if (!first) return;
        await this.slots.waitFor(1, () => this.stopping);
        const decision = await this.tracked(first);
        if (decision.action !== 'park' || decision.component !== component)
          this.retryHeld(this.parking.take(component));
      }),
    );
  }

  /** Held messages back into processing, each when a slot is free. */
  private retryHeld(messages: QueueMessage[]): void {
    if (messages.length === 0) return;
    this.ports.logger.info({ messages: messages.length }, 'retrying held mail in place');
    void (async () => {
      for (const message of messages) {
        await this.slots.waitFor(1, () => this.stopping);
        void this.tracked(message);
      }
    })();
  }

  /** `handle` holding a slot. */
  private tracked(message: QueueMessage): Promise<RetryDecision> {
    const work = this.handle(message);
    this.slots.track(
      work.then(
        () => undefined,
        () => undefined,
      ),
      () => this.noteActivity(),
    );
    return work;
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

  /**
   * A component says the deployment is wrong (or no longer does). The mail server refusing pauses receiving (every
   * mail would meet the same answer); SES refusing does not: the mailbox copies go on, forwards and replies wait.
   */
  private degrade(component: Component, reply: string | undefined): void {
    if (reply === undefined) this.degradedBy.delete(component);
    else this.degradedBy.set(component, reply);
    // It takes mail again: what was held for it need not wait for the next probe.
    if (reply === undefined) this.retryHeld(this.parking.take(component));
    const mailServer = this.degradedBy.get('mail-server');
    const ses = this.degradedBy.get('ses');
    const text = [mailServer, ses === undefined ? undefined : `SES: ${ses}`]
      .filter((t) => t !== undefined)
      .join('; ');
    if (text === '') delete this.status.degraded;
    this.update(text === '' ? {} : { degraded: text });
    if (component === 'mail-server' && reply !== undefined) this.pause('mail server refuses the domain');
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
