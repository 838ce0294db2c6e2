import type { AwsClients } from '../aws/clients.ts';
import { createDynamoLedger, noLedger } from '../aws/effect-ledger.ts';
import { createS3MailStore } from '../aws/mail-store.ts';
import { createSqsQueue, resolveQueueUrl, type MailQueue, type QueueAttributes } from '../aws/queue.ts';
import type { SendPacer } from '../aws/send-pacer.ts';
import { createSesSender } from '../aws/ses-sender.ts';
import { createDynamoRulesStore } from '../aws/tables.ts';
import type { Clock } from '../clock.ts';
import { notificationSourcesFor, queueNameFor, type Config } from '../config/config.ts';
import { addressRedactor, type Logger } from '../log/logger.ts';
import { createLoopMarker } from '../mail/loop-marker.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import type { PipelinePorts } from '../pipeline/ports.ts';
import { ByteBudget } from '../poller/byte-budget.ts';
import { DomainPoller, type PollerStatus } from '../poller/domain-poller.ts';
import type { MailDelivery } from '../smtp/transport.ts';
import { TableGuard } from './table-guard.ts';

export interface DomainRuntimeDeps {
  config: Config;
  domain: string;
  clients: AwsClients;
  delivery: MailDelivery;
  /** The process-wide SES pacer (default: none, for a runtime outside the daemon). */
  sesPacer?: SendPacer;
  clock: Clock;
  logger: Logger;
  metrics: PipelineMetrics;
  onStatus?: (status: PollerStatus) => void;
}

export interface DomainRuntime {
  poller: DomainPoller;
  queue: MailQueue;
  /** Runs the poller; resolves after stop() once in-flight messages are done. */
  run(): Promise<void>;
  stop(): void;
}

/**
 * The queue gauges need not be fresher: the alerts look at 10-minute windows, and KEDA reads the queues itself.
 * Each refresh is a GetQueueAttributes per domain, which was half of an idle daemon's CPU at 15 s.
 */
const QUEUE_SIZE_REFRESH_MS = 60_000;

/** Retry visibility (seconds) by receive count: quick first retries, then up to 15 minutes. */
export const RETRY_SCHEDULE = [30, 60, 120, 300, 600, 900] as const;

/**
 * Wires one domain: resolves its queue (a missing queue is this domain's error, not the daemon's), reads its
 * redrive policy, builds the pipeline ports and the poller, checks the tables before the first receive (and keeps
 * the domain from receiving while one is wrong), and keeps the queue-size gauge fresh.
 */
