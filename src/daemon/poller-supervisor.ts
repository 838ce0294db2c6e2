import { errorMessage } from '../errors.ts';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { backoffMs } from '../clock.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { MailDelivery } from '../smtp/transport.ts';
import type { CoordinatorMetrics } from './coordinator-metrics.ts';
import type { DomainHealthInput } from './health.ts';
import type { MailServerMonitor } from './mail-server-monitor.ts';
import type { CoordinatorMessage, DomainStatus, PollerTask, ThreadMessage } from './protocol.ts';
import type { SendPacerRelay } from './send-pacer-relay.ts';
import type { ThreadMetricsCollector } from './thread-metrics.ts';

interface DomainSlot {
  domain: string;
  status: DomainStatus;
  port?: MessagePort;
  abort?: AbortController;
  restarts: number;
  supervisor?: Promise<void>;
}

export interface SupervisorDeps {
  config: Config;
  logger: Logger;
  delivery: MailDelivery;
  mailServer: MailServerMonitor;
  metrics: CoordinatorMetrics;
  threadMetrics: ThreadMetricsCollector;
  sesPacer: SendPacerRelay;
}

/** A thread that ran this long before dying starts the restart backoff afresh. */
const HEALTHY_RUN_MS = 120_000;

/**
 * One piscina-hosted worker thread per domain, restarted with capped exponential backoff (1 s … 60 s) when it
 * dies — of an exception or an unhandled rejection alike: both end the thread, and the task's promise rejects.
 * The threads deliver through the coordinator's shared pool over their MessagePort.
 */
export class PollerSupervisor {
  private readonly slots: Map<string, DomainSlot>;
  private readonly pool: Piscina<PollerTask, void>;
  private draining = false;
  /** Aborted when draining starts: wakes supervisors sleeping in a restart backoff (up to 60 s). */
  private readonly drainAbort = new AbortController();

  constructor(private readonly deps: SupervisorDeps) {
    this.slots = new Map(
      deps.config.domains.map((domain) => [
        domain,
        { domain, status: { domain, state: 'starting', inFlight: 0 }, restarts: 0 },
      ]),
    );
    this.pool = createPollerPool(deps.config, deps.logger);
  }

  start(): void {
    for (const slot of this.slots.values()) slot.supervisor = this.supervise(slot);
  }

  get isDraining(): boolean {
    return this.draining;
  }

  healthInputs(): DomainHealthInput[] {
    return [...this.slots.values()];
  }

  /** The ports of the threads running now (for the metrics fan-out). */
  runningPorts(): MessagePort[] {
    return [...this.slots.values()].flatMap((slot) => (slot.port ? [slot.port] : []));
  }

  /** Tells every running thread whether the mail server answers. */
  mailServerChanged(up: boolean): void {
    for (const port of this.runningPorts()) post(port, { type: 'mail-server', up });
  }

  /** Test hook (UNSAFE_TEST_HOOKS): makes a domain's thread crash as a bug would. */
  crash(domain: string, how: 'exception' | 'rejection'): boolean {
    const port = this.slots.get(domain)?.port;
    if (!port) return false;
    post(port, { type: 'crash', how });
    return true;
  }

