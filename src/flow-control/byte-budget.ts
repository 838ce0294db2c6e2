import { WorkerError } from '../errors.ts';

/** Gives acquired bytes back; calling it again does nothing. */
export type Free = () => void;

/** What holding a mail's bytes needs: `ByteBudget` itself, or one message's `BudgetAccount`. */
export interface MailBudget {
  tryAcquire(bytes: number): Free | undefined;
  acquire(bytes: number, signal?: AbortSignal): Promise<Free>;
}

/** A request waiting for bytes, in a budget's line. */
export interface Waiter {
  bytes: number;
  /** The message the bytes are counted to. */
  account?: BudgetAccount;
  /** The message asking, when it asks for a copy of a mail it already holds. */
  copyFor?: BudgetAccount;
  resolve: () => void;
}

/** A budget's line of waiters, as `waitInLine` uses it. */
export interface WaitingLine {
  add(waiter: Waiter): void;
  remove(waiter: Waiter): void;
  /** Grants whatever can be granted now. */
  drain(): void;
}

/**
 * Puts a request in line and resolves once it is granted. An abort takes it out of the line again and rejects as a
 * temporary SHUTTING_DOWN; the signal lives as long as the poller, so every wait takes its listener away again.
 */
export function waitInLine(
  line: WaitingLine,
  request: Omit<Waiter, 'resolve'>,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      line.remove(waiter);
      if (request.copyFor) request.copyFor.waitingCopies -= 1;
      line.drain();
      reject(shuttingDown());
    };
    const waiter: Waiter = {
      ...request,
      resolve: () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
    };
    if (request.copyFor) request.copyFor.waitingCopies += 1;
    line.add(waiter);
    signal?.addEventListener('abort', onAbort, { once: true });
    // Asking for a copy may be what leaves only stalled messages holding memory.
    line.drain();
  });
}

/**
 * A counting semaphore over mail bytes (IN_FLIGHT_BYTES): concurrent large mails, and the copies their effects build,
 * wait for room instead of all being held in memory at once. First come, first served, so a large request is not
 * starved by a stream of small ones. A request larger than the whole budget waits for an empty budget and then
 * runs alone. A message asking for a copy already holds its mail: when every byte in use belongs to messages that
 * wait for a copy and hold none, nothing else would ever free memory, so the first of them gets its copy even past
 * the budget (by at most that copy) and its copies of one mail go one at a time.
 */
