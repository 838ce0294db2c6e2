import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { backoffMs } from '../clock.ts';
import type { Config } from '../config/config.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import { createPooledDelivery } from '../smtp/transport.ts';
import { createCoordinatorMetrics } from './coordinator-metrics.ts';
import { evaluateHealth, staleBoundMs } from './health.ts';
import { startHttpServer, type RunningServer } from './http-servers.ts';
import { MailServerMonitor } from './mail-server-monitor.ts';
import type {
  CoordinatorMessage,
  DomainStatus,
  MetricsSnapshot,
  PollerTask,
  ThreadMessage,
} from './protocol.ts';

interface DomainSlot {
  domain: string;
  status: DomainStatus;
  port?: MessagePort;
  abort?: AbortController;
  restarts: number;
  supervisor?: Promise<void>;
}

export interface DaemonHandle {
  healthPort: number;
  metricsPort: number;
  /** Graceful stop; resolves when everything is closed. */
  stop(): Promise<void>;
}

/** A thread busy on CPU must not hold up a scrape. */
const METRICS_TIMEOUT_MS = 2_000;

/**
 * The coordinator: one piscina-hosted worker thread per domain (restarted with capped exponential backoff when it
 * dies), one shared delivery pool all threads send through, and the health and metrics servers.
 */
