import {
  legacyKey,
  type Claim,
  type EffectLedger,
  type EffectMark,
  type LedgerVerdict,
  type LegacyState,
} from '../aws/effect-ledger.ts';
import { WorkerError, errorMessage, toWorkerError } from '../errors.ts';
import type { BudgetAccount } from '../flow-control/byte-budget.ts';
import type { Logger } from '../log/logger.ts';
import type { LedgerOperation, PipelineMetrics } from '../metrics/pipeline-metrics.ts';

/** What guarding one message's effects needs: the ledger, and where the message's live claim is kept. */
export interface GuardDeps {
  ledger: EffectLedger;
  /** Claims of the messages being processed; the visibility heartbeat renews their leases. */
  liveClaims: Set<Claim>;
  domain: string;
  logger: Logger;
  metrics: PipelineMetrics;
  sleep: (ms: number) => Promise<void>;
}

/** The message whose effects are guarded: its record's key, and what its effects' names are prefixed with. */
export interface GuardedMessage {
  key: string;
  sesMessageId: string;
  generation: number;
  /** A retry or a replay: earlier attempts may have left records of the ledger's first shape. */
  retried: boolean;
  /** This message's share of IN_FLIGHT_BYTES, for the copies its effects build (none without a budget). */
  budget?: BudgetAccount;
  signal?: AbortSignal;
}

/**
 * One key's fate: `done-before` (an earlier attempt did it), `busy` (another worker holds the message's live lease),
 * `maybe-sent` (an earlier attempt began an SES send and never recorded its end: it may have gone out, so it is
 * never sent again), `unclaimed` (the ledger could not be asked, e.g. DynamoDB throttled: nothing happened, retry
 * later), or `ran` with the effect's result.
 */
export type Guarded<R> =
  | { state: 'done-before' }
  | { state: 'busy' }
  | { state: 'maybe-sent' }
  | { state: 'unclaimed'; error: WorkerError }
  | { state: 'ran'; result: R };

export interface GuardOptions {
  /**
   * The effect goes out through SES, which has no duplicate check of its own: a claim of the ledger's first shape
   * found lapsed may have sent it, so it counts as `maybe-sent`, like a `sending` mark.
   */
  throughSes?: boolean;
}

type Standing =
  { state: 'claimed'; claim: Claim } | { state: 'busy' } | { state: 'unclaimed'; error: WorkerError };

/**
 * One attempt's standing in the ledger: the message's lease, claimed as the attempt starts (alongside the fetch),
 * and the marks of its effects. Every effect runs through `run` (skipping what an earlier attempt did); what
 * happened is written once, by `finish`, together with giving the lease back — so the DynamoDB writes per mail do
 * not grow with its recipients or effects. The one write before that is `markSending`, just before an SES send.
 */
export class GuardContext {
  readonly budget: BudgetAccount | undefined;
  readonly signal: AbortSignal | undefined;
  private readonly standing: Promise<Standing>;
  /** What each effect came to: as the record said at the claim, and as this attempt changed it. */
  private readonly marks = new Map<string, EffectMark>();
  /** Marks as the record holds them, as far as this attempt knows. */
  private readonly written = new Map<string, EffectMark>();
  private readonly legacyLookups = new Map<string, Promise<LegacyState | undefined>>();
  private finished = false;

  constructor(
    private readonly deps: GuardDeps,
    private readonly message: GuardedMessage,
  ) {
    this.budget = message.budget;
    this.signal = message.signal;
    this.standing = this.claim();
  }

  private async claim(): Promise<Standing> {
    const { deps, message } = this;
    try {
      const result = await deps.ledger.claim(message.key, { legacy: message.retried });
      if (result.state === 'busy') return result;
      for (const [name, mark] of result.marks) {
        this.marks.set(name, mark);
        this.written.set(name, mark);
      }
      deps.liveClaims.add(result.claim);
      return { state: 'claimed', claim: result.claim };
    } catch (error) {
      deps.metrics.ledgerError(deps.domain, 'claim');
      return { state: 'unclaimed', error: toWorkerError(error, 'ledger claim') };
    }
  }

  /**
   * Runs `effect` once for the names still owed, after skipping those an earlier attempt did or may have done, and
   * notes which of them `happened` (written by `finish`). Once an effect happened, failing to write that down never
   * makes it look undone.
   */
  async run<R>(
    names: readonly string[],
    effect: (owed: readonly string[]) => Promise<ReadonlyMap<string, R>>,
    happened: (result: R) => boolean,
    options: GuardOptions = {},
  ): Promise<Map<string, Guarded<R>>> {
    const fates = new Map<string, Guarded<R>>();
    const standing = await this.standing;
    if (standing.state !== 'claimed') {
      for (const name of names) fates.set(name, standing);
      return fates;
    }
    const owed: string[] = [];
    for (const name of names) {
      const fate = await this.earlierFate(standing.claim, name, options);
      if (fate) fates.set(name, fate);
      else owed.push(name);
    }
    if (owed.length === 0) return fates;
    const results = await effect(owed);
    for (const name of owed) {
      const result = results.get(name);
      if (result !== undefined && happened(result)) this.marks.set(name, 'done');
      else if (this.marks.get(name) === 'sending') this.marks.delete(name);
      fates.set(
        name,
        result === undefined
          ? {
              state: 'unclaimed',
              error: new WorkerError('INTERNAL', `no result for effect ${name}`, { temporary: true }),
            }
          : { state: 'ran', result },
      );
    }
    return fates;
  }