export class ByteBudget implements MailBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];
  private readonly line: WaitingLine = {
    add: (waiter) => this.waiters.push(waiter),
    remove: (waiter) => {
      const index = this.waiters.indexOf(waiter);
      if (index >= 0) this.waiters.splice(index, 1);
    },
    drain: () => this.drain(),
  };

  /** `onChange` sees the bytes in use after every change (the in-flight bytes gauge). */
  constructor(
    readonly capacity: number,
    private readonly onChange: (inUse: number) => void = () => undefined,
  ) {}

  get inUse(): number {
    return this.used;
  }

  /** An account for one message: its mail's bytes and the copies its effects build. */
  account(): BudgetAccount {
    return new BudgetAccount(this);
  }

  /** A function that frees the bytes again when they fit right now, without waiting; otherwise undefined. */
  tryAcquire(bytes: number): Free | undefined {
    return this.tryGrant(sanitizeBytes(bytes), undefined);
  }

  /** Resolves with a function that frees the bytes again once they fit; rejects when `signal` aborts first. */
  acquire(bytes: number, signal?: AbortSignal): Promise<Free> {
    return this.grantWhenFree(sanitizeBytes(bytes), undefined, signal);
  }

  /** @internal Grants `amount` now when it fits and nobody waits; `copyFor` counts it as that message's copy. */
  tryGrant(amount: number, account: BudgetAccount | undefined, copyFor?: BudgetAccount): Free | undefined {
    if (!this.fits(amount) || this.waiters.length > 0) return undefined;
    this.take(amount, account, copyFor);
    return this.freer(amount, account, copyFor);
  }

  /** @internal */
  async grantWhenFree(
    amount: number,
    account: BudgetAccount | undefined,
    signal?: AbortSignal,
    copyFor?: BudgetAccount,
  ): Promise<Free> {
    if (signal?.aborted) throw shuttingDown();
    const now = this.tryGrant(amount, account, copyFor);
    if (now) return now;
    await waitInLine(
      this.line,
      { bytes: amount, ...(account && { account }), ...(copyFor && { copyFor }) },
      signal,
    );
    return this.freer(amount, account, copyFor);
  }

  private fits(amount: number): boolean {
    return this.used === 0 || this.used + amount <= this.capacity;
  }

  private take(amount: number, account: BudgetAccount | undefined, copyFor: BudgetAccount | undefined): void {
    this.used += amount;
    if (account) account.held += amount;
    if (copyFor) copyFor.copies += 1;
    this.onChange(this.used);
  }

  private freer(
    amount: number,
    account: BudgetAccount | undefined,
    copyFor: BudgetAccount | undefined,
  ): Free {
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.used -= amount;
      if (account) account.held -= amount;
      if (copyFor) copyFor.copies -= 1;
      this.drain();
      this.onChange(this.used);
    };
  }

  private drain(): void {
    for (;;) {
      const head = this.waiters[0];
      const next = head && this.fits(head.bytes) ? head : this.unstalling();
      if (!next) return;
      this.waiters.splice(this.waiters.indexOf(next), 1);
      if (next.copyFor) next.copyFor.waitingCopies -= 1;
      this.take(next.bytes, next.account, next.copyFor);
      next.resolve();
    }
  }

  /** When every byte in use is held by messages waiting for a copy and holding none: the first such waiter. */
  private unstalling(): Waiter | undefined {
    const stalled = new Set<BudgetAccount>();
    for (const w of this.waiters) if (w.copyFor?.stalled()) stalled.add(w.copyFor);
    let held = 0;
    for (const account of stalled) held += account.held;
    if (stalled.size === 0 || held !== this.used) return undefined;
    return this.waiters.find((w) => w.copyFor !== undefined && stalled.has(w.copyFor));
  }
}

/**
 * One message's share of the budget: its mail's bytes (`tryAcquire`/`acquire`, as the fetch takes them) and the
 * copies its effects build (`acquireCopy`), so the budget can tell a message waiting on itself from one that will
 * give memory back.
 */
export class BudgetAccount implements MailBudget {
  /** @internal Bytes this message holds (its mail and its copies). */
  held = 0;
  /** @internal Copies granted and not yet freed. */
  copies = 0;
  /** @internal Copies waiting for a grant. */
  waitingCopies = 0;

  constructor(private readonly budget: ByteBudget) {}

  tryAcquire(bytes: number): Free | undefined {
    return this.budget.tryGrant(sanitizeBytes(bytes), this);
  }

  acquire(bytes: number, signal?: AbortSignal): Promise<Free> {
    return this.budget.grantWhenFree(sanitizeBytes(bytes), this, signal);
  }

  /** Room for a copy of the mail (a forward, the delivery, a request body): waits, but never on this message itself. */
  acquireCopy(bytes: number, signal?: AbortSignal): Promise<Free> {
    return this.budget.grantWhenFree(sanitizeBytes(bytes), this, signal, this);
  }

  /** @internal Waits for a copy and holds none: it gives nothing back until one is granted. */
  stalled(): boolean {
    return this.copies === 0 && this.waitingCopies > 0;
  }
}

/** A byte count as a budget takes it: a whole, non-negative number. */
export function sanitizeBytes(bytes: number): number {
  return Number.isFinite(bytes) ? Math.max(0, Math.ceil(bytes)) : 0;
}

export function shuttingDown(): WorkerError {
  return new WorkerError('SHUTTING_DOWN', 'stopped while waiting for memory budget', { temporary: true });
}