export async function startDaemon(
  config: Config,
  options: { installSignalHandlers?: boolean } = {},
): Promise<DaemonHandle> {
  const logger = createLogger({ level: config.log.level, redactAddresses: config.log.redactAddresses });
  const startedAt = Date.now();
  // Signal handlers go in first: a SIGTERM that arrives while the servers bind and the threads start (an orchestrator
  // does send them that early) must still mean a graceful stop and exit 0, not death by the default handler.
  let startupComplete: (stop: () => Promise<void>) => void = () => undefined;
  const stopWhenStarted = new Promise<() => Promise<void>>((resolve) => (startupComplete = resolve));
  if (options.installSignalHandlers !== false) installSignals(async () => (await stopWhenStarted)(), logger);
  const delivery = createPooledDelivery({ ...config.smtp, logger: logger.child({ component: 'smtp-pool' }) });

  const metrics = createCoordinatorMetrics(delivery, config.smtp.maxConnections);
  const mailServer = new MailServerMonitor(delivery, logger, config.smtp.host, (ok) =>
    metrics.mailServerUp(ok),
  );

  const slots = new Map<string, DomainSlot>(
    config.domains.map((domain) => [
      domain,
      { domain, status: { domain, state: 'starting', inFlight: 0 }, restarts: 0 },
    ]),
  );
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
    logger.error({ err: error instanceof Error ? error.message : String(error) }, 'poller thread pool error');
  });

  let draining = false;
  /** Aborted when draining starts: wakes supervisors sleeping in a restart backoff (up to 60 s). */
  const drainAbort = new AbortController();
  let nextMetricsId = 1;
  const metricsWaiters = new Map<number, (snapshot: MetricsSnapshot) => void>();

  mailServer.start();

  function wire(slot: DomainSlot, port: MessagePort): void {
    port.on('message', (message: ThreadMessage) => {
      switch (message.type) {
        case 'status':
          slot.status = message.status;
          metrics.pollerUp(slot.domain, ['polling', 'paused'].includes(message.status.state));
          break;
        case 'deliver': {
          const raw = Buffer.from(message.raw);
          void delivery
            .deliver({ route: message.route, from: message.from, to: message.to, raw })
            .then(
              (results) => {
                mailServer.noteDelivery(results);
                return results;
              },
              // deliver() reports replies as data; a throw is a bug, and the thread must still get an answer
              // (temporary for everyone) or its message would wait forever under the visibility heartbeat.
              (error: unknown): RecipientDelivery[] =>
                message.to.map((recipient) => ({ recipient, status: 'deferred', response: String(error) })),
            )
            .then((results) => post(port, { type: 'delivered', id: message.id, results }));
          break;
        }
        case 'metrics':
          metricsWaiters.get(message.id)?.(message.metrics);
          metricsWaiters.delete(message.id);
          break;
      }
    });
  }

  async function supervise(slot: DomainSlot): Promise<void> {
    let failures = 0;
    while (!draining) {
      const channel = new MessageChannel();
      const abort = new AbortController();
      slot.port = channel.port1;
      slot.abort = abort;
      wire(slot, channel.port1);
      const started = Date.now();
      try {
        await pool.run(
          { domain: slot.domain, config, port: channel.port2 },
          { transferList: [channel.port2], signal: abort.signal },
        );
        if (draining) break;
        throw new Error('poller task ended without being stopped');
      } catch (error) {
        if (draining) break;
        // A thread that ran for a while before dying starts the backoff afresh.
        if (Date.now() - started > 120_000) failures = 0;
        failures += 1;
        slot.restarts += 1;
        metrics.pollerRestarted(slot.domain);
        metrics.pollerUp(slot.domain, false);
        const delay = backoffMs(failures - 1, 1_000, 60_000);
        slot.status = { domain: slot.domain, state: 'dead', inFlight: 0, lastError: String(error) };
        logger.error(
          {
            domain: slot.domain,
            err: error instanceof Error ? error.message : String(error),
            restartInMs: delay,
            restarts: slot.restarts,
          },
          'poller thread died; restarting',
        );
        await sleepUnlessAborted(delay, drainAbort.signal);
        if (!draining) slot.status = { ...slot.status, state: 'restarting' };
      } finally {
        channel.port1.close();
        slot.port = undefined;
      }
    }
  }

  async function collectMetrics(): Promise<string> {
    const snapshots = await Promise.all(
      [...slots.values()].map(
        (slot) =>
          new Promise<MetricsSnapshot | undefined>((resolve) => {
            if (!slot.port) return resolve(undefined);
            const id = nextMetricsId++;
            const timer = setTimeout(() => {
              metricsWaiters.delete(id);
              resolve(undefined);
            }, METRICS_TIMEOUT_MS);
            metricsWaiters.set(id, (snapshot) => {
              clearTimeout(timer);
              resolve(snapshot);
            });
            post(slot.port, { type: 'collect-metrics', id });
          }),
      ),
    );
    return metrics.render(snapshots.filter((s): s is MetricsSnapshot => !!s));
  }

  const staleAfterMs = staleBoundMs(config.poll.waitTimeSeconds);
  const health = () =>
    evaluateHealth({
      domains: [...slots.values()],
      now: Date.now(),
      startedAt,
      staleAfterMs,
      draining,
      mailServerOk: mailServer.ok,
    });

  const hooks = process.env.UNSAFE_TEST_HOOKS === 'true';
  let healthServer: RunningServer;
  let metricsServer: RunningServer;
  try {
    healthServer = await startHttpServer(config.http.host, config.http.healthPort, (request, url) => {
      if (url.pathname === '/health' || url.pathname === '/healthz') {
        const h = health();
        return {
          status: h.healthy ? 200 : 503,
          body: JSON.stringify(h.body),
          contentType: 'application/json',
        };
      }
      if (url.pathname === '/ready' || url.pathname === '/readyz') {
        const h = health();
        return { status: h.ready ? 200 : 503, body: JSON.stringify(h.body), contentType: 'application/json' };
      }
      if (hooks && request.method === 'POST' && url.pathname === '/debug/crash') {
        const slot = slots.get(url.searchParams.get('domain') ?? '');
        if (!slot?.port) return { status: 404, body: 'no such running poller\n' };
        post(slot.port, { type: 'crash' });
        return { status: 202, body: 'crashing\n' };
      }
      return undefined;
    });
    metricsServer = await startHttpServer(
      config.http.host,
      config.http.metricsPort,
      async (_request, url) => {
        if (url.pathname !== '/metrics') return undefined;
        return { status: 200, body: await collectMetrics(), contentType: metrics.registry.contentType };
      },
    );
  } catch (error) {
    mailServer.stop();
    await pool.destroy();
    await delivery.close();
    throw error;
  }
  logger.info(
    {
      domains: config.domains,
      healthPort: healthServer.port,
      metricsPort: metricsServer.port,
      protocol: config.smtp.protocol,
    },
    'unified-worker started',
  );
  if (config.shutdownGraceSeconds <= config.poll.waitTimeSeconds) {
    logger.warn(
      { shutdownGraceSeconds: config.shutdownGraceSeconds, waitTimeSeconds: config.poll.waitTimeSeconds },
      'SHUTDOWN_GRACE_SECONDS is not above WAIT_TIME_SECONDS: a stop may cut the last long poll short, and what it ' +
        'received then waits for its visibility timeout',
    );
  }

  for (const slot of slots.values()) slot.supervisor = supervise(slot);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      draining = true;
      drainAbort.abort();
      logger.info(
        { graceSeconds: config.shutdownGraceSeconds },
        'shutting down: draining in-flight messages',
      );
      for (const slot of slots.values()) if (slot.port) post(slot.port, { type: 'stop' });
      const supervisors = Promise.all([...slots.values()].map((s) => s.supervisor));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        supervisors.then(() => false),
        new Promise<boolean>(
          (resolve) => (timer = setTimeout(() => resolve(true), config.shutdownGraceSeconds * 1000)),
        ),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        logger.warn(
          'grace period over: stopping threads; unfinished messages reappear after their visibility timeout',
        );
        for (const slot of slots.values()) slot.abort?.abort();
        await supervisors;
      }
      mailServer.stop();
      await pool.destroy();
      await delivery.close();
      await Promise.all([healthServer.close(), metricsServer.close()]);
      logger.info('stopped');
      logger.flush();
    })();
    return stopping;
  };

  startupComplete(stop);
  return { healthPort: healthServer.port, metricsPort: metricsServer.port, stop };
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

function installSignals(stop: () => Promise<void>, logger: Logger): void {
  let received = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    received += 1;
    if (received > 1) {
      // Nothing is lost: unfinished messages were never deleted and reappear after their visibility timeout.
      logger.warn({ signal }, 'second signal: exiting now');
      logger.flush();
      process.exit(130);
    }
    logger.info({ signal }, 'signal received');
    void stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: String(error) }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
