import type { Clock } from '../clock.ts';
import { WorkerError } from '../errors.ts';

/**
 * Paces the sends through SES to the account's sending rate, for the whole process: every domain thread asks the
 * one pacer in the main thread (daemon/send-pacer-relay.ts), so a burst — a mailing list to a forwarding alias —
 * goes out at the rate SES allows instead of being throttled and failing.
 */
export interface SendPacer {
  /**
   * Resolves when a send may go out. `onWait` hears `true` when the caller has to wait for a permit and `false`
   * when it got one (only if it waited), so the poller can free the message's slot meanwhile.
   */
  acquire(options?: PermitOptions): Promise<void>;
  /** SES answered "too many requests" although paced (another sender shares the account): slow down for a while. */
  throttled(): void;
}

export interface PermitOptions {
  signal?: AbortSignal;
  onWait?: (waiting: boolean) => void;
}

/** No pacing: tests and the CLI, which send a handful. */
export const unpaced: SendPacer = { acquire: async () => undefined, throttled: () => undefined };

export interface TokenBucketOptions {
  /** Sends per second (SES MaxSendRate). */
  rate: number;
  clock: Clock;
  /** Set/clear a timer; injected so tests drive time. */
  timers?: {
    set: (fn: () => void, ms: number) => unknown;
    clear: (handle: unknown) => void;
  };
}

/** After a throttle the rate is halved; every this long without one it grows back by a tenth of the quota. */
const RECOVERY_STEP_MS = 5_000;
const MIN_RATE = 0.5;

/**
 * A token bucket of one token: sends go out evenly spaced at the rate, never in a burst, since SES counts its
 * maximum sending rate over any one second. First come, first served; additive recovery after a multiplicative
 * backoff when SES throttles anyway.
 */
export class TokenBucketPacer implements SendPacer {
  private quota: number;
  private rate: number;
  private tokens: number;
  private refilledAt: number;
  private lastThrottleAt = -Infinity;
  private readonly waiters: Array<{ grant: () => void }> = [];
  private timer: unknown;
  private readonly timers: NonNullable<TokenBucketOptions['timers']>;

  constructor(private readonly options: TokenBucketOptions) {
    this.quota = Math.max(MIN_RATE, options.rate);
    this.rate = this.quota;
    this.tokens = 1;
    this.refilledAt = options.clock.now();
    this.timers = options.timers ?? {
      set: (fn, ms) => setTimeout(fn, ms),
      clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
    };
  }

  /** Sends per second allowed right now. */
  get currentRate(): number {
    this.recover();
    return this.rate;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** The account's quota changed (GetAccount refreshed, or the setting). */
  setQuota(rate: number): void {
    this.quota = Math.max(MIN_RATE, rate);
    this.rate = Math.min(this.rate, this.quota);
    if (this.lastThrottleAt === -Infinity) this.rate = this.quota;
  }

  acquire(options: PermitOptions = {}): Promise<void> {
    if (options.signal?.aborted) return Promise.reject(permitAborted());
    this.refill();
    if (this.waiters.length === 0 && this.tokens >= 1) {
      this.tokens -= 1;
      return Promise.resolve();
    }
    options.onWait?.(true);
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: () => {
          options.signal?.removeEventListener('abort', onAbort);
          options.onWait?.(false);
          resolve();
        },
      };
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        options.onWait?.(false);
        reject(permitAborted());
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.schedule();
    });
  }

  throttled(): void {
    const now = this.options.clock.now();
    // One backoff per burst of throttles: the sends already on their way were paced at the old rate.
    if (now - this.lastThrottleAt < 1000) return;
    this.recover();
    this.lastThrottleAt = now;
    this.rate = Math.max(MIN_RATE, this.rate / 2);
    this.tokens = Math.min(this.tokens, 0);
  }

  private recover(): void {
    if (this.rate >= this.quota) return;
    const now = this.options.clock.now();
    const steps = Math.floor((now - this.lastThrottleAt) / RECOVERY_STEP_MS);
    this.rate = Math.min(this.quota, this.rate + steps * (this.quota / 10));
    if (steps > 0) this.lastThrottleAt += steps * RECOVERY_STEP_MS;
  }

  private refill(): void {
    const now = this.options.clock.now();
    this.recover();
    this.tokens = Math.min(1, this.tokens + ((now - this.refilledAt) / 1000) * this.rate);
    this.refilledAt = now;
  }

  private schedule(): void {
    if (this.timer !== undefined) return;
    this.refill();
    const wait = this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
    this.timer = this.timers.set(() => this.grantDue(), wait);
  }

  private grantDue(): void {
    this.timer = undefined;
    this.refill();
    while (this.waiters.length > 0 && this.tokens >= 1) {
      this.tokens -= 1;
      this.waiters.shift()!.grant();
    }
    if (this.waiters.length > 0) this.schedule();
  }
}

export function permitAborted(): WorkerError {
  return new WorkerError('SHUTTING_DOWN', 'stopped while waiting for an SES send permit', {
    temporary: true,
  });
}
