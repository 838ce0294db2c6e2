/**
 * The body of a poller thread, run by piscina as a long-lived task: it polls one domain or several (POLLER_THREADS)
 * with one set of AWS clients, one logger, one metrics registry and one byte budget shared by its domains, and
 * delivers through the coordinator's shared pool over its MessagePort.
 */
import { setMaxListeners } from 'node:events';
import { createAwsClients, type AwsClients } from '../aws/clients.ts';
import { sleepUnlessAborted, systemClock } from '../clock.ts';
import type { Config } from '../config/config.ts';
import { WorkerError, errorMessage } from '../errors.ts';
import { FairByteBudget } from '../flow-control/fair-byte-budget.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { createPipelineMetrics, type PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import { MailServerState } from '../poller/mail-server-watch.ts';
import { startDomainRuntime, type DomainRuntime } from './domain-runtime.ts';
import type { CoordinatorMessage, DomainStatus, PollerTask, ThreadMessage } from './protocol.ts';
import { SharedTableGuard } from './shared-table-guard.ts';
import {
  createDeliveryRelay,
  createPacerProxy,
  createStatusReporter,
  type DeliveryRelay,
  type PacerProxy,
} from './thread-relays.ts';

const QUEUE_RETRY_MS = 30_000;
/** Connections per host for each domain the thread serves: what a thread of its own had. */
const SOCKETS_PER_DOMAIN = 50;

/** What the domains of one thread share. */
interface ThreadServices {
  config: Config;
  logger: Logger;
  metrics: PipelineMetrics;
  clients: AwsClients;
  delivery: DeliveryRelay;
  sesPacer: PacerProxy;
  budget: FairByteBudget;
  tables: SharedTableGuard;
  /** Whether the mail server answers, as the coordinator sees it. */
  mailServer: MailServerState;
  postStatus(status: DomainStatus): void;
  /** Aborted when the coordinator says stop. */
  stopping: AbortSignal;
}

export default async function runPollerThread(task: PollerTask): Promise<void> {
  const { domains, config, port } = task;
  // No `domain` in the base: the domain runtime adds it as a child binding, and pino would repeat the key.
  const logger = createLogger({ level: config.log.level, redactAddresses: config.log.redactAddresses });
  const post = (message: ThreadMessage) => port.postMessage(message);
  const stop = new AbortController();
  const statusReporter = createStatusReporter(port);
  // Every domain of the thread listens for the stop, and so does each one waiting to retry its start.
  setMaxListeners(0, stop.signal);
  const metrics = createPipelineMetrics();
  const clients = createAwsClients(config.aws, { maxSockets: SOCKETS_PER_DOMAIN * domains.length });
  const services: ThreadServices = {
    config,
    logger,
    metrics,
    clients,
    delivery: createDeliveryRelay(port),
    sesPacer: createPacerProxy(port),
    budget: new FairByteBudget(config.limits.inFlightBytes),
    tables: new SharedTableGuard({
      ddb: clients.ddb,
      tables: config.tables,
      logger: logger.child({ domains }),
      metrics,
    }),
    // Down until the coordinator says otherwise: mail is received only once the mail server is known to answer.
    mailServer: new MailServerState(false),
    postStatus: (status) => statusReporter.report(status),
    stopping: stop.signal,
  };
  port.on('message', (message: CoordinatorMessage) => onMessage(message, services, stop, post));
  post({ type: 'loaded' });
  try {
    // A domain whose service fails takes the thread down, so that all of its domains restart together
    // rather than the thread running on with some of them gone.
    await Promise.all(domains.map((domain) => serveDomain(domain, services).catch(crashThread)));
  } finally {
    services.clients.destroy();
    statusReporter.flush();
    // The destination writes asynchronously; the thread is terminated soon after this task ends.
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    port.close();
  }
}

function onMessage(
  message: CoordinatorMessage,
  services: ThreadServices,
  stop: AbortController,
  post: (message: ThreadMessage) => void,
): void {
  switch (message.type) {
    case 'delivered':
      services.delivery.settle(message.id, message.results);
      break;
    case 'ses-permit':
      services.sesPacer.grant(message.id);
      break;
    case 'mail-server':
      services.mailServer.set(message.up);
      break;
    case 'collect-metrics':
      void services.metrics.registry
        .getMetricsAsJSON()
        .then((snapshot) => post({ type: 'metrics', id: message.id, metrics: snapshot as never }));
      break;
    case 'stop':
      stop.abort();
      break;
    case 'crash':
      crashThread(
        new Error(`poller thread crashed on request (UNSAFE_TEST_HOOKS, ${message.how ?? 'exception'})`),
        message.how,
      );
      break;
  }
}

/** Thrown (or rejected) outside any promise chain, exactly like an unexpected bug, so the thread really dies. */
function crashThread(error: unknown, how: 'exception' | 'rejection' = 'exception'): Promise<never> {
  setImmediate(() => {
    if (how === 'rejection') void Promise.reject(error);
    else throw error;
  });
  return new Promise<never>(() => undefined);
}

/** One domain: its runtime, started (retried while its queue cannot be resolved), run until the thread stops. */
async function serveDomain(domain: string, services: ThreadServices): Promise<void> {
  const { config, logger, metrics, stopping } = services;
  const budget = services.budget.share(domain, (inUse) =>
    metrics.inFlightBytes(domain, inUse, services.budget.capacity),
  );
  let runtime: DomainRuntime | undefined;
  const onStop = () => runtime?.stop();
  stopping.addEventListener('abort', onStop);
  try {
    while (!stopping.aborted) {
      try {
        runtime = await startDomainRuntime({
          config,
          domain,
          clients: services.clients,
          delivery: services.delivery.forDomain(domain),
          sesPacer: services.sesPacer,
          budget,
          tables: services.tables,
          clock: systemClock,
          logger,
          metrics,
          onStatus: (status) => services.postStatus(status),
          mailServer: services.mailServer,
        });
        break;
      } catch (error) {
        const err = error instanceof WorkerError ? error.toJSON() : { message: errorMessage(error) };
        logger.child({ domain }).error({ err }, 'cannot start the domain poller; retrying');
        services.postStatus({ domain, state: 'error', inFlight: 0, lastError: err.message });
        await sleepUnlessAborted(QUEUE_RETRY_MS, stopping, { unref: true });
      }
    }
    if (runtime) {
      // A stop that arrived while the queue was being resolved found no runtime to stop: stop it now, or run()
      // would poll until the grace period runs out.
      if (stopping.aborted) runtime.stop();
      await runtime.run();
    }
  } finally {
    stopping.removeEventListener('abort', onStop);
    services.postStatus({ domain, state: 'stopped', inFlight: 0 });
  }
}
