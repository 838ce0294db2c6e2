import { createAwsClients, type AwsClients } from '../aws/clients.ts';
import { systemClock } from '../clock.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import { OutboundEventsConsumer, type OutboundConsumerStatus } from './outbound-consumer.ts';
import type { OutboundMetrics } from './outbound-metrics.ts';
import { createOutboundWriter } from './outbound-writer.ts';

export interface OutboundEventsService {
  /** Starts consuming (its own AWS clients); nothing when OUTBOUND_EVENTS_QUEUE=none. */
  start(): void;
  status(): OutboundConsumerStatus;
  /** Stops the consumer (see OutboundEventsConsumer.stop) and closes its clients. */
  stop(graceMs: number): Promise<void>;
}

/** The daemon's outbound events consumer, `off` when OUTBOUND_EVENTS_QUEUE=none. */
export function createOutboundEvents(
  config: Config,
  logger: Logger,
  metrics: OutboundMetrics,
): OutboundEventsService {
  if (!config.outboundEventsQueue) {
    metrics.state('off');
    return {
      start: () =>
        logger.info(
          'OUTBOUND_EVENTS_QUEUE=none: SES sending events are not recorded; bounces are rewritten only from ' +
            'outbound records something else writes',
        ),
      status: () => ({ state: 'off', queue: '' }),
      stop: async () => undefined,
    };
  }
  let running: { consumer: OutboundEventsConsumer; clients: AwsClients } | undefined;
  return {
    start() {
      if (running) return;
      const clients = createAwsClients(config.aws);
      const consumer = new OutboundEventsConsumer({
        sqs: clients.sqs,
        deadlines: config.aws.deadlines,
        records: createOutboundWriter(clients.ddb, {
          table: config.tables.outbound,
          retentionDays: config.outboundRetentionDays,
          clock: systemClock,
        }),
        queueName: config.outboundEventsQueue,
        waitTimeSeconds: config.poll.waitTimeSeconds,
        clock: systemClock,
        logger,
        metrics,
      });
      running = { consumer, clients };
      consumer.start();
    },
    status: () => running?.consumer.status() ?? { state: 'starting', queue: config.outboundEventsQueue },
    async stop(graceMs) {
      if (!running) return;
      await running.consumer.stop(graceMs);
      running.clients.destroy();
    },
  };
}
