import { WorkerError } from '../errors.ts';
import { ByteBudget } from './byte-budget.ts';

interface Waiter {
  bytes: number;
  resolve: () => void;
}

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
 * not overtaken when its turn comes (a large mail is not starved by a stream of small ones).
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
  tryAcquire(domain: string, bytes: number): (() => void) | undefined {
    const amount = sanitize(bytes);
    if (this.turn.length > 0 || this.verdict(domain, amount) !== 'grant') return undefined;
    this.take(domain, amount);
    return this.freer(domain, amount);
  }

  /** @internal (BudgetShare) */
  async acquire(domain: string, bytes: number, signal?: AbortSignal): Promise<() => void> {
    const amount = sanitize(bytes);
    if (signal?.aborted) throw shuttingDown();
    const free = this.tryAcquire(domain, amount);
    if (free) return free;
    const holder = this.holder(domain);
    await new Promise<void>((resolve, reject) => {
      // The signal lives as long as the poller: every wait must take its listener away again.
      const onAbort = () => {
        const index = holder.waiters.indexOf(waiter);
        if (index >= 0) holder.waiters.splice(index, 1);
        if (holder.waiters.length === 0) this.turn = this.turn.filter((d) => d !== domain);
        this.drain();
        reject(shuttingDown());
      };
      const waiter: Waiter = {
        bytes: amount,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      holder.waiters.push(waiter);
      if (!this.turn.includes(domain)) this.turn.push(domain);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.drain();
    });
    return this.freer(domain, amount);
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

  /** Serves the waiting domains in turn until the next in turn cannot be served. */
  private drain(): void {
    for (;;) {
      let served = false;
      for (const domain of this.turn) {
        const holder = this.holder(domain);
        const head = holder.waiters[0]!;
        const verdict = this.verdict(domain, head.bytes);
        if (verdict === 'no-room') return;
        if (verdict === 'over-share') continue;
        holder.waiters.shift();
        // Served: to the back of the line, or out of it when it waits for nothing more.
        this.turn = this.turn.filter((d) => d !== domain);
        if (holder.waiters.length > 0) this.turn.push(domain);
        this.take(domain, head.bytes);
        head.resolve();
        served = true;
        break;
      }
      if (!served) return;
    }
  }

  private take(domain: string, amount: number): void {
    const holder = this.holder(domain);
    holder.used += amount;
    this.used += amount;
    holder.onChange(holder.used);
  }

  private freer(domain: string, amount: number): () => void {
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      const holder = this.holder(domain);
      holder.used -= amount;
      this.used -= amount;
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

/** A domain's view of a FairByteBudget, with ByteBudget's interface. */
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

  override tryAcquire(bytes: number): (() => void) | undefined {
    return this.pool.tryAcquire(this.domain, bytes);
  }

  override acquire(bytes: number, signal?: AbortSignal): Promise<() => void> {
    return this.pool.acquire(this.domain, bytes, signal);
  }
}

function sanitize(bytes: number): number {
  return Number.isFinite(bytes) ? Math.max(0, Math.ceil(bytes)) : 0;
}

function shuttingDown(): WorkerError {
  return new WorkerError('SHUTTING_DOWN', 'stopped while waiting for memory budget', { temporary: true });
}
