interface Waiting {
  /** Requests waiting, first come first served. */
  readonly grants: Array<() => void>;
  /** Slots this key holds now. */
  active: number;
  /** When it last got a slot (a grant count; 0: not since it was last idle). */
  lastServed: number;
}

/**
 * At most `limit` holders at once (the connections of a pool), the others waiting per key (a domain). When a slot
 * frees up it goes to the waiting key holding the fewest slots, among equals the one served least recently, so a
 * domain with thousands of mails queued cannot keep another domain's single mail behind them: that mail waits for
 * one slot to free up, not for the backlog. Within a key, first come first served.
 */
export class FairQueue {
  private readonly keys = new Map<string, Waiting>();
  /** Keys with waiting requests, in the order they started waiting (a key served moves to the back). */
  private turn: string[] = [];
  private holders = 0;
  private queued = 0;
  private grants = 0;

  constructor(private readonly limit: number) {}

  /** Slots held now (never above the limit). */
  get active(): number {
    return this.holders;
  }

  /** Requests waiting for a slot. */
  get waiting(): number {
    return this.queued;
  }

  /** Resolves with the slot's release once `key` gets a slot. */
  acquire(key: string): Promise<() => void> {
    const entry = this.entry(key);
    if (this.holders < this.limit && this.queued === 0) return Promise.resolve(this.grant(key, entry));
    return new Promise((resolve) => {
      entry.grants.push(() => resolve(this.grant(key, entry)));
      this.queued += 1;
      if (!this.turn.includes(key)) this.turn.push(key);
    });
  }

  private grant(key: string, entry: Waiting): () => void {
    this.holders += 1;
    entry.active += 1;
    entry.lastServed = ++this.grants;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holders -= 1;
      entry.active -= 1;
      if (entry.active === 0 && entry.grants.length === 0) this.keys.delete(key);
      this.next();
    };
  }

  private next(): void {
    while (this.holders < this.limit && this.turn.length > 0) {
      const key = this.fewestActive();
      const entry = this.entry(key);
      const grant = entry.grants.shift()!;
      this.queued -= 1;
      this.turn = this.turn.filter((k) => k !== key);
      if (entry.grants.length > 0) this.turn.push(key);
      grant();
    }
  }

  /** The waiting key holding the fewest slots; among equals, the one served least recently, then the first in turn. */
  private fewestActive(): string {
    let best = this.turn[0]!;
    for (const key of this.turn) {
      const entry = this.entry(key);
      const leader = this.entry(best);
      if (
        entry.active < leader.active ||
        (entry.active === leader.active && entry.lastServed < leader.lastServed)
      )
        best = key;
    }
    return best;
  }

  private entry(key: string): Waiting {
    let entry = this.keys.get(key);
    if (!entry) {
      entry = { grants: [], active: 0, lastServed: 0 };
      this.keys.set(key, entry);
    }
    return entry;
  }
}
