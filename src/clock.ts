import { setTimeout as delay } from 'node:timers/promises';

/** Time as a dependency: tests inject a clock to cross an auto-reply interval or skip retry pauses. */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => delay(ms, undefined, signal ? { signal } : undefined),
};

/** Exponential backoff with full jitter, capped: attempt 0 → up to `baseMs`. */
export function backoffMs(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Resolves after `ms`, or at once when `signal` aborts (never rejects). `unref`: the wait alone does not keep the
 * process (or thread) alive.
 */
export function sleepUnlessAborted(
  ms: number,
  signal: AbortSignal,
  options: { unref?: boolean } = {},
): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (options.unref) timer.unref();
    signal.addEventListener('abort', done);
  });
}
