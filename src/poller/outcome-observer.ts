import type { QueueMessage } from '../aws/queue.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import {
  deploymentFaultOf,
  mailServerAccepted,
  suppressionLabel,
  tableFaultOf,
  type MessageOutcome,
} from '../pipeline/outcome.ts';
import { logOutcome } from './outcome-log.ts';
import type { RetryDecision } from './retry-policy.ts';

/** One finished attempt, as the poller reports it. */
export interface OutcomeEvent {
  message: QueueMessage;
  outcome: MessageOutcome;
  decision: RetryDecision;
  durationMs: number;
}

export interface ObserverDeps {
  domain: string;
  logger: Logger;
  metrics: PipelineMetrics;
  redact: (address: string) => string;
  /** The domain is degraded (with the reply that says why), or no longer (undefined). */
  onDegraded: (reply: string | undefined) => void;
  /** A table call failed as a missing or misshapen table would. */
  onTableFault?: (awsCode: string) => void;
}

/**
 * Watches every outcome, as sqs-consumer's events let one watch a consumer: counts it in the metrics, writes its log
 * line, and tracks whether the mail server says this deployment is wrong (degraded until a copy gets through).
 */
export class OutcomeObserver {
  private degraded: string | undefined;

  constructor(private readonly deps: ObserverDeps) {}

  observe(event: OutcomeEvent): void {
    const { outcome, decision, durationMs } = event;
    this.count(outcome, durationMs);
    logOutcome(this.deps.logger, this.deps.redact, event.message, outcome, decision, durationMs);
    const tableFault = tableFaultOf(outcome);
    if (tableFault !== undefined) this.deps.onTableFault?.(tableFault);
    this.trackDeployment(outcome);
  }

  private count(outcome: MessageOutcome, durationMs: number): void {
    const { metrics, domain } = this.deps;
    metrics.processed(domain, outcome.status);
    metrics.processingSeconds(domain, durationMs / 1000);
    for (const r of outcome.recipients) metrics.recipientOutcome(domain, r.state);
    for (const e of outcome.effects) metrics.effect(domain, e.kind, e.status, suppressionLabel(e));
    for (const limit of outcome.limits ?? []) metrics.mailLimitHit(domain, limit);
  }

  /**
   * A reply saying the deployment is wrong degrades the domain (shown by /health, /ready 503, a metric): every
   * further mail would only get the same answer. A copy that gets through ends it.
   */
  private trackDeployment(outcome: MessageOutcome): void {
    const { metrics, domain, logger } = this.deps;
    const fault = deploymentFaultOf(outcome);
    if (fault !== undefined) {
      metrics.deploymentFault(domain, 'smtp');
      metrics.deploymentCheck(domain, 'smtp', true);
      if (this.degraded === undefined) {
        logger.error(
          { sesMessageId: outcome.sesMessageId, reply: fault.reply },
          "the mail server refuses this domain's mail as misconfigured; mail is kept and retried until it accepts it",
        );
      }
      this.degraded = fault.reply ?? 'refused as misconfigured';
      this.deps.onDegraded(this.degraded);
    } else if (this.degraded !== undefined && mailServerAccepted(outcome)) {
      metrics.deploymentCheck(domain, 'smtp', false);
      logger.info('the mail server accepts mail for this domain again');
      this.degraded = undefined;
      this.deps.onDegraded(undefined);
    }
  }
}
