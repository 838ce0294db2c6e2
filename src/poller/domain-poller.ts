import { setMaxListeners } from 'node:events';
import { backoffMs } from '../clock.ts';
import type { Claim } from '../aws/effect-ledger.ts';
import { gaveUpMetadata } from '../aws/audit-metadata.ts';
import type { MailQueue, QueueMessage } from '../aws/queue.ts';
import { processMessage, type MessageOutcome } from '../pipeline/process-message.ts';
import type { PipelinePorts } from '../pipeline/ports.ts';
import { DeleteBatcher } from './delete-batcher.ts';

/** How many messages waiting for SES may stand in for one processing slot. */
const PARKED_PER_SLOT = 10;

export interface PollerOptions {
  waitTimeSeconds: number;
  maxMessages: number;
  /** Messages processed at once. */
  concurrency: number;
  /**
   * Long polls at once. One receive returns at most `maxMessages` after a round trip, so a single poll in flight
   * caps the intake at maxMessages per round trip however large `concurrency` is; each further receiver only
   * polls while there is room for a full batch. Default: one per `4 × maxMessages` of concurrency, at least 1.
   */
  receivers?: number;
  /** Visibility (seconds) given to a message after a temporary failure, by receive count (last entry repeats). */
  retrySchedule: readonly number[];
  /**
   * At this receive count a still-failing message is marked failed in S3 (once) before the redrive takes it: the
   * queue's maxReceiveCount when it has a redrive policy, else MAX_RECEIVES.
   */
  maxReceives: number;
  /**
   * Whether the queue moves a message to a dead-letter queue after maxReceives. Without that, a message past it
   * keeps coming back: at the longest retry delay, not every visibility timeout.
   */
  hasRedrivePolicy?: boolean;
  /** The queue's visibility timeout; messages still being processed get it renewed every third of it. */
  visibilityTimeoutSeconds: number;
  /**
   * Retry delay for a message held up only by other workers' ledger claims: the claim lease, after which a dead
   * worker's claim can be taken over (the regular schedule would wait longer than needed).
   */
  claimedRetrySeconds?: number;
  /** A table call failed as a missing or misshapen table would: the tables should be checked again now. */
  onTableFault?: (awsCode: string) => void;
}

/** `error`: held by a failed deployment check (a table); the domain receives nothing until it passes. */
export type PollerState = 'starting' | 'polling' | 'paused' | 'error' | 'stopping' | 'stopped';

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
 * The receive → process → delete loop of one domain (a small sqs-consumer). Messages are processed concurrently up
 * to `concurrency`; finished ones are deleted in batches; temporary failures get a growing visibility timeout;
 * when the mail server is unreachable the poller stops receiving for a while instead of burning receives.
 */
export class DomainPoller {
  private readonly batcher: DeleteBatcher;
  private readonly inFlight = new Set<Promise<void>>();
  /** Aborts work that has not really started (waiting for memory budget, fetching) when stopping. */
  private readonly stopAbort = new AbortController();
  private stopping = false;
  private status: PollerStatus;
  private pauseUntil = 0;
  private pauseLevel = 0;
  /** Wakes every receiver waiting for room. */
  private readonly slotWaiters = new Set<() => void>();
  /** Slots promised to receives in flight, so two receivers never over-fill `concurrency`. */
  private reserved = 0;
  /** The last receive came back full: more is waiting, so the further receivers poll too. */
  private backlog = false;
  private readonly backlogWaiters = new Set<() => void>();
  /** Messages waiting for an SES send permit: they hold no slot, up to PARKED_PER_SLOT per slot. */
  private parked = 0;
  /** Why the domain must not receive (a failed table check), and the wake-up for when that ends. */
  private holdReason: string | undefined;
  private readonly holdWaiters = new Set<() => void>();

  constructor(
    private readonly queue: MailQueue,
    private readonly ports: PipelinePorts,
    private readonly options: PollerOptions,
    private readonly onStatus: (status: PollerStatus) => void = () => undefined,
  ) {
    this.batcher = new DeleteBatcher(queue, ports.logger, {
      onFailed: (count) => ports.metrics.deleteFailed(ports.domain, count),
    });
    this.status = { domain: ports.domain, state: 'starting', inFlight: 0 };
    // Every message in flight (and every one waiting for SES) listens for the stop: hundreds, by design.
    setMaxListeners(0, this.stopAbort.signal);
  }

  getStatus(): PollerStatus {
    return { ...this.status, inFlight: this.inFlight.size };
  }