export async function startDomainRuntime(deps: DomainRuntimeDeps): Promise<DomainRuntime> {
  const { config, domain, clients, clock } = deps;
  const logger = deps.logger.child({ domain });
  const queueName = queueNameFor(config.queueNameTemplate, domain);
  const queueUrl = await resolveQueueUrl(clients.sqs, queueName);
  const queue = createSqsQueue(clients.sqs, queueUrl);

  const attributes = await queue.attributes().catch(() => undefined);
  const maxReceives = agreedMaxReceives(attributes, config.poll.maxReceives, queueName, logger);
  if (attributes) {
    deps.metrics.queueSize(domain, attributes.visible);
    deps.metrics.queueInFlight(domain, attributes.inFlight);
  }
  deps.metrics.inFlightBytes(domain, 0, config.limits.inFlightBytes);
  if (!config.rules.loopMarkerSecret && domain === config.domains[0]) {
    logger.warn(
      'LOOP_MARKER_SECRET is not set: anyone can add X-SES-Worker-Processed to a mail and so switch off rules for it',
    );
  }
  if (!config.tables.idempotency && domain === config.domains[0]) {
    logger.warn(
      'IDEMPOTENCY_TABLE=none: the exactly-once ledger is off; a retried message may deliver again to recipients ' +
        'that already got it, and a forward or auto-reply that fails temporarily is recorded failed, not retried',
    );
  }

  // A claim outlives its worker by at most one visibility timeout: that is when SQS hands the message out again.
  const leaseSeconds = Math.max(5, attributes?.visibilityTimeoutSeconds ?? 30);
  const redact = addressRedactor(config.log.redactAddresses);
  const ports: PipelinePorts = {
    domain,
    hostedDomains: config.domains,
    mailStore: createS3MailStore(clients.s3, { maxAttempts: config.limits.s3MaxAttempts, clock }),
    rules: createDynamoRulesStore(clients.ddb, {
      tables: config.tables,
      clock,
      cacheSeconds: config.rules.cacheSeconds,
      onLimit: (recipient, limit) => {
        logger.warn(
          { recipient: redact(recipient), limit },
          'rules data over its bound: only the first part is used',
        );
      },
    }),
    ses: createSesSender(clients.sesv2, { clock, ...(deps.sesPacer && { pacer: deps.sesPacer }) }),
    delivery: deps.delivery,
    budget: new ByteBudget(config.limits.inFlightBytes, (inUse) =>
      deps.metrics.inFlightBytes(domain, inUse, config.limits.inFlightBytes),
    ),
    ledger: config.tables.idempotency
      ? createDynamoLedger(clients.ddb, {
          table: config.tables.idempotency,
          clock,
          leaseSeconds,
        })
      : noLedger,
    loopMarker: createLoopMarker(domain, config.rules.loopMarkerSecret, clock),
    clock,
    logger,
    metrics: deps.metrics,
    redact,
    settings: {
      maxMailBytes: config.limits.maxMailBytes,
      oooReplyIntervalDays: config.rules.oooReplyIntervalDays,
      oooRequireAddressed: config.rules.oooRequireAddressed,
      oooRequireAuthenticated: config.rules.oooRequireAuthenticated,
      bounceRequireAuthenticated: config.rules.bounceRequireAuthenticated,
      notificationSources: notificationSourcesFor(config, domain),
      autoReplySubjectPrefix: config.rules.autoReplySubjectPrefix,
      forwardSubjectPrefix: config.rules.forwardSubjectPrefix,
      virusPolicy: config.rules.virusPolicy,
      addVerdictHeaders: config.rules.addVerdictHeaders,
      parseTimeoutMs: 10_000,
    },
  };
  const poller = new DomainPoller(
    queue,
    ports,
    {
      waitTimeSeconds: config.poll.waitTimeSeconds,
      maxMessages: config.poll.maxMessages,
      concurrency: config.poll.messageConcurrency,
      retrySchedule: RETRY_SCHEDULE,
      maxReceives,
      // Unknown (the attributes could not be read) counts as having one: a policy-less queue is the exception.
      hasRedrivePolicy: attributes?.hasRedrivePolicy ?? true,
      visibilityTimeoutSeconds: attributes?.visibilityTimeoutSeconds ?? 30,
      // Claims are whole seconds: one more and the lease has surely run out.
      claimedRetrySeconds: leaseSeconds + 1,
      onTableFault: () => tables.suspect(),
    },
    deps.onStatus,
  );
  const tables = new TableGuard({
    ddb: clients.ddb,
    tables: config.tables,
    domain,
    logger,
    metrics: deps.metrics,
    onResult: (problems) => poller.hold(problems.length > 0 ? problems.join('; ') : undefined),
  });
  await tables.check();

  let sizeTimer: NodeJS.Timeout | undefined;
  const refreshSize = async () => {
    const attrs = await queue.attributes().catch(() => undefined);
    if (attrs) {
      deps.metrics.queueSize(domain, attrs.visible);
      deps.metrics.queueInFlight(domain, attrs.inFlight);
    }
  };
  return {
    poller,
    queue,
    async run() {
      sizeTimer = setInterval(() => void refreshSize(), QUEUE_SIZE_REFRESH_MS);
      sizeTimer.unref();
      try {
        await poller.run();
      } finally {
        clearInterval(sizeTimer);
        tables.stop();
      }
    },
    stop() {
      poller.stop();
    },
  };
}

/**
 * The receive count at which the worker gives up: the queue's redrive maxReceiveCount when it has one (the queue
 * moves the message at that count whatever the worker thinks), else MAX_RECEIVES.
 */
function agreedMaxReceives(
  attributes: QueueAttributes | undefined,
  configured: number,
  queueName: string,
  logger: Logger,
): number {
  if (!attributes) return configured;
  if (!attributes.hasRedrivePolicy) {
    logger.warn(
      { queue: queueName, maxReceives: configured },
      'queue has no redrive policy: malformed messages stay until they expire, and a mail still failing at ' +
        'MAX_RECEIVES keeps coming back at the longest retry delay instead of moving to a dead-letter queue',
    );
    return configured;
  }
  const fromQueue = attributes.maxReceiveCount;
  if (fromQueue === undefined) return configured;
  if (fromQueue !== configured) {
    logger.warn(
      { queue: queueName, maxReceiveCount: fromQueue, MAX_RECEIVES: configured },
      "the queue's redrive maxReceiveCount differs from MAX_RECEIVES: the queue's value is used",
    );
  }
  return fromQueue;
}
