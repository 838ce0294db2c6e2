/**
 * One transaction per mailbox at a time. Dovecot 2.3's duplicate database (where before.dovecot.sieve remembers
 * delivery ids) loses marks when two deliveries to the same user commit at once: each writes back the file as it
 * read it plus its own mark (BENCHMARKS.md has the measurement). Serialising our own transactions per recipient
 * keeps every mark.
 */
export class MailboxLocks {
  /** Per mailbox, the end of the last transaction queued for it. */
  private readonly tails = new Map<string, Promise<void>>();
  private waitingCount = 0;

  /** Transactions waiting for a mailbox another transaction of ours is delivering to. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Runs `work` once no earlier transaction to any of `mailboxes` is still running. */
  async run<T>(mailboxes: readonly string[], work: () => Promise<T>): Promise<T> {
    const keys = [...new Set(mailboxes.map((m) => m.toLowerCase()))];
    const earlier = keys.flatMap((key) => {
      const tail = this.tails.get(key);
      return tail ? [tail] : [];
    });
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    // Registered before any await, so a later transaction always queues behind this one: waits only ever point
    // at earlier transactions, and no cycle (deadlock) can form.
    for (const key of keys) this.tails.set(key, mine);
    if (earlier.length > 0) {
      this.waitingCount += 1;
      await Promise.all(earlier);
      this.waitingCount -= 1;
    }
    try {
      return await work();
    } finally {
      done();
      for (const key of keys) if (this.tails.get(key) === mine) this.tails.delete(key);
    }
  }
}
