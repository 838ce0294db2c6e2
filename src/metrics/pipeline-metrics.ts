import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What a deployment fault was found in: the mail server's replies, a table check, or the queue's settings. */
export type DeploymentFaultKind = 'smtp' | 'ses' | 'table' | 'queue';
export type LedgerOperation = 'claim' | 'sending' | 'complete' | 'renew' | 'abandon';

/** What the pipeline reports; one instance per thread, aggregated by the coordinator for /metrics. */
export interface PipelineMetrics {
  processed(domain: string, outcome: string): void;
  bounceRewritten(domain: string): void;
  autoReplySent(domain: string): void;
  /** `route`: how the forward left, `internal` (the mail server's internal port) or `ses`. */
  forwardSent(domain: string, route: string): void;
  blocked(domain: string, count: number): void;
  inFlight(domain: string, delta: number): void;
  queueSize(domain: string, size: number): void;
  processingSeconds(domain: string, seconds: number): void;
  /** One per recipient per finished message, by final state (delivered, invalid, blocked, deferred). */
  recipientOutcome(domain: string, state: string): void;
  /**
   * One per rule effect per finished message: kind forward|autoreply, status sent|suppressed|failed|deferred|
   * done-before, and for a suppressed one its reason (pipeline/outcome.ts, SUPPRESSION_REASONS: a bounded set).
   */
  effect(domain: string, kind: string, status: string, reason?: string): void;
  /** A reply or check that says the deployment (not the mail) is wrong. */
  deploymentFault(domain: string, kind: DeploymentFaultKind): void;
  /** 1 while the named deployment check (e.g. `table:email-rules`, `smtp`) fails for the domain, else 0. */
  deploymentCheck(domain: string, check: string, failing: boolean): void;
  ledgerError(domain: string, operation: LedgerOperation): void;
  heartbeatFailed(domain: string): void;
  deleteFailed(domain: string, count: number): void;
  /** A mail-controlled size went past its bound (`header-fields`, `dsn-ids`, ...); the feature was skipped. */
  mailLimitHit(domain: string, limit: string): void;
  /** Bytes of mail held by the domain's byte budget right now (and their high-water mark), and the budget itself. */
  inFlightBytes(domain: string, bytes: number, limit: number): void;
  /** ApproximateNumberOfMessagesNotVisible of the domain queue, refreshed with queueSize. */
  queueInFlight(domain: string, size: number): void;
  /** Messages in the domain's dead-letter queue, and how long ago the oldest of them was first sent (0 when none). */
  deadLetters(domain: string, messages: number, oldestAgeSeconds: number): void;
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
    name: 'ses_worker_in_flight_messages',
    help: 'Messages being processed.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const queueSize = new Gauge({
    name: 'ses_worker_queue_messages',
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
  const recipients = new Counter({
    name: 'ses_worker_recipients_total',
    help: 'Recipients of finished messages, by final state.',
    labelNames: ['domain', 'state'] as const,
    registers: [registry],
  });
  const effects = new Counter({
    name: 'ses_worker_effects_total',
    help: 'Rule effects (forwards, auto-replies) of finished messages, by kind and status (and reason, when suppressed).',
    labelNames: ['domain', 'kind', 'status', 'reason'] as const,
    registers: [registry],
  });
  const deploymentFaults = new Counter({
    name: 'ses_worker_deployment_faults_total',
    help: 'Replies or checks showing the deployment is wrong (mail retried, not ended), by kind.',
    labelNames: ['domain', 'kind'] as const,
    registers: [registry],
  });
  const deploymentChecks = new Gauge({
    name: 'ses_worker_deployment_check_failed',
    help: '1 while a deployment check (table, queue, mail server replies) fails for the domain.',
    labelNames: ['domain', 'check'] as const,
    registers: [registry],
  });
  const ledgerErrors = new Counter({
    name: 'ses_worker_ledger_errors_total',
    help: 'Failed writes to the idempotency ledger, by operation.',
    labelNames: ['domain', 'operation'] as const,
    registers: [registry],
  });
  const heartbeatFailures = new Counter({
    name: 'ses_worker_visibility_heartbeat_failures_total',
    help: 'Visibility heartbeats (ChangeMessageVisibility) that failed.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const deleteFailures = new Counter({
    name: 'ses_worker_sqs_delete_failures_total',
    help: 'Finished messages SQS did not delete (they reappear; the ledger or S3 metadata recognises them).',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const mailLimits = new Counter({
    name: 'ses_worker_mail_limits_total',
    help: 'Mail-controlled sizes past their bound (the mail is delivered, the feature needing the parse skipped).',
    labelNames: ['domain', 'limit'] as const,
    registers: [registry],
  });
  const inFlightBytes = new Gauge({
    name: 'ses_worker_in_flight_bytes',
    help: 'Bytes of mail held in memory by the domain (IN_FLIGHT_BYTES budget).',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  // A scrape every 15 s misses short peaks; the high-water mark shows whether the budget ever held more than it
  // should (and how close a domain gets to IN_FLIGHT_BYTES) without sampling.
  const inFlightBytesPeak = new Gauge({
    name: 'ses_worker_in_flight_peak_bytes',
    help: 'Highest ses_worker_in_flight_bytes since the poller thread started.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const peakBytes = new Map<string, number>();
  const inFlightBytesLimit = new Gauge({
    name: 'ses_worker_in_flight_limit_bytes',
    help: 'The per-domain budget of mail bytes in memory (IN_FLIGHT_BYTES).',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const queueInFlight = new Gauge({
    name: 'ses_worker_queue_in_flight_messages',
    help: 'ApproximateNumberOfMessagesNotVisible of the domain queue, refreshed periodically.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const dlqMessages = new Gauge({
    name: 'ses_worker_dlq_messages',
    help: "ApproximateNumberOfMessages of the domain's dead-letter queue, refreshed periodically.",
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const dlqOldestAge = new Gauge({
    name: 'ses_worker_dlq_oldest_message_age_seconds',
    help: "Age of the oldest message in the domain's dead-letter queue (from a sample; SentTimestamp), 0 when empty.",
    labelNames: ['domain'] as const,
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
    recipientOutcome: (domain, state) => recipients.inc({ domain, state }),
    // `reason=""` on the others: the same label set on every series (Prometheus reads an empty label as absent).
    effect: (domain, kind, status, reason) => effects.inc({ domain, kind, status, reason: reason ?? '' }),
    deploymentFault: (domain, kind) => deploymentFaults.inc({ domain, kind }),
    deploymentCheck: (domain, check, failing) => deploymentChecks.set({ domain, check }, failing ? 1 : 0),
    ledgerError: (domain, operation) => ledgerErrors.inc({ domain, operation }),
    heartbeatFailed: (domain) => heartbeatFailures.inc({ domain }),
    deleteFailed: (domain, count) => deleteFailures.inc({ domain }, count),
    mailLimitHit: (domain, limit) => mailLimits.inc({ domain, limit }),
    inFlightBytes: (domain, bytes, limit) => {
      inFlightBytes.set({ domain }, bytes);
      inFlightBytesLimit.set({ domain }, limit);
      const peak = Math.max(peakBytes.get(domain) ?? 0, bytes);
      peakBytes.set(domain, peak);
      inFlightBytesPeak.set({ domain }, peak);
    },
    queueInFlight: (domain, size) => queueInFlight.set({ domain }, size),
    deadLetters: (domain, messages, oldestAgeSeconds) => {
      dlqMessages.set({ domain }, messages);
      dlqOldestAge.set({ domain }, oldestAgeSeconds);
    },
  };
}
