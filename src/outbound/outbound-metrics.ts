import { Counter, Gauge, type Registry } from 'prom-client';
import type { EventTypeLabel } from './outbound-event.ts';

/**
 * `off`: OUTBOUND_EVENTS_QUEUE=none; `queue-missing`: the queue does not exist (looked for again every 30 s);
 * `failing`: receiving fails (permissions, network); `consuming`: the last receive worked.
 */
export const CONSUMER_STATES = [
  'off',
  'starting',
  'consuming',
  'queue-missing',
  'failing',
  'stopped',
] as const;
export type ConsumerState = (typeof CONSUMER_STATES)[number];

/** `recorded`: written and deleted; `ignored`: a sending event that needs no record, deleted; `malformed`: left for
 * the dead-letter queue; `failed`: the write failed, retried later. */
export type EventOutcome = 'recorded' | 'ignored' | 'malformed' | 'failed';
export type ConsumerOperation = 'get-queue-url' | 'receive' | 'delete' | 'change-visibility';

export interface OutboundMetrics {
  event(type: EventTypeLabel, outcome: EventOutcome): void;
  failure(operation: ConsumerOperation): void;
  state(state: ConsumerState): void;
}

/** The outbound events consumer's metrics, in the main thread's registry (it runs there, once per process). */
export function createOutboundMetrics(registry: Registry): OutboundMetrics {
  const events = new Counter({
    name: 'ses_worker_outbound_events_total',
    help: 'SES sending events read from OUTBOUND_EVENTS_QUEUE, by event type and outcome (recorded, ignored, malformed, failed).',
    labelNames: ['type', 'outcome'] as const,
    registers: [registry],
  });
  const failures = new Counter({
    name: 'ses_worker_outbound_events_failures_total',
    help: 'Failed SQS calls of the outbound events consumer, by operation (failed writes: ses_worker_outbound_events_total{outcome="failed"}).',
    labelNames: ['operation'] as const,
    registers: [registry],
  });
  const state = new Gauge({
    name: 'ses_worker_outbound_events_consumer',
    help: '1 for the current state of the outbound events consumer (off, starting, consuming, queue-missing, failing, stopped), 0 for the others.',
    labelNames: ['state'] as const,
    registers: [registry],
  });
  // The series of what normally happens exist from the start, at 0: a dashboard or alert then reads 0, not "no
  // data", and the first event is an increase.
  for (const type of ['send', 'bounce', 'complaint'] as const)
    for (const outcome of ['recorded', 'failed'] as const) events.inc({ type, outcome }, 0);
  const setState = (current: ConsumerState) => {
    for (const s of CONSUMER_STATES) state.set({ state: s }, s === current ? 1 : 0);
  };
  setState('starting');
  return {
    event: (type, outcome) => events.inc({ type, outcome }),
    failure: (operation) => failures.inc({ operation }),
    state: setState,
  };
}
