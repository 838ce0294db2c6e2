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
    domains: Array<{
      domain: string;
      state: DomainStatus['state'] | 'stale';
      lastPollAt: string | null;
      inFlight: number;
      restarts: number;
      pausedReason?: string;
      lastError?: string;
    }>;
  };
}

/** The bound after which a poller that is supposed to be polling counts as stuck, from the long-poll wait. */
export function staleBoundMs(waitTimeSeconds: number): number {
  return Math.max(60_000, 3 * (waitTimeSeconds + 5) * 1000);
}

/**
 * Pure: /health and /ready from the pollers' last reported states. A missing queue (`error`) and a deliberate pause
 * (mail server down) keep the process live — restarting it would fix neither — but not ready.
 */
export function evaluateHealth(input: HealthInput): HealthReport {
  const domains = input.domains.map(({ domain, status, restarts }) => {
    const lastActive = Math.max(status.lastPollAt ?? 0, status.lastActivityAt ?? 0, input.startedAt);
    const stale =
      ['polling', 'starting'].includes(status.state) && input.now - lastActive > input.staleAfterMs;
    return {
      domain,
      state: stale ? ('stale' as const) : status.state,
      lastPollAt: status.lastPollAt ? new Date(status.lastPollAt).toISOString() : null,
      inFlight: status.inFlight,
      restarts,
      ...(status.pausedReason && { pausedReason: status.pausedReason }),
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
      domains,
    },
  };
}