  /** What earlier attempts left for `name`: undefined when it is owed. */
  private async earlierFate(
    claim: Claim,
    name: string,
    options: GuardOptions,
  ): Promise<Guarded<never> | undefined> {
    const mark = this.marks.get(name);
    if (mark === 'done') return { state: 'done-before' };
    if (mark === 'sending') return { state: 'maybe-sent' };
    if (!claim.legacy) return undefined;
    let legacy: LegacyState | undefined;
    try {
      legacy = await this.legacyState(name);
    } catch (error) {
      this.deps.metrics.ledgerError(this.deps.domain, 'claim');
      return { state: 'unclaimed', error: toWorkerError(error, 'ledger lookup') };
    }
    if (legacy === 'busy') return { state: 'busy' };
    if (legacy === 'done') {
      this.marks.set(name, 'done');
      return { state: 'done-before' };
    }
    if (legacy === 'lapsed' && options.throughSes) {
      this.marks.set(name, 'sending');
      return { state: 'maybe-sent' };
    }
    return undefined;
  }

  /** A record of the first shape for `name`, looked up once per attempt. */
  private legacyState(name: string): Promise<LegacyState | undefined> {
    let lookup = this.legacyLookups.get(name);
    if (!lookup) {
      const key = legacyKey(this.message.sesMessageId, name, this.message.generation);
      lookup = this.deps.ledger.legacy([key]).then((states) => states.get(key));
      this.legacyLookups.set(name, lookup);
    }
    return lookup;
  }

  /**
   * Marks `name` as being sent through SES, with every mark this attempt has not written yet, before the send: an
   * attempt that finds the mark later knows the mail may have gone out and never sends it again. Throws (a temporary
   * WorkerError: the send is deferred, not made) when the write fails or the lease is no longer ours.
   */
  async markSending(name: string): Promise<void> {
    const standing = await this.standing;
    if (standing.state !== 'claimed')
      throw new WorkerError('INTERNAL', `send of ${name} without a claim`, { temporary: true });
    this.marks.set(name, 'sending');
    const changes = new Map([...this.marks].filter(([n, mark]) => this.written.get(n) !== mark));
    let ours: boolean;
    try {
      ours = await this.deps.ledger.mark(standing.claim, changes);
    } catch (error) {
      this.marks.delete(name);
      this.deps.metrics.ledgerError(this.deps.domain, 'sending');
      throw new WorkerError(
        'DYNAMODB_ERROR',
        `not sent: the ledger could not record the send: ${errorMessage(error)}`,
        {
          temporary: true,
          cause: error,
        },
      );
    }
    if (!ours) {
      this.marks.delete(name);
      this.deps.metrics.ledgerError(this.deps.domain, 'sending');
      throw new WorkerError('DYNAMODB_ERROR', 'not sent: the message’s ledger lease is no longer ours', {
        temporary: true,
      });
    }
    for (const [n, mark] of changes) this.written.set(n, mark);
  }

  /**
   * The attempt's last ledger write: what happened, the verdict when the message is final, and the lease given
   * back. Retried with backoff; a final failure is logged and counted, and the marks written before (a `sending`
   * mark) keep an SES send from being repeated. True when the record now holds all of it.
   */
  async finish(verdict?: LedgerVerdict): Promise<boolean> {
    if (this.finished) return false;
    this.finished = true;
    const standing = await this.standing;
    if (standing.state !== 'claimed') return false;
    const { claim } = standing;
    const recorded = [...this.marks].some(
      ([name, mark]) => mark === 'done' && this.written.get(name) !== 'done',
    );
    try {
      return await this.complete(claim, recorded ? 'complete' : 'abandon', verdict);
    } finally {
      this.deps.liveClaims.delete(claim);
    }
  }

  private async complete(
    claim: Claim,
    operation: LedgerOperation,
    verdict?: LedgerVerdict,
  ): Promise<boolean> {
    const { deps } = this;
    for (let attempt = 1; ; attempt++) {
      try {
        if ((await deps.ledger.complete(claim, this.marks, verdict)) === 'completed')
          return deps.ledger.enabled;
        deps.metrics.ledgerError(deps.domain, operation);
        deps.logger.error(
          { key: claim.key },
          "the message's ledger record is no longer ours (the lease ran out and another worker took over): " +
            'what this attempt did may happen twice',
        );
        return false;
      } catch (error) {
        if (attempt >= RECORD_ATTEMPTS || (error instanceof WorkerError && !error.temporary)) {
          deps.metrics.ledgerError(deps.domain, operation);
          deps.logger.error(
            { key: claim.key, err: errorMessage(error) },
            operation === 'complete'
              ? 'effects done but not recorded in the ledger'
              : 'could not give the ledger lease back: the message waits for it to run out',
          );
          return false;
        }
        await deps.sleep(100 * 2 ** (attempt - 1));
      }
    }
  }
}

/** Attempts at the last write before giving up (logged and counted). */
const RECORD_ATTEMPTS = 5;
