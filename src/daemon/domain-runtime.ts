import type { MailQueue } from '../aws/queue.ts';
import { DomainPoller, type PollerStatus } from '../poller/domain-poller.ts';
import type { MailServerWatch } from '../poller/mail-server-watch.ts';
import { leaseSecondsFor, openDomainQueue } from './domain-queue.ts';
import { buildPipelinePorts, type PortsDeps } from './pipeline-ports.ts';
import { startQueueGauges } from './queue-gauges.ts';
import type { SharedTableGuard } from './shared-table-guard.ts';
import { TableGuard } from './table-guard.ts';

export interface DomainRuntimeDeps extends Omit<PortsDeps, 'leaseSeconds'> {
  onStatus?: (status: PollerStatus) => void;
  /** Whether the mail server answers, as the coordinator sees it; default: assumed up. */
  mailServer?: MailServerWatch;
  /** The table checks of the domain's thread, shared by its domains (default: the domain checks on its own). */
  tables?: SharedTableGuard;
}

export interface DomainRuntime {
  poller: DomainPoller;
  queue: MailQueue;
  /** Runs the poller; resolves after stop() once in-flight messages are done. */
  run(): Promise<void>;
  stop(): void;
}

/**
 * Wires one domain: its queue, the pipeline's ports, the poller, the table checks that hold the domain while a
 * table is wrong (run once before the first receive), and the queue gauges.
 */
export async function startDomainRuntime(deps: DomainRuntimeDeps): Promise<DomainRuntime> {
  const { config, domain, clients, metrics } = deps;
  const logger = deps.logger.child({ domain });
  const opened = await openDomainQueue(clients.sqs, config, domain, logger);
  const ports = buildPipelinePorts({
    ...deps,
    logger,
    leaseSeconds: leaseSecondsFor(opened.visibilityTimeoutSeconds),
  });
  const poller = new DomainPoller(
    opened.queue,
    ports,
    {
      waitTimeSeconds: config.poll.waitTimeSeconds,
      idlePollAlignMs: config.poll.idlePollAlignMs,
      maxMessages: config.poll.maxMessages,
      concurrency: config.poll.messageConcurrency,
      retry: opened.retry,
      visibilityTimeoutSeconds: opened.visibilityTimeoutSeconds,
      outage: { probeSeconds: config.poll.outageProbeSeconds },
      onTableFault: () => tables.suspect(),
    },
    deps.onStatus,
    deps.mailServer,
  );
  const onResult = (problems: readonly string[]) =>
    poller.hold(problems.length > 0 ? problems.join('; ') : undefined);
  const tables =
    deps.tables?.join(domain, onResult) ??
    new TableGuard({ ddb: clients.ddb, tables: config.tables, domain, logger, metrics, onResult });
  await tables.check();
  return {
    poller,
    queue: opened.queue,
    async run() {
      const stopGauges = startQueueGauges({
        sqs: clients.sqs,
        deadlines: config.aws.deadlines,
        queue: opened.queue,
        domain,
        metrics,
        logger,
        clock: deps.clock,
        initial: opened.attributes,
        poller,
      });
      try {
        await poller.run();
      } finally {
        stopGauges();
        tables.stop();
      }
    },
    stop: () => poller.stop(),
  };
}
