import {
  ByteBudget,
  sanitizeBytes,
  shuttingDown,
  waitInLine,
  type BudgetAccount,
  type Free,
  type Waiter,
} from './byte-budget.ts';

interface Holder {
  used: number;
  readonly waiters: Waiter[];
  readonly onChange: (inUse: number) => void;
}

type Verdict = 'grant' | 'over-share' | 'no-room';

/**
 * One byte budget (IN_FLIGHT_BYTES) shared by the domains of a poller thread, each getting a fair share. A domain
 * that holds nothing may take whatever fits (its first mail, however large, can always start); beyond that a domain
 * may hold at most the budget divided by the domains that hold or want bytes, while another domain waits. Waiting
 * domains are served in turn, first come first served within a domain, so a domain with a backlog of thousands
 * cannot keep another's single mail waiting for more than one turn. A request that does not fit the free bytes is
 * not overtaken when its turn comes (a large mail is not starved by a stream of small ones). A domain's messages take
 * accounts of its share as they would of a ByteBudget of their own, and the copy rule holds across the domains: when
 * every byte in use belongs to messages waiting for a copy and holding none, the first of them gets its copy.
 */
export class FairByteBudget {
  private used = 0;
  private readonly holders = new Map<string, Holder>();
  /** Domains with waiters, in the order they get their turn. */
  private turn: string[] = [];

  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.used;
  }

  /** A domain's share: typed as a ByteBudget, so the pipeline and the mail store take it unchanged. */
  share(domain: string, onChange: (inUse: number) => void = () => undefined): ByteBudget {
    this.holders.set(domain, { used: 0, waiters: [], onChange });
    return new BudgetShare(this, domain);
  }

  /** @internal (BudgetShare) */
  held(domain: string): number {
    return this.holder(domain).used;
  }

  /** @internal (BudgetShare) Grants now when nobody waits and the rules allow it; otherwise undefined. */
  tryAcquire(
    domain: string,
    bytes: number,
    account?: BudgetAccount,
    copyFor?: BudgetAccount,
  ): Free | undefined {
    const amount = sanitizeBytes(bytes);
    if (this.turn.length > 0 || this.verdict(domain, amount) !== 'grant') return undefined;
    this.take(domain, amount, account, copyFor);
    return this.freer(domain, amount, account, copyFor);
  }

  /** @internal (BudgetShare) */
  async acquire(
    domain: string,
    bytes: number,
    signal?: AbortSignal,
    account?: BudgetAccount,
    copyFor?: BudgetAccount,
  ): Promise<Free> {
    const amount = sanitizeBytes(bytes);
    if (signal?.aborted) throw shuttingDown();
    const free = this.tryAcquire(domain, amount, account, copyFor);
    if (free) return free;
    const holder = this.holder(domain);
    const line = {
      add: (waiter: Waiter) => {
        holder.waiters.push(waiter);
        if (!this.turn.includes(domain)) this.turn.push(domain);
      },
      remove: (waiter: Waiter) => {
        const index = holder.waiters.indexOf(waiter);
        if (index >= 0) holder.waiters.splice(index, 1);
        if (holder.waiters.length === 0) this.turn = this.turn.filter((d) => d !== domain);
      },
      drain: () => this.drain(),
    };
    await waitInLine(
      line,
      { bytes: amount, ...(account && { account }), ...(copyFor && { copyFor }) },
      signal,
    );
    return this.freer(domain, amount, account, copyFor);
  }

  private verdict(domain: string, amount: number): Verdict {
    if (this.used !== 0 && this.used + amount > this.capacity) return 'no-room';
    const holder = this.holder(domain);
    if (holder.used === 0) return 'grant';
    const othersWait = this.turn.some((d) => d !== domain);
    if (!othersWait || holder.used + amount <= this.fairShare()) return 'grant';
    return 'over-share';
  }

  /** The budget divided by the domains that hold bytes or wait for them. */
  private fairShare(): number {
    let active = 0;
    for (const holder of this.holders.values()) if (holder.used > 0 || holder.waiters.length > 0) active++;
    return this.capacity / Math.max(1, active);
  }

  /** Serves the waiting domains in turn, or a stalled copy, until nothing more can be served. */
  private drain(): void {
    while (this.serveInTurn() || this.unstall()) {
      // Each round granted one waiter; the next may fit now.
    }
  }

  private serveInTurn(): boolean {
    for (const domain of this.turn) {
      const head = this.holder(domain).waiters[0]!;
      const verdict = this.verdict(domain, head.bytes);
      if (verdict === 'no-room') return false;
      if (verdict === 'over-share') continue;
      this.grant(domain, head);
      return true;
    }
    return false;
  }

  /** When every byte in use is held by messages waiting for a copy and holding none: the first such waiter. */
  private unstall(): boolean {
    const stalled = new Set<BudgetAccount>();
    for (const domain of this.turn)
      for (const w of this.holder(domain).waiters) if (w.copyFor?.stalled()) stalled.add(w.copyFor);
    let held = 0;
    for (const account of stalled) held += account.held;
    if (stalled.size === 0 || held !== this.used) return false;
    for (const domain of this.turn) {
      const waiter = this.holder(domain).waiters.find((w) => w.copyFor && stalled.has(w.copyFor));
      if (waiter) {
        this.grant(domain, waiter);
        return true;
      }
    }
    return false;
  }

  /** Served: out of the line, the domain to the back of the turn (or out of it when it waits for nothing more). */
  private grant(domain: string, waiter: Waiter): void {
    const holder = this.holder(domain);
    holder.waiters.splice(holder.waiters.indexOf(waiter), 1);
    this.turn = this.turn.filter((d) => d !== domain);
    if (holder.waiters.length > 0) this.turn.push(domain);
    if (waiter.copyFor) waiter.copyFor.waitingCopies -= 1;
    this.take(domain, waiter.bytes, waiter.account, waiter.copyFor);
    waiter.resolve();
  }

  private take(domain: string, amount: number, account?: BudgetAccount, copyFor?: BudgetAccount): void {
    const holder = this.holder(domain);
    holder.used += amount;
    this.used += amount;
    if (account) account.held += amount;
    if (copyFor) copyFor.copies += 1;
    holder.onChange(holder.used);
  }

  private freer(domain: string, amount: number, account?: BudgetAccount, copyFor?: BudgetAccount): Free {
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      const holder = this.holder(domain);
      holder.used -= amount;
      this.used -= amount;
      if (account) account.held -= amount;
      if (copyFor) copyFor.copies -= 1;
      this.drain();
      holder.onChange(holder.used);
    };
  }

  private holder(domain: string): Holder {
    const holder = this.holders.get(domain);
    if (!holder) throw new Error(`no budget share for ${domain}`);
    return holder;
  }
}

/**
 * A domain's view of a FairByteBudget, with ByteBudget's interface: its grants, and those of the message accounts
 * taken of it, are the pool's.
 */
class BudgetShare extends ByteBudget {
  constructor(
    private readonly pool: FairByteBudget,
    private readonly domain: string,
  ) {
    super(pool.capacity);
  }

  override get inUse(): number {
    return this.pool.held(this.domain);
  }

  override tryGrant(
    amount: number,
    account: BudgetAccount | undefined,
    copyFor?: BudgetAccount,
  ): Free | undefined {
    return this.pool.tryAcquire(this.domain, amount, account, copyFor);
  }

  override grantWhenFree(
    amount: number,
    account: BudgetAccount | undefined,
    signal?: AbortSignal,
    copyFor?: BudgetAccount,
  ): Promise<Free> {
    return this.pool.acquire(this.domain, amount, signal, account, copyFor);
  }
}
