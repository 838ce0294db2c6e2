import type { AwsClients } from '../aws/clients.ts';
import { createDynamoLedger, noLedger } from '../aws/effect-ledger.ts';
import { createDynamoOutboundRecords } from '../aws/outbound-records.ts';
import { createDynamoDirectory } from '../aws/recipient-directory.ts';
import { createDynamoReplyLog } from '../aws/reply-log.ts';
import type { Clock } from '../clock.ts';
import { notificationSourcesFor, type Config } from '../config/config.ts';
import { ByteBudget } from '../flow-control/byte-budget.ts';
import type { SendPacer } from '../flow-control/send-pacer.ts';
import { addressRedactor, type Logger } from '../log/logger.ts';
import { createLoopMarker } from '../mail/loop-marker.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import type { PipelineOptions, PipelinePorts } from '../pipeline/ports.ts';
import type { MailDelivery } from '../smtp/transport.ts';
import { lazyMailSender, lazyMailStore } from './lazy-ports.ts';

export interface PortsDeps {
  config: Config;
  domain: string;
  clients: AwsClients;
  delivery: MailDelivery;
  /** The process-wide SES pacer (default: none, for a runtime outside the daemon). */
  sesPacer?: SendPacer;
  clock: Clock;
  logger: Logger;
  metrics: PipelineMetrics;
  /** How long an unfinished ledger claim lives without renewal: the queue's visibility timeout. */
  leaseSeconds: number;
  /** The domain's share of its thread's byte budget (default: a budget of IN_FLIGHT_BYTES of its own). */
  budget?: ByteBudget;
}

/** The real clients behind the pipeline's ports, for one domain. */
export function buildPipelinePorts(deps: PortsDeps): PipelinePorts {
  const { config, domain, clients, clock, logger, metrics } = deps;
  const redact = addressRedactor(config.log.redactAddresses);
  const { inFlightBytes } = config.limits;
  metrics.inFlightBytes(domain, 0, inFlightBytes);
  return {
    domain,
    hostedDomains: config.domains,
    mailStore: lazyMailStore(async () =>
      (await import('../aws/mail-store.ts')).createS3MailStore(clients.s3, {
        maxAttempts: config.limits.s3MaxAttempts,
        clock,
      }),
    ),
    directory: createDynamoDirectory(clients.ddb, {
      tables: config.tables,
      clock,
      cacheSeconds: config.directory.cacheSeconds,
      onLimit: (recipient, limit) =>
        logger.warn(
          { recipient: redact(recipient), limit },
          'rules data over its bound: only the first part is used',
        ),
    }),
    outbound: createDynamoOutboundRecords(clients.ddb, { table: config.tables.outbound, clock }),
    replies: createDynamoReplyLog(clients.ddb, { table: config.tables.oooState }),
    ses: lazyMailSender(async () =>
      (await import('../aws/ses-sender.ts')).createSesSender(clients.sesv2, {
        clock,
        deadlines: config.aws.deadlines,
        ...(config.sesConfigurationSet && { configurationSet: config.sesConfigurationSet }),
        ...(deps.sesPacer && { pacer: deps.sesPacer }),
      }),
    ),
    delivery: deps.delivery,
    budget:
      deps.budget ??
      new ByteBudget(inFlightBytes, (inUse) => metrics.inFlightBytes(domain, inUse, inFlightBytes)),
    ledger: config.tables.idempotency
      ? createDynamoLedger(clients.ddb, {
          table: config.tables.idempotency,
          clock,
          leaseSeconds: deps.leaseSeconds,
        })
      : noLedger,
    loopMarker: createLoopMarker(domain, config.inbound.loopMarkerSecret, clock),
    clock,
    logger,
    metrics,
    redact,
    options: pipelineOptions(config, domain),
  };
}

function pipelineOptions(config: Config, domain: string): PipelineOptions {
  return {
    maxMailBytes: config.limits.maxMailBytes,
    oooReplyIntervalDays: config.autoReply.intervalDays,
    oooRequireAddressed: config.autoReply.requireAddressed,
    oooRequireAuthenticated: config.autoReply.requireAuthenticated,
    bounceRequireAuthenticated: config.inbound.bounceRequireAuthenticated,
    notificationSources: notificationSourcesFor(config, domain),
    autoReplySubjectPrefix: config.autoReply.subjectPrefix,
    forwardSubjectPrefix: config.forwarding.subjectPrefix,
    forwardSpamPolicy: config.forwarding.spamPolicy,
    virusPolicy: config.inbound.virusPolicy,
    deliveryIdSecret: config.inbound.loopMarkerSecret,
    addVerdictHeaders: config.inbound.addVerdictHeaders,
    parseTimeoutMs: 10_000,
  };
}
