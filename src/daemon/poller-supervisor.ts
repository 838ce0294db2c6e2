import { errorMessage } from '../errors.ts';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { backoffMs, sleepUnlessAborted } from '../clock.ts';
import { servedDomains, type Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { MailDelivery } from '../smtp/transport.ts';
import type { CoordinatorMetrics } from './coordinator-metrics.ts';
import type { DomainHealthInput } from './health.ts';
import type { MailServerMonitor } from './mail-server-monitor.ts';
import type { CoordinatorMessage, DomainStatus, PollerTask, ThreadMessage } from './protocol.ts';
import type { SendPacerRelay } from './send-pacer-relay.ts';
import { startInWaves } from './startup-waves.ts';
import type { ThreadMetricsCollector } from './thread-metrics.ts';
import { threadLayout } from './thread-layout.ts';

/** What /health and /ready know of a domain, whichever thread polls it. */
interface DomainSlot {
  domain: string;
  status: DomainStatus;
  restarts: number;
}

/** One poller thread and the domains it polls. */
interface ThreadSlot {
  index: number;
  domains: DomainSlot[];
  /** Its code is loaded (it said so, or its domains are past starting): what the next wave waits for. */
  loaded: boolean;
  port?: MessagePort;
  abort?: AbortController;
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
 * The piscina-hosted poller threads: one per domain by default, or POLLER_THREADS threads that each poll a share of
 * the domains (thread-layout.ts). Threads start in waves (startup-waves.ts) and are restarted with capped
 * exponential backoff (1 s … 60 s) when they die — of an exception or an unhandled rejection alike: both end the
 * thread, and the task's promise rejects. A thread's domains die and restart together. The threads deliver through
 * the coordinator's shared pool over their MessagePort.
 */
export class PollerSupervisor {
  private readonly domains: Map<string, DomainSlot>;
  private readonly threads: ThreadSlot[];
  private readonly pool: Piscina<PollerTask, void>;
  private draining = false;
  /** Aborted when draining starts: wakes supervisors sleeping in a restart backoff (up to 60 s), and the waves. */
  private readonly drainAbort = new AbortController();
  private readonly statusListeners = new Set<() => void>();
  private starting: Promise<void> | undefined;

  constructor(private readonly deps: SupervisorDeps) {
    const layout = threadLayout(servedDomains(deps.config), deps.config.poll.threads);
    this.domains = new Map();
    this.threads = layout.map((domains, index) => ({
      index,
      loaded: false,
      domains: domains.map((domain) => {
        const slot = { domain, status: { domain, state: 'starting' as const, inFlight: 0 }, restarts: 0 };
        this.domains.set(domain, slot);
        return slot;
      }),
    }));
    this.pool = createPollerPool(deps.config, this.threads.length, deps.logger);
  }

  start(): void {
    this.starting = startInWaves({
      units: this.threads,
      start: (thread) => (thread.supervisor = this.supervise(thread)),
      started: (thread) => thread.loaded || thread.domains.every((d) => d.status.state !== 'starting'),
      onChange: this.statusListeners,
      signal: this.drainAbort.signal,
    });
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** How many threads poll the domains, and how many domains each. */
  get layout(): { threads: number; domainsPerThread: number[] } {
    return { threads: this.threads.length, domainsPerThread: this.threads.map((t) => t.domains.length) };
  }

  healthInputs(): DomainHealthInput[] {
    return [...this.domains.values()];
  }

  /** The ports of the threads running now (for the metrics fan-out). */
  runningPorts(): MessagePort[] {
    return this.threads.flatMap((thread) => (thread.port ? [thread.port] : []));
  }

  /** Tells every running thread whether the mail server answers. */
  mailServerChanged(up: boolean): void {
    for (const port of this.runningPorts()) post(port, { type: 'mail-server', up });
  }

  /** Test hook (UNSAFE_TEST_HOOKS): makes the thread polling `domain` crash as a bug would. */
  crash(domain: string, how: 'exception' | 'rejection'): boolean {
    const port = this.threads.find((t) => t.domains.some((d) => d.domain === domain))?.port;
    if (!port) return false;
    post(port, { type: 'crash', how });
    return true;
  }

  /** Stops every thread: in-flight messages get `graceSeconds`, then the threads are terminated. */
  async stop(graceSeconds: number): Promise<void> {
    this.draining = true;
    this.drainAbort.abort();
    await this.starting;
    for (const thread of this.threads) if (thread.port) post(thread.port, { type: 'stop' });
    const supervisors = Promise.all(this.threads.map((t) => t.supervisor));
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
      for (const thread of this.threads) thread.abort?.abort();
      await supervisors;
    }
    await this.pool.destroy();
  }

  /** For a failed start: no thread ever ran. */
  async destroy(): Promise<void> {
    await this.pool.destroy();
  }

  private async supervise(thread: ThreadSlot): Promise<void> {
    let failures = 0;
    while (!this.draining) {
      const channel = new MessageChannel();
      const abort = new AbortController();
      thread.port = channel.port1;
      thread.abort = abort;
      channel.port1.on('message', (message: ThreadMessage) =>
        this.onThreadMessage(thread, channel.port1, message),
      );
      post(channel.port1, { type: 'mail-server', up: this.deps.mailServer.ok });
      const started = Date.now();
      const task: PollerTask = {
        thread: thread.index,
        domains: thread.domains.map((d) => d.domain),
        config: this.deps.config,
        port: channel.port2,
      };
      try {
        await this.pool.run(task, { transferList: [channel.port2], signal: abort.signal });
        if (this.draining) break;
        throw new Error('poller task ended without being stopped');
      } catch (error) {
        if (this.draining) break;
        if (Date.now() - started > HEALTHY_RUN_MS) failures = 0;
        failures += 1;
        await this.restartAfter(thread, backoffMs(failures - 1, 1_000, 60_000), error);
      } finally {
        channel.port1.close();
        thread.port = undefined;
      }
    }
  }

  private async restartAfter(thread: ThreadSlot, delayMs: number, error: unknown): Promise<void> {
    for (const slot of thread.domains) {
      slot.restarts += 1;
      this.deps.metrics.pollerRestarted(slot.domain);
      this.deps.metrics.pollerUp(slot.domain, false);
      slot.status = { domain: slot.domain, state: 'dead', inFlight: 0, lastError: String(error) };
      // One line per domain, so a domain's log holds its restarts whichever thread it shared.
      this.deps.logger.error(
        {
          domain: slot.domain,
          thread: thread.index,
          threadDomains: thread.domains.length,
          err: errorMessage(error),
          restartInMs: delayMs,
          restarts: slot.restarts,
        },
        'poller thread died; restarting',
      );
    }
    this.notifyStatus();
    await sleepUnlessAborted(delayMs, this.drainAbort.signal);
    if (this.draining) return;
    for (const slot of thread.domains) slot.status = { ...slot.status, state: 'restarting' };
  }

  private onThreadMessage(thread: ThreadSlot, port: MessagePort, message: ThreadMessage): void {
    switch (message.type) {
      case 'loaded':
        thread.loaded = true;
        this.notifyStatus();
        break;
      case 'status':
        for (const status of message.statuses) this.setStatus(thread, status);
        this.notifyStatus();
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
        this.deps.sesPacer.handle(port, `thread-${thread.index}`, message);
        break;
    }
  }

  private setStatus(thread: ThreadSlot, status: DomainStatus): void {
    const slot = this.domains.get(status.domain);
    // A thread only ever reports its own domains; anything else is ignored rather than trusted.
    if (!slot || !thread.domains.includes(slot)) return;
    slot.status = status;
    this.deps.metrics.pollerUp(slot.domain, ['polling', 'paused'].includes(status.state));
  }

  private notifyStatus(): void {
    for (const listener of [...this.statusListeners]) listener();
  }

  private async relayDelivery(port: MessagePort, message: Extract<ThreadMessage, { type: 'deliver' }>) {
    const request = {
      domain: message.domain,
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

function createPollerPool(config: Config, threads: number, logger: Logger): Piscina<PollerTask, void> {
  const threadFile = new URL(
    import.meta.url.endsWith('.ts') ? './poller-thread.ts' : './poller-thread.js',
    import.meta.url,
  );
  const pool = new Piscina<PollerTask, void>({
    filename: threadFile.href,
    // Threads are created as their wave starts (startup-waves.ts), not all at once with the pool.
    minThreads: 0,
    maxThreads: threads,
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

function post(port: MessagePort, message: CoordinatorMessage): void {
  port.postMessage(message);
}
