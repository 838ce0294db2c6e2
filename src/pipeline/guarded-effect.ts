import type { Claim, EffectLedger } from '../aws/effect-ledger.ts';
import { WorkerError, errorMessage, toWorkerError } from '../errors.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';

/** What running ledger-guarded effects needs: the ledger, and the claims the current message holds. */
export interface GuardContext {
  ledger: EffectLedger;
  /** Claims of the message being processed that are in progress; the visibility heartbeat renews their leases. */
  liveClaims: Set<Claim>;
  domain: string;
  logger: Logger;
  metrics: PipelineMetrics;
  sleep: (ms: number) => Promise<void>;
}

/**
 * One key's fate: `done-before` (an earlier attempt did it), `busy` (another worker holds a live claim), `unclaimed`
 * (the claim itself failed, e.g. DynamoDB throttled: nothing happened, retry later), or `ran` with the effect's
 * result.
 */
export type Guarded<R> =
  | { state: 'done-before' }
  | { state: 'busy' }
  | { state: 'unclaimed'; error: WorkerError }
  | { state: 'ran'; result: R };

/** The claims of one step, taken before its effect: won keys with their claims, and the fates of the rest. */
export interface ClaimSet {
  readonly claims: Map<string, Claim>;
  readonly fates: Map<string, Guarded<never>>;
}

/**
 * Claims every key at once. Kept apart from running the effect so a message can claim its deliveries while its mail
 * is still being fetched: both need only the notification.
 */
export async function claimAll(ctx: GuardContext, keys: readonly string[]): Promise<ClaimSet> {
  const set: ClaimSet = { claims: new Map(), fates: new Map() };
  await Promise.all(
    keys.map(async (key) => {
      try {
        const result = await ctx.ledger.claim(key);
        if (result.state === 'claimed') {
          set.claims.set(key, result.claim);
          ctx.liveClaims.add(result.claim);
        } else set.fates.set(key, { state: result.state === 'done' ? 'done-before' : 'busy' });
      } catch (error) {
        ctx.metrics.ledgerError(ctx.domain, 'claim');
        set.fates.set(key, { state: 'unclaimed', error: toWorkerError(error, 'ledger claim') });
      }
    }),
  );
  return set;
}

/** Gives up claims whose effect will not run (the recipient blocked the sender, the mail is a redelivery). */
export async function abandonClaims(
  ctx: GuardContext,
  set: ClaimSet,
  keys?: Iterable<string>,
): Promise<void> {
  const chosen = keys ? [...keys].filter((k) => set.claims.has(k)) : [...set.claims.keys()];
  await Promise.all(
    chosen.map((key) => {
      const claim = set.claims.get(key)!;
      set.claims.delete(key);
      return abandon(ctx, claim);
    }),
  );
}

/**
 * The one way to run ledger-guarded effects: claims every key at once, runs `effect` once for the keys won, then
 * records those that `happened` and abandons the others, again all at once — so the DynamoDB round trips per mail
 * do not grow with its recipients. Once an effect happened, failing to record it never makes it look undone.
 */
export async function runGuarded<R>(
  ctx: GuardContext,
  keys: readonly string[] | ClaimSet,
  effect: (claimed: readonly string[]) => Promise<ReadonlyMap<string, R>>,
  happened: (result: R) => boolean,
): Promise<Map<string, Guarded<R>>> {
  const set = 'claims' in keys ? keys : await claimAll(ctx, keys);
  const fates = new Map<string, Guarded<R>>(set.fates);
  const claims = set.claims;
  if (claims.size === 0) return fates;

  let results: ReadonlyMap<string, R>;
  try {
    results = await effect([...claims.keys()]);
  } catch (error) {
    await abandonClaims(ctx, set);
    throw error;
  }
  await Promise.all(
    [...claims].map(async ([key, claim]) => {
      const result = results.get(key);
      if (result === undefined) {
        claims.delete(key);
        await abandon(ctx, claim);
        fates.set(key, {
          state: 'unclaimed',
          error: new WorkerError('INTERNAL', `no result for effect ${key}`, { temporary: true }),
        });
        return;
      }
      await (happened(result) ? record(ctx, claim) : abandon(ctx, claim));
      claims.delete(key);
      fates.set(key, { state: 'ran', result });
    }),
  );
  return fates;
}

/** Attempts at recording an effect that happened, with backoff, before giving up (logged and counted). */
const RECORD_ATTEMPTS = 5;

/**
 * Once the mail server or SES accepted a mail, failing to write that down must not make the effect look undone — a
 * retry would send it again — so the write is retried, and a final failure is reported but does not undo the
 * effect (the claim's lease then lets a later attempt take over; the mailbox's duplicate check catches a copy).
 */
async function record(ctx: GuardContext, claim: Claim): Promise<void> {
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        if ((await ctx.ledger.complete(claim)) === 'lost') {
          ctx.metrics.ledgerError(ctx.domain, 'complete');
          ctx.logger.error(
            { key: claim.key },
            'effect done, but its ledger claim is no longer ours (the lease ran out and another worker took over): it may happen twice',
          );
        }
        return;
      } catch (error) {
        if (attempt >= RECORD_ATTEMPTS || (error instanceof WorkerError && !error.temporary)) {
          ctx.metrics.ledgerError(ctx.domain, 'complete');
          ctx.logger.error(
            { key: claim.key, err: errorMessage(error) },
            'effect done but not recorded in the ledger',
          );
          return;
        }
        await ctx.sleep(100 * 2 ** (attempt - 1));
      }
    }
  } finally {
    ctx.liveClaims.delete(claim);
  }
}

async function abandon(ctx: GuardContext, claim: Claim): Promise<void> {
  ctx.liveClaims.delete(claim);
  try {
    await ctx.ledger.abandon(claim);
  } catch (error) {
    // The claim then blocks the effect until its lease runs out, which delays a retry but never duplicates.
    ctx.metrics.ledgerError(ctx.domain, 'abandon');
    ctx.logger.warn({ key: claim.key, err: errorMessage(error) }, 'could not abandon a ledger claim');
  }
}
