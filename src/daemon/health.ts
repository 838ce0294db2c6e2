import type { OutboundConsumerStatus } from '../outbound/outbound-consumer.ts';
import type { DomainStatus } from './protocol.ts';

export interface DomainHealthInput {
  domain: string;
  status: DomainStatus;
  restarts: number;
}

export interface HealthInput {
  domains: readonly DomainHealthInput[];
  now: number;
  startedAt: number;
  /** A polling domain with no poll and no finished message for this long counts as stuck. */
  staleAfterMs: number;
  draining: boolean;
  mailServerOk: boolean;
  /** The SES sending events consumer; shown, but not part of readiness: delivery does not depend on it. */
  outboundEvents?: OutboundConsumerStatus;
}

export interface HealthReport {
  /** Liveness (/health): false when a poller is dead, restarting or stuck. */
  healthy: boolean;
  /** Readiness (/ready): every queue resolved, the mail server answered, not draining. */
  ready: boolean;
  /** The JSON body of both endpoints; states and times only, no addresses or mail content. */
  body: {
    status: 'ok' | 'unhealthy';
    ready: boolean;
    draining: boolean;
    mailServer: 'up' | 'down';
    outboundEvents?: OutboundConsumerStatus;
    domains: Array<{
      domain: string;
      /** `degraded`: the mail server refuses the domain's mail as misconfigured (`degradedReason`: its reply). */
      state: DomainStatus['state'] | 'stale' | 'degraded';
      lastPollAt: string | null;
      inFlight: number;
      restarts: number;
      pausedReason?: string;
      degradedReason?: string;
      lastError?: string;
    }>;
  };
}

/** The bound after which a poller that is supposed to be polling counts as stuck, from the long-poll wait. */
export function staleBoundMs(waitTimeSeconds: number): number {
  return Math.max(60_000, 3 * (waitTimeSeconds + 5) * 1000);
}

/**
 * Pure: /health and /ready from the pollers' last reported states. A missing queue (`error`), a wrong table (`held`), a
 * deliberate pause (mail server down) and a mail server refusing the domain (`degraded`) keep the process live —
 * restarting it would fix none of them — but not ready.
 */
export function evaluateHealth(input: HealthInput): HealthReport {
  const domains = input.domains.map(({ domain, status, restarts }) => {
    const lastActive = Math.max(status.lastPollAt ?? 0, status.lastActivityAt ?? 0, input.startedAt);
    const stale =
      ['polling', 'starting'].includes(status.state) && input.now - lastActive > input.staleAfterMs;
    const degraded = status.degraded !== undefined && ['polling', 'paused'].includes(status.state);
    return {
      domain,
      state: stale ? ('stale' as const) : degraded ? ('degraded' as const) : status.state,
      lastPollAt: status.lastPollAt ? new Date(status.lastPollAt).toISOString() : null,
      inFlight: status.inFlight,
      restarts,
      ...(status.pausedReason && { pausedReason: status.pausedReason }),
      ...(degraded && { degradedReason: status.degraded }),
      ...(status.lastError && { lastError: status.lastError }),
    };
  });
  const healthy = domains.every((d) => !['dead', 'restarting', 'stale'].includes(d.state));
  const ready = !input.draining && input.mailServerOk && domains.every((d) => d.state === 'polling');
  return {
    healthy,
    ready,
    body: {
      status: healthy ? 'ok' : 'unhealthy',
      ready,
      draining: input.draining,
      mailServer: input.mailServerOk ? 'up' : 'down',
      ...(input.outboundEvents && { outboundEvents: input.outboundEvents }),
      domains,
    },
  };
}
