import type { RetrySettings } from './retry-policy.ts';

/** SQS limits: a visibility timeout or delay is at most 12 hours; a long poll at most 20 s; a receive 10 messages. */
const MAX_VISIBILITY_SECONDS = 43_200;

export interface PollerOptions {
  /** Long-poll wait of each ReceiveMessage (0..20). */
  waitTimeSeconds: number;
  /** Messages per ReceiveMessage (1..10). */
  maxMessages: number;
  /** Messages processed at once. */
  concurrency: number;
  /**
   * Long polls at once. One receive returns at most `maxMessages` after a round trip, so a single poll in flight
   * caps the intake at maxMessages per round trip however large `concurrency` is; each further receiver only
   * polls while there is room for a full batch. Default: one per `4 × maxMessages` of concurrency, at least 1.
   */
  receivers?: number;
  /**
   * IDLE_POLL_ALIGN_MS: after a receive that came back empty, the next long poll starts on the clock's next step of
   * this many milliseconds (0: at once). Empty long polls then end together, so a process serving many idle domains
   * wakes once for a group of them, not once for each: the wake-up is a large part of an idle poll's CPU
   * (BENCHMARKS.md, "Idle polls in step"). At most 5 s, well inside the stale bound of /health.
   */
  idlePollAlignMs: number;
  retry: RetrySettings;
  /** The queue's visibility timeout: a message still being processed gets it renewed by the heartbeat. */
  visibilityTimeoutSeconds: number;
  /** How often the heartbeat renews (seconds); default a third of the visibility timeout. */
  heartbeatSeconds?: number;
  /** How mail waiting for an outage (the mail server down, SES refusing) is held and retried. */
  outage?: OutageOptions;
  /** A table call failed as a missing or misshapen table would: the tables should be checked again now. */
  onTableFault?: (awsCode: string) => void;
}

export interface OutageOptions {
  /** Messages held at most (beyond: the ordinary retry schedule); default 10 per processing slot. */
  parkCapacity?: number;
  /** Visibility a held message is kept at, renewed every third of it; default 300 s. */
  holdSeconds?: number;
  /** How often one held message is retried to see whether its component is back; default 30 s. */
  probeSeconds?: number;
}

/** The options with every default filled in, checked. */
export type ResolvedPollerOptions = Required<Omit<PollerOptions, 'onTableFault' | 'outage'>> &
  Pick<PollerOptions, 'onTableFault'> & { outage: Required<OutageOptions> };

/** A poller option that cannot work, named with why; the domain does not start with it. */
export class PollerOptionsError extends Error {
  override readonly name = 'PollerOptionsError';
}

/** Checks every option once, before the poller starts, and fills in the defaults. */
export function resolvePollerOptions(options: PollerOptions): ResolvedPollerOptions {
  integer('waitTimeSeconds', options.waitTimeSeconds, 0, 20);
  integer('maxMessages', options.maxMessages, 1, 10);
  integer('concurrency', options.concurrency, 1, 100_000);
  const receivers =
    options.receivers ?? Math.max(1, Math.floor(options.concurrency / (4 * options.maxMessages)));
  integer('receivers', receivers, 1, options.concurrency);
  integer('idlePollAlignMs', options.idlePollAlignMs, 0, 5_000);
  integer('visibilityTimeoutSeconds', options.visibilityTimeoutSeconds, 1, MAX_VISIBILITY_SECONDS);
  const heartbeatSeconds = options.heartbeatSeconds ?? options.visibilityTimeoutSeconds / 3;
  if (!(heartbeatSeconds > 0 && heartbeatSeconds < options.visibilityTimeoutSeconds)) {
    throw new PollerOptionsError(
      `the heartbeat (every ${heartbeatSeconds} s) must come before the visibility timeout ` +
        `(${options.visibilityTimeoutSeconds} s) runs out`,
    );
  }
  const { retry } = options;
  if (retry.schedule.length === 0) throw new PollerOptionsError('retry.schedule is empty');
  retry.schedule.forEach((seconds, i) => integer(`retry.schedule[${i}]`, seconds, 0, MAX_VISIBILITY_SECONDS));
  integer('retry.maxReceives', retry.maxReceives, 1, 1000);
  integer('retry.claimLeaseSeconds', retry.claimLeaseSeconds, 1, MAX_VISIBILITY_SECONDS);
  const outage = {
    parkCapacity: options.outage?.parkCapacity ?? 10 * options.concurrency,
    holdSeconds: options.outage?.holdSeconds ?? 300,
    probeSeconds: options.outage?.probeSeconds ?? 30,
  };
  integer('outage.parkCapacity', outage.parkCapacity, 0, 1_000_000);
  integer('outage.holdSeconds', outage.holdSeconds, 3, MAX_VISIBILITY_SECONDS);
  if (!(outage.probeSeconds > 0 && outage.probeSeconds <= 3600))
    throw new PollerOptionsError(
      `outage.probeSeconds is ${outage.probeSeconds}: must be above 0, at most 3600`,
    );
  return { ...options, receivers, heartbeatSeconds, outage };
}

function integer(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max)
    throw new PollerOptionsError(`${name} is ${value}: must be an integer from ${min} to ${max}`);
}