  /** Runs until `stop()`; resolves once in-flight work has finished (or the grace deadline passed). */
  async run(): Promise<void> {
    // The queue is resolved by now; waiting for the first long poll to return would keep /ready at 503 for 20 s.
    this.update({ state: 'polling' });
    const receivers =
      this.options.receivers ??
      Math.max(1, Math.floor(this.options.concurrency / (4 * this.options.maxMessages)));
    await Promise.all(Array.from({ length: receivers }, (_, i) => this.receiveLoop(i === 0)));
    await Promise.allSettled([...this.inFlight]);
    await this.batcher.flush();
    this.update({ state: 'stopped' });
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
      await this.waitForSlot(first ? 1 : this.options.maxMessages);
      if (this.stopping) break;
      if (this.holdReason !== undefined) {
        this.update({ state: 'error', lastError: this.holdReason });
        await new Promise<void>((resolve) => this.holdWaiters.add(resolve));
        continue;
      }
      const now = this.ports.clock.now();
      if (now < this.pauseUntil) {
        this.update({ state: 'paused' });
        await this.sleep(this.pauseUntil - now);
        continue;
      }
      const room = Math.min(this.options.maxMessages, this.freeSlots());
      if (room <= 0) continue;
      this.reserved += room;
      let messages: QueueMessage[];
      try {
        // Never aborted: SQS keeps serving a long poll whose client went away, and hides whatever it hands to
        // it until the visibility timeout (measured on fauxqs). Letting the poll end costs at most
        // WAIT_TIME_SECONDS on shutdown; what it returns is released at once.
        messages = await this.queue.receive({
          maxMessages: room,
          waitTimeSeconds: this.options.waitTimeSeconds,
        });
        if (this.stopping) {
          await this.releaseUnstarted(messages);
          break;
        }
        failures = 0;
        this.noteBacklog(messages.length >= room);
        this.update({ state: 'polling', lastPollAt: this.ports.clock.now() });
        delete this.status.lastError;
      } catch (error) {
        if (this.stopping) break;
        failures += 1;
        const message = error instanceof Error ? error.message : String(error);
        this.update({ lastError: message });
        this.ports.logger.error({ err: message, attempt: failures }, 'ReceiveMessage failed');
        await this.sleep(backoffMs(failures - 1, 500, 30_000));
        continue;
      } finally {
        this.reserved -= room;
      }
      for (const message of messages) this.track(this.handle(message));
    }
  }

  /** Stops receiving; in-flight messages finish. Call `run()`'s promise to wait for the drain. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.update({ state: 'stopping' });
    this.stopAbort.abort();
    this.wakeReceivers();
    this.liftHold();
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
      this.update({ state: 'error', lastError: reason });
      return;
    }
    if (wasHeld) {
      delete this.status.lastError;
      this.update({ state: 'polling' });
    }
    this.liftHold();
  }

  /** Received while stopping: make them visible again at once for another consumer. */
  private async releaseUnstarted(messages: QueueMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const entries = messages.map((m) => ({ messageId: m.messageId, receiptHandle: m.receiptHandle }));
    try {
      await this.queue.changeVisibilityBatch(entries, 0);
      this.ports.logger.info({ released: entries.length }, 'released messages received during shutdown');
    } catch (error) {
      this.ports.logger.warn(
        { err: error instanceof Error ? error.message : String(error) },
        'could not release messages received during shutdown; they reappear after their visibility timeout',
      );
    }
  }

  private track(work: Promise<void>): void {
    this.inFlight.add(work);
    void work.finally(() => {
      this.inFlight.delete(work);
      this.update({ lastActivityAt: this.ports.clock.now() });
      this.wakeReceivers();
    });
  }

  private freeSlots(): number {
    const parked = Math.min(this.parked, PARKED_PER_SLOT * this.options.concurrency);
    return this.options.concurrency - (this.inFlight.size - parked) - this.reserved;
  }

  /**
   * A message waiting for SES (a burst of forwards beyond the account's rate) only waits: its slot goes to the
   * next message, whose local delivery need not wait for someone else's forward. The byte budget still bounds the
   * memory parked messages hold.
   */
  private park(waiting: boolean): void {
    this.parked += waiting ? 1 : -1;
    if (waiting) this.wakeReceivers();
  }

  private async waitForSlot(needed: number): Promise<void> {
    while (!this.stopping && this.freeSlots() < needed) {
      await new Promise<void>((resolve) => this.slotWaiters.add(resolve));
    }
  }

  private noteBacklog(full: boolean): void {
    this.backlog = full;
    if (!full) return;
    const waiters = [...this.backlogWaiters];
    this.backlogWaiters.clear();
    for (const wake of waiters) wake();
  }

  private liftHold(): void {
    const waiters = [...this.holdWaiters];
    this.holdWaiters.clear();
    for (const wake of waiters) wake();
  }

  private wakeReceivers(): void {
    const waiters = [...this.slotWaiters];
    this.slotWaiters.clear();
    for (const wake of waiters) wake();
  }

  private async handle(message: QueueMessage): Promise<void> {
    const { ports } = this;
    const started = ports.clock.now();
    ports.metrics.inFlight(ports.domain, 1);
    const liveClaims = new Set<Claim>();
    const stopHeartbeat = this.heartbeat(message, liveClaims);
    let outcome: MessageOutcome;
    try {
      outcome = await processMessage(message, ports, {
        signal: this.stopAbort.signal,
        liveClaims,
        onWait: (waiting) => this.park(waiting),
      });
    } finally {
      await stopHeartbeat();
      ports.metrics.inFlight(ports.domain, -1);
    }
    const durationMs = ports.clock.now() - started;
    this.count(outcome, durationMs);
    this.log(message, outcome, durationMs);
    this.noteDeployment(outcome);
    try {
      await this.settle(message, outcome);
    } catch (error) {
      ports.logger.error(
        { sqsMessageId: message.messageId, err: error instanceof Error ? error.message : String(error) },
        'could not settle the SQS message; it will reappear after its visibility timeout',
      );
    }
  }

  private async settle(message: QueueMessage, outcome: MessageOutcome): Promise<void> {
    const entry = { messageId: message.messageId, receiptHandle: message.receiptHandle };
    if (outcome.disposition === 'delete') {
      this.pauseLevel = 0;
      this.batcher.add(entry);
      return;
    }
    if (outcome.disposition === 'dead-letter') return;
    if (outcome.disposition === 'release') {
      await this.queue.changeVisibility(entry, 0);
      return;
    }
    if (mailServerUnreachable(outcome)) this.pause('mail server unreachable');
    const schedule = this.options.retrySchedule;
    if (message.receiveCount >= this.options.maxReceives) {
      await this.giveUp(message, outcome);
      // With a redrive policy the queue moves the message to the dead-letter queue at its next receive.
      if (this.options.hasRedrivePolicy !== false) return;
      await this.queue.changeVisibility(entry, schedule[schedule.length - 1] ?? 900);
      return;
    }
    let seconds = schedule[Math.min(message.receiveCount - 1, schedule.length - 1)] ?? 30;
    if (outcome.waitingOnClaims && this.options.claimedRetrySeconds !== undefined) {
      seconds = Math.min(seconds, this.options.claimedRetrySeconds);
    }
    await this.queue.changeVisibility(entry, seconds);
  }

  /** Marks the mail failed in S3 the first time it reaches maxReceives (not again on every later receive). */
  private async giveUp(message: QueueMessage, outcome: MessageOutcome): Promise<void> {
    const { ports } = this;
    if (outcome.failureRecorded) return;
    ports.logger.error(
      { sesMessageId: outcome.sesMessageId, receiveCount: message.receiveCount, reason: outcome.reason },
      this.options.hasRedrivePolicy === false
        ? 'message reached MAX_RECEIVES; the queue has no redrive policy, so it keeps coming back at the longest retry delay'
        : 'message reached MAX_RECEIVES; the queue will redrive it to the dead-letter queue',
    );
    if (!outcome.mailLocation) return;
    await ports.mailStore.updateMetadata(
      outcome.mailLocation,
      gaveUpMetadata(
        ports.clock.now(),
        ports.domain,
        `gave up after ${message.receiveCount} receives: ${outcome.reason ?? outcome.status}`,
      ),
    );
  }

  /**
   * Keeps a slow message (a large mail, a slow mail server) invisible while it is processed, so no second consumer
   * starts it; SQS would otherwise hand it out again when the visibility timeout runs out mid-delivery. Each beat
   * also renews the lease of the message's live ledger claims, so a slow delivery is never taken over either.
   */
  private heartbeat(message: QueueMessage, liveClaims: ReadonlySet<Claim>): () => Promise<void> {
    const timeout = this.options.visibilityTimeoutSeconds;
    const everyMs = Math.max(1000, Math.floor((timeout * 1000) / 3));
    const entry = { messageId: message.messageId, receiptHandle: message.receiptHandle };
    let beat: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      const visibility = this.queue.changeVisibility(entry, timeout).catch((error: unknown) => {
        this.ports.metrics.heartbeatFailed(this.ports.domain);
        this.ports.logger.warn(
          { sqsMessageId: message.messageId, err: error instanceof Error ? error.message : String(error) },
          'visibility heartbeat failed',
        );
      });
      beat = Promise.all([visibility, ...[...liveClaims].map((claim) => this.renew(claim))]);
    }, everyMs);
    // A beat still on its way must land before settle() sets the retry visibility, not after it.
    return async () => {
      clearInterval(timer);
      await beat;
    };
  }

  private async renew(claim: Claim): Promise<void> {
    const { ports } = this;
    try {
      if (await ports.ledger.renew(claim)) return;
      ports.metrics.ledgerError(ports.domain, 'renew');
      ports.logger.error(
        { key: claim.key },
        'ledger claim lost while its effect is in progress (the lease ran out and another worker took over)',
      );
    } catch (error) {
      ports.metrics.ledgerError(ports.domain, 'renew');
      ports.logger.warn(
        { key: claim.key, err: error instanceof Error ? error.message : String(error) },
        'could not renew a ledger claim',
      );
    }
  }

  private count(outcome: MessageOutcome, durationMs: number): void {
    const { metrics, domain } = this.ports;
    metrics.processed(domain, outcome.status);
    metrics.processingSeconds(domain, durationMs / 1000);
    for (const r of outcome.recipients) metrics.recipientOutcome(domain, r.state);
    for (const e of outcome.effects) metrics.effect(domain, e.kind, e.status);
  }

  /**
   * A reply saying the deployment is wrong degrades the domain (shown by /health, /ready 503, a metric) and pauses
   * polling like an unreachable server: every further mail would only get the same answer. A delivery that gets
   * through ends it. A table fault asks for the table checks to run again.
   */
  private noteDeployment(outcome: MessageOutcome): void {
    const { ports } = this;
    if (outcome.tableFault !== undefined) this.options.onTableFault?.(outcome.tableFault);
    if (outcome.deploymentFault !== undefined) {
      ports.metrics.deploymentFault(ports.domain, 'smtp');
      ports.metrics.deploymentCheck(ports.domain, 'smtp', true);
      if (this.status.degraded === undefined) {
        ports.logger.error(
          { sesMessageId: outcome.sesMessageId, reply: outcome.deploymentFault },
          "the mail server refuses this domain's mail as misconfigured; mail is kept and retried until it accepts it",
        );
      }
      this.update({ degraded: outcome.deploymentFault });
      this.pause('mail server refuses the domain');
    } else if (outcome.serverAccepted && this.status.degraded !== undefined) {
      ports.metrics.deploymentCheck(ports.domain, 'smtp', false);
      ports.logger.info('the mail server accepts mail for this domain again');
      delete this.status.degraded;
      this.update({});
    }
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

  private update(patch: Partial<PollerStatus>): void {
    this.status = { ...this.status, ...patch };
    this.onStatus(this.getStatus());
  }

  private log(message: QueueMessage, outcome: MessageOutcome, durationMs: number): void {
    // `domain` comes from the logger's child binding (domain-runtime.ts).
    const { logger, redact } = this.ports;
    const line = {
      sesMessageId: outcome.sesMessageId,
      sqsMessageId: message.messageId,
      receiveCount: message.receiveCount,
      status: outcome.status,
      disposition: outcome.disposition,
      recipients: outcome.recipients.map((r) => ({
        recipient: redact(r.recipient),
        state: r.state,
        ...(r.code !== undefined && { code: r.code }),
        // A delivery now carries the server's 250 (noise); one from an earlier attempt says so.
        ...((r.state !== 'delivered' || r.code === undefined) &&
          r.detail !== undefined && { detail: r.detail }),
      })),
      ...(outcome.effects.length > 0 && {
        effects: outcome.effects.map((e) => ({
          kind: e.kind,
          recipient: redact(e.recipient),
          ...(e.target && { target: redact(e.target) }),
          ...(e.route && { route: e.route }),
          status: e.status,
          ...(e.reason !== undefined && { reason: e.reason }),
        })),
      }),
      ...(outcome.bounceRewritten && { bounceRewritten: true }),
      ...(outcome.loopMarker && { loopMarker: true }),
      ...(outcome.limits && { limits: outcome.limits }),
      ...(outcome.reason !== undefined && { reason: outcome.reason }),
      durationMs,
    };
    if (outcome.status === 'malformed')
      logger.error(line, 'malformed SQS message left for the dead-letter queue');
    else if (outcome.disposition === 'release') logger.info(line, 'message released for another consumer');
    else if (outcome.disposition === 'retry') logger.warn(line, 'message deferred');
    else if (outcome.status === 'failed') logger.error(line, 'message failed permanently');
    else logger.info(line, 'message processed');
  }
}

/** Every recipient deferred without a reply code: nothing answered, so more receives would only burn retries. */
function mailServerUnreachable(outcome: MessageOutcome): boolean {
  if (outcome.error || outcome.recipients.length === 0) return false;
  return outcome.recipients.every(
    (r) => r.state === 'deferred' && r.code === undefined && r.detail !== undefined && r.claimed !== true,
  );
}
