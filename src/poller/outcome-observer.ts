import type { QueueMessage } from '../aws/queue.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import {
  componentVerdict,
  deploymentFaultOf,
  suppressionLabel,
  tableFaultOf,
  type Component,
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
  /** `component` says the deployment is wrong (with its reply), or no longer (undefined). */
  onDegraded: (component: Component, reply: string | undefined) => void;
  /** A table call failed as a missing or misshapen table would. */
  onTableFault?: (awsCode: string) => void;
}

/** The deployment check each component's faults are counted under. */
const CHECK: Record<Component, 'smtp' | 'ses'> = { 'mail-server': 'smtp', ses: 'ses' };

const DEGRADED_LOG: Record<Component, string> = {
  'mail-server':
    "the mail server refuses this domain's mail as misconfigured; mail is kept and retried until it accepts it",
  ses: 'SES refuses to send for this account (paused, not verified, access denied...); the mail is delivered, its forwards and auto-replies wait until SES sends again',
};

/**
 * Watches every outcome, as sqs-consumer's events let one watch a consumer: counts it in the metrics, writes its log
 * line, and tracks whether the mail server or SES says this deployment is wrong (degraded until a copy gets through).
 */
export class OutcomeObserver {
  private readonly degraded = new Map<Component, string>();

  constructor(private readonly deps: ObserverDeps) {}

  observe(event: OutcomeEvent): void {
    const { outcome, decision, durationMs } = event;
    this.count(outcome, durationMs);
    logOutcome(this.deps.logger, this.deps.redact, event.message, outcome, decision, durationMs);
    const tableFault = tableFaultOf(outcome);
    if (tableFault !== undefined) this.deps.onTableFault?.(tableFault);
    for (const component of ['mail-server', 'ses'] as const) this.track(outcome, component);
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
   * further mail would only get the same answer. A copy the same component takes ends it.
   */
  private track(outcome: MessageOutcome, component: Component): void {
    const { metrics, domain, logger } = this.deps;
    const verdict = componentVerdict(outcome, component);
    if (verdict === 'refused') {
      const reply = deploymentFaultOf(outcome, component)?.reply ?? 'refused as misconfigured';
      metrics.deploymentFault(domain, CHECK[component]);
      metrics.deploymentCheck(domain, CHECK[component], true);
      if (!this.degraded.has(component))
        logger.error({ sesMessageId: outcome.sesMessageId, reply }, DEGRADED_LOG[component]);
      this.degraded.set(component, reply);
      this.deps.onDegraded(component, reply);
    } else if (verdict === 'accepted' && this.degraded.has(component)) {
      metrics.deploymentCheck(domain, CHECK[component], false);
      logger.info(
        { component },
        `the ${component === 'ses' ? 'SES account sends' : 'mail server accepts mail'} again`,
      );
      this.degraded.delete(component);
      this.deps.onDegraded(component, undefined);
    }
  }
}