  /** Stops every thread: in-flight messages get `graceSeconds`, then the threads are terminated. */
  async stop(graceSeconds: number): Promise<void> {
    this.draining = true;
    this.drainAbort.abort();
    for (const slot of this.slots.values()) if (slot.port) post(slot.port, { type: 'stop' });
    const supervisors = Promise.all([...this.slots.values()].map((s) => s.supervisor));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      supervisors.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceSeconds * 1000))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.deps.logger.warn(
        'grace period over: stopping threads; unfinished messages reappear after their visibility timeout',
      );
      for (const slot of this.slots.values()) slot.abort?.abort();
      await supervisors;
    }
    await this.pool.destroy();
  }

  /** For a failed start: no thread ever ran. */
  async destroy(): Promise<void> {
    await this.pool.destroy();
  }

  private async supervise(slot: DomainSlot): Promise<void> {
    let failures = 0;
    while (!this.draining) {
      const channel = new MessageChannel();
      const abort = new AbortController();
      slot.port = channel.port1;
      slot.abort = abort;
      channel.port1.on('message', (message: ThreadMessage) =>
        this.onThreadMessage(slot, channel.port1, message),
      );
      post(channel.port1, { type: 'mail-server', up: this.deps.mailServer.ok });
      const started = Date.now();
      try {
        await this.pool.run(
          { domain: slot.domain, config: this.deps.config, port: channel.port2 },
          { transferList: [channel.port2], signal: abort.signal },
        );
        if (this.draining) break;
        throw new Error('poller task ended without being stopped');
      } catch (error) {
        if (this.draining) break;
        if (Date.now() - started > HEALTHY_RUN_MS) failures = 0;
        failures += 1;
        await this.restartAfter(slot, backoffMs(failures - 1, 1_000, 60_000), error);
      } finally {
        channel.port1.close();
        slot.port = undefined;
      }
    }
  }

  private async restartAfter(slot: DomainSlot, delayMs: number, error: unknown): Promise<void> {
    slot.restarts += 1;
    this.deps.metrics.pollerRestarted(slot.domain);
    this.deps.metrics.pollerUp(slot.domain, false);
    slot.status = { domain: slot.domain, state: 'dead', inFlight: 0, lastError: String(error) };
    this.deps.logger.error(
      {
        domain: slot.domain,
        err: errorMessage(error),
        restartInMs: delayMs,
        restarts: slot.restarts,
      },
      'poller thread died; restarting',
    );
    await sleepUnlessAborted(delayMs, this.drainAbort.signal);
    if (!this.draining) slot.status = { ...slot.status, state: 'restarting' };
  }

  private onThreadMessage(slot: DomainSlot, port: MessagePort, message: ThreadMessage): void {
    switch (message.type) {
      case 'status':
        slot.status = message.status;
        this.deps.metrics.pollerUp(slot.domain, ['polling', 'paused'].includes(message.status.state));
        break;
      case 'deliver':
        void this.relayDelivery(port, message);
        break;
      case 'metrics':
        this.deps.threadMetrics.answer(message.id, message.metrics);
        break;
      case 'ses-permit':
      case 'ses-permit-cancel':
      case 'ses-throttled':
        this.deps.sesPacer.handle(port, slot.domain, message);
        break;
    }
  }

  private async relayDelivery(port: MessagePort, message: Extract<ThreadMessage, { type: 'deliver' }>) {
    const request = {
      route: message.route,
      from: message.from,
      to: message.to,
      raw: Buffer.from(message.raw),
    };
    let results: RecipientDelivery[];
    try {
      results = await this.deps.delivery.deliver(request);
    } catch (error) {
      // deliver() reports replies as data; a throw is a bug, and the thread must still get an answer (temporary
      // for everyone) or its message would wait forever under the visibility heartbeat.
      post(port, { type: 'delivered', id: message.id, results: deferredFor(message.to, error) });
      return;
    }
    post(port, { type: 'delivered', id: message.id, results });
    this.deps.mailServer.noteDelivery(results);
  }
}

function deferredFor(recipients: readonly string[], error: unknown): RecipientDelivery[] {
  return recipients.map((recipient) => ({ recipient, status: 'deferred', response: String(error) }));
}

function createPollerPool(config: Config, logger: Logger): Piscina<PollerTask, void> {
  const threadFile = new URL(
    import.meta.url.endsWith('.ts') ? './poller-thread.ts' : './poller-thread.js',
    import.meta.url,
  );
  const pool = new Piscina<PollerTask, void>({
    filename: threadFile.href,
    minThreads: config.domains.length,
    maxThreads: config.domains.length,
    concurrentTasksPerWorker: 1,
    idleTimeout: Infinity,
    // Idle piscina workers park in Atomics.wait and would not answer port messages; ours must, always.
    atomics: 'disabled',
    resourceLimits: {
      maxOldGenerationSizeMb: Math.max(256, Math.ceil((config.limits.inFlightBytes * 8) / 1048576)),
    },
  });
  // A worker that dies while no task runs on it is reported as a pool 'error' event; unhandled, it would take the
  // whole process (and every other domain) down.
  pool.on('error', (error: unknown) => {
    logger.error({ err: errorMessage(error) }, 'poller thread pool error');
  });
  return pool;
}

function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

function post(port: MessagePort, message: CoordinatorMessage): void {
  port.postMessage(message);
}
