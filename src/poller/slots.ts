/** How many messages waiting for SES may stand in for one processing slot. */
const PARKED_PER_SLOT = 10;

/**
 * The poller's processing slots: messages in flight, slots promised to receives in flight (so two receivers never
 * over-fill the concurrency), and messages parked waiting for an SES send permit, which hold no slot (up to
 * PARKED_PER_SLOT per slot) so the local deliveries behind them are not held up by forwards.
 */
export class Slots {
  private readonly inFlight = new Set<Promise<void>>();
  private reserved = 0;
  private parked = 0;
  private readonly waiters = new Set<() => void>();

  constructor(private readonly concurrency: number) {}

  /** Messages being processed (parked ones included). */
  get busy(): number {
    return this.inFlight.size;
  }

  free(): number {
    const parked = Math.min(this.parked, PARKED_PER_SLOT * this.concurrency);
    return this.concurrency - (this.inFlight.size - parked) - this.reserved;
  }

  /** Resolves once `needed` slots are free, or `stopped()` says to give up waiting. */
  async waitFor(needed: number, stopped: () => boolean): Promise<void> {
    while (!stopped() && this.free() < needed) {
      await new Promise<void>((resolve) => this.waiters.add(resolve));
    }
  }

  /** Promises `count` slots to a receive in flight; the returned function takes the promise back. */
  reserve(count: number): () => void {
    this.reserved += count;
    return () => {
      this.reserved -= count;
    };
  }

  /** Holds a slot while `work` runs; `onDone` is told when it ends. */
  track(work: Promise<void>, onDone: () => void): void {
    this.inFlight.add(work);
    void work.finally(() => {
      this.inFlight.delete(work);
      onDone();
      this.wake();
    });
  }

  /** Resolves when every message in flight now has finished. */
  async drained(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  /** A message starts (true) or stops (false) waiting for an SES permit: meanwhile its slot is free. */
  park(waiting: boolean): void {
    this.parked += waiting ? 1 : -1;
    if (waiting) this.wake();
  }

  /** Wakes every receiver waiting for room (a slot came free, or the poller stops). */
  wake(): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const wake of waiters) wake();
  }
}
