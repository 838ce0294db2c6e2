import type { Config } from '../config/config.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { createOutboundEvents } from '../outbound/outbound-service.ts';
import { createPooledDelivery } from '../smtp/transport.ts';
import { createCoordinatorMetrics, type CoordinatorMetrics } from './coordinator-metrics.ts';
import { evaluateHealth, staleBoundMs, type HealthReport } from './health.ts';
import { healthRoute, metricsRoute, type DebugHooks } from './http-routes.ts';
import { startHttpServer, type Route, type RunningServer } from './http-servers.ts';
import { MailServerMonitor } from './mail-server-monitor.ts';
import { PollerSupervisor } from './poller-supervisor.ts';
import { SendPacerRelay } from './send-pacer-relay.ts';
import { installShutdownHandlers } from './shutdown.ts';
import { ThreadMetricsCollector } from './thread-metrics.ts';
import { configWarnings } from './config-warnings.ts';

export interface DaemonHandle {
  healthPort: number;
  metricsPort: number;
  /** Graceful stop; resolves when everything is closed. */
  stop(): Promise<void>;
}

/**
 * The coordinator: the poller threads (poller-supervisor.ts), the one delivery pool they all send through, the
 * health and metrics servers, and the process handlers (shutdown.ts) that turn a signal or an unexpected error
 * into one graceful drain.
 */
export async function startDaemon(
  config: Config,
  options: { installProcessHandlers?: boolean } = {},
): Promise<DaemonHandle> {
  const logger = createLogger({ level: config.log.level, redactAddresses: config.log.redactAddresses });
  const startedAt = Date.now();
  // Handlers go in first: a SIGTERM that arrives while the servers bind and the threads start (an orchestrator
  // does send them that early) must still mean a graceful stop and exit 0, not death by the default handler.
  let startupComplete: (stop: () => Promise<void>) => void = () => undefined;
  const stopWhenStarted = new Promise<() => Promise<void>>((resolve) => (startupComplete = resolve));
  if (options.installProcessHandlers !== false)
    installShutdownHandlers({ logger, stop: async () => (await stopWhenStarted)() });

  const delivery = createPooledDelivery({ ...config.smtp, logger: logger.child({ component: 'smtp-pool' }) });
  const metrics = createCoordinatorMetrics(delivery, config.smtp.maxConnections);
  // The pollers hear whether the mail server answers; they exist only once the monitor does.
  let tellPollers: (ok: boolean) => void = () => undefined;
  const mailServer = new MailServerMonitor(delivery, logger, config.smtp.host, (ok) => {
    metrics.mailServerUp(ok);
    tellPollers(ok);
  });
  const threadMetrics = new ThreadMetricsCollector();
  const sesPacer = new SendPacerRelay(config, logger, metrics);
  const pollers = new PollerSupervisor({
    config,
    logger,
    delivery,
    mailServer,
    metrics,
    threadMetrics,
    sesPacer,
  });
  tellPollers = (ok) => pollers.mailServerChanged(ok);
  mailServer.start();
  sesPacer.start();

  const staleAfterMs = staleBoundMs(config.poll.waitTimeSeconds);
  // One consumer of SES sending events per process, not per domain: the events queue is the deployment's.
  const outbound = createOutboundEvents(config, logger, metrics.outbound);
  const health = (): HealthReport =>
    evaluateHealth({
      domains: pollers.healthInputs(),
      now: Date.now(),
      startedAt,
      staleAfterMs,
      draining: pollers.isDraining,
      mailServerOk: mailServer.ok,
      outboundEvents: outbound.status(),
    });
  const hooks = process.env.UNSAFE_TEST_HOOKS === 'true' ? debugHooks(pollers) : undefined;
  let servers: { health: RunningServer; metrics: RunningServer };
  try {
    servers = {
      health: await serve('health', config, healthRoute(health, hooks), metrics, logger),
      metrics: await serve(
        'metrics',
        config,
        metricsRoute(
          async () => metrics.render(await threadMetrics.collect(pollers.runningPorts())),
          metrics.registry.contentType,
        ),
        metrics,
        logger,
      ),
    };
  } catch (error) {
    mailServer.stop();
    sesPacer.stop();
    await pollers.destroy();
    await delivery.close();
    throw error;
  }
  logStarted(config, logger, servers);
  pollers.start();
  outbound.start();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      logger.info(
        { graceSeconds: config.shutdownGraceSeconds },
        'shutting down: draining in-flight messages',
      );
      await Promise.all([
        pollers.stop(config.shutdownGraceSeconds),
        outbound.stop(config.shutdownGraceSeconds * 1000),
      ]);
      mailServer.stop();
      sesPacer.stop();
      await delivery.close();
      await Promise.all([servers.health.close(), servers.metrics.close()]);
      logger.info('stopped');
      logger.flush();
    })());
  startupComplete(stop);
  return { healthPort: servers.health.port, metricsPort: servers.metrics.port, stop };
}

function serve(
  server: 'health' | 'metrics',
  config: Config,
  route: Route,
  metrics: CoordinatorMetrics,
  logger: Logger,
): Promise<RunningServer> {
  return startHttpServer({
    host: config.http.host,
    port: server === 'health' ? config.http.healthPort : config.http.metricsPort,
    route,
    onError: (reason, error) => {
      metrics.httpError(server, reason);
      if (error !== undefined) {
        const err = error instanceof Error ? { message: error.message, stack: error.stack } : String(error);
        logger.error({ server, err }, 'HTTP request handler failed');
      }
    },
  });
}

function debugHooks(pollers: PollerSupervisor): DebugHooks {
  return {
    crashPoller: (domain, how) => pollers.crash(domain, how),
    failMainThread(how) {
      // Outside any promise chain or handler that could catch it, exactly like an unexpected bug.
      setImmediate(() => {
        const error = new Error(`main thread failed on request (UNSAFE_TEST_HOOKS, ${how})`);
        if (how === 'rejection') void Promise.reject(error);
        else throw error;
      });
    },
  };
}

function logStarted(
  config: Config,
  logger: Logger,
  servers: { health: RunningServer; metrics: RunningServer },
): void {
  logger.info(
    {
      domains: config.domains,
      healthPort: servers.health.port,
      metricsPort: servers.metrics.port,
      protocol: config.smtp.protocol,
      sesConfigurationSet: config.sesConfigurationSet || 'none',
      outboundEventsQueue: config.outboundEventsQueue || 'none',
    },
    'unified-worker started',
  );
  for (const warning of configWarnings(config)) logger.warn(warning);
}
