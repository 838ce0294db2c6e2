import { WorkerError } from '../errors.ts';

/**
 * A counting semaphore over mail bytes: concurrent large mails wait for room instead of all being held in memory
 * at once. A request larger than the whole budget waits for an empty budget and then runs alone, so one huge
 * mail can never deadlock the poller.
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: Array<{ bytes: number; resolve: () => void; reject: (e: unknown) => void }> = [];

  /** `onChange` sees the bytes in use after every change (the in-flight bytes gauge). */
  constructor(
    readonly capacity: number,
    private readonly onChange: (inUse: number) => void = () => undefined,
  ) {}

  get inUse(): number {
    return this.used;
  }

  /** A function that frees the bytes again when they fit right now, without waiting; otherwise undefined. */
  tryAcquire(bytes: number): (() => void) | undefined {
    const amount = sanitize(bytes);
    if (!this.fits(amount) || this.waiters.length > 0) return undefined;
    this.used += amount;
    this.onChange(this.used);
    return this.freer(amount);
  }

  /** Resolves with a function that frees the bytes again once they fit; rejects when `signal` aborts first. */
  async acquire(bytes: number, signal?: AbortSignal): Promise<() => void> {
    const amount = sanitize(bytes);
    if (signal?.aborted) throw shuttingDown();
    if (this.fits(amount) && this.waiters.length === 0) {
      this.used += amount;
      this.onChange(this.used);
      return this.freer(amount);
    }
    await new Promise<void>((resolve, reject) => {
      // The signal lives as long as the poller: every wait must take its listener away again.
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        this.drain();
        reject(shuttingDown());
      };
      const waiter = {
        bytes: amount,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject,
      };
      this.waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    return this.freer(amount);
  }

  private fits(amount: number): boolean {
    return this.used === 0 || this.used + amount <= this.capacity;
  }

  private freer(amount: number): () => void {
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.used -= amount;
      this.drain();
      this.onChange(this.used);
    };
  }

  /** First come, first served: a large waiter is not starved by a stream of small ones. */
  private drain(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const next = this.waiters.shift()!;
      this.used += next.bytes;
      this.onChange(this.used);
      next.resolve();
    }
  }
}

function sanitize(bytes: number): number {
  return Number.isFinite(bytes) ? Math.max(0, Math.ceil(bytes)) : 0;
}

function shuttingDown(): WorkerError {
  return new WorkerError('SHUTTING_DOWN', 'stopped while waiting for memory budget', { temporary: true });
}
