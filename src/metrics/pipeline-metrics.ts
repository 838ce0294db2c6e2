import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type ForwardRoute = 'internal' | 'ses';

/** What the pipeline reports; one instance per thread, aggregated by the coordinator for /metrics. */
export interface PipelineMetrics {
  processed(domain: string, outcome: string): void;
  bounceRewritten(domain: string): void;
  autoReplySent(domain: string): void;
  forwardSent(domain: string, route: ForwardRoute): void;
  blocked(domain: string, count: number): void;
  inFlight(domain: string, delta: number): void;
  queueSize(domain: string, size: number): void;
  processingSeconds(domain: string, seconds: number): void;
  readonly registry: Registry;
}

/**
 * Histograms, not summaries: summaries cannot be aggregated across threads (quantiles would be summed).
 * Gauges are summed by the aggregator, which is right for per-domain values reported by one thread each.
 */
export function createPipelineMetrics(registry: Registry = new Registry()): PipelineMetrics {
  const processed = new Counter({
    name: 'ses_worker_emails_processed_total',
    help: 'SQS messages finished, by outcome.',
    labelNames: ['domain', 'outcome'] as const,
    registers: [registry],
  });
  const bounces = new Counter({
    name: 'ses_worker_bounces_rewritten_total',
    help: 'SES bounces whose From/Reply-To were rewritten from the outbound table.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const autoreplies = new Counter({
    name: 'ses_worker_autoreplies_sent_total',
    help: 'Out-of-office replies sent.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const forwards = new Counter({
    name: 'ses_worker_forwards_sent_total',
    help: 'Forwards sent, by route (internal port or SES).',
    labelNames: ['domain', 'route'] as const,
    registers: [registry],
  });
  const blocked = new Counter({
    name: 'ses_worker_blocked_total',
    help: 'Recipients not delivered because the sender is on their blocklist.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const inFlight = new Gauge({
    name: 'ses_worker_in_flight',
    help: 'Messages being processed.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const queueSize = new Gauge({
    name: 'ses_worker_queue_size',
    help: 'ApproximateNumberOfMessages of the domain queue, refreshed periodically.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const processing = new Histogram({
    name: 'ses_worker_processing_seconds',
    help: 'Time from receive to final outcome of one message.',
    labelNames: ['domain'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  return {
    registry,
    processed: (domain, outcome) => processed.inc({ domain, outcome }),
    bounceRewritten: (domain) => bounces.inc({ domain }),
    autoReplySent: (domain) => autoreplies.inc({ domain }),
    forwardSent: (domain, route) => forwards.inc({ domain, route }),
    blocked: (domain, count) => blocked.inc({ domain }, count),
    inFlight: (domain, delta) => inFlight.inc({ domain }, delta),
    queueSize: (domain, size) => queueSize.set({ domain }, size),
    processingSeconds: (domain, seconds) => processing.observe({ domain }, seconds),
  };
}
