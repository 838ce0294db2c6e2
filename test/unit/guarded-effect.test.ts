import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Writable } from 'node:stream';
import type { Claim, ClaimResult, CompleteResult, EffectLedger } from '../../src/aws/effect-ledger.ts';
import { WorkerError } from '../../src/errors.ts';
import { createLogger } from '../../src/log/logger.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { runGuarded, type GuardContext } from '../../src/pipeline/guarded-effect.ts';

/**
 * A ledger in memory whose every call waits one macrotask, counting how many calls of a kind are in flight at once:
 * "concurrent" is then a count, not a timing.
 */
class CountingLedger implements EffectLedger {
  readonly enabled = true;
  readonly calls: string[] = [];
  readonly inFlight = { claim: 0, complete: 0, abandon: 0 };
  readonly maxInFlight = { claim: 0, complete: 0, abandon: 0 };
  claimResults = new Map<string, ClaimResult['state'] | Error>();
  completeResults: Array<CompleteResult | Error> = [];

  private async step<T>(kind: 'claim' | 'complete' | 'abandon', call: string, answer: () => T): Promise<T> {
    this.calls.push(call);
    this.inFlight[kind] += 1;
    this.maxInFlight[kind] = Math.max(this.maxInFlight[kind], this.inFlight[kind]);
    await new Promise((resolve) => setTimeout(resolve, 1));
    this.inFlight[kind] -= 1;
    return answer();
  }

  claim(key: string): Promise<ClaimResult> {
    return this.step('claim', `claim ${key}`, () => {
      const planned = this.claimResults.get(key) ?? 'claimed';
      if (planned instanceof Error) throw planned;
      if (planned === 'claimed') return { state: 'claimed', claim: { key, token: `token-${key}` } };
      return { state: planned };
    });
  }

  complete(claim: Claim): Promise<CompleteResult> {
    return this.step('complete', `complete ${claim.key} ${claim.token}`, () => {
      const planned = this.completeResults.shift() ?? 'completed';
      if (planned instanceof Error) throw planned;
      return planned;
    });
  }

  renew(): Promise<boolean> {
    return Promise.resolve(true);
  }

  abandon(claim: Claim): Promise<void> {
    return this.step('abandon', `abandon ${claim.key} ${claim.token}`, () => undefined);
  }
}

function context(ledger: EffectLedger) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: 'info',
    redactAddresses: false,
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as never);
        callback();
      },
    }),
  });
  const metrics = createPipelineMetrics();
  const sleeps: number[] = [];
  const ctx: GuardContext = {
    ledger,
    liveClaims: new Set(),
    domain: 'example.com',
    logger,
    metrics,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  };
  const ledgerErrors = async (operation: string): Promise<number> => {
    const metric = await metrics.registry.getSingleMetric('ses_worker_ledger_errors_total')?.get();
    return metric?.values.find((v) => v.labels.operation === operation)?.value ?? 0;
  };
  return { ctx, lines, sleeps, ledgerErrors };
}

const KEYS = ['m|a@example.com|deliver', 'm|b@example.com|deliver', 'm|c@example.com|deliver'];

describe('runGuarded: the one way to run ledger-guarded effects', () => {
  it('claims all keys at once, runs the effect once for the keys won, and records them all at once', async () => {
    const ledger = new CountingLedger();
    const { ctx } = context(ledger);
    const effectCalls: string[][] = [];
    const fates = await runGuarded(
      ctx,
      KEYS,
      async (claimed) => {
        effectCalls.push([...claimed]);
        assert.equal(
          ctx.liveClaims.size,
          3,
          'claims are live (renewed by the heartbeat) while the effect runs',
        );
        return new Map(claimed.map((k) => [k, 'ok']));
      },
      () => true,
    );
    assert.equal(ledger.maxInFlight.claim, 3, 'three claims in flight together');
    assert.equal(ledger.maxInFlight.complete, 3, 'three completes in flight together');
    assert.deepEqual(effectCalls, [KEYS]);
    assert.deepEqual(
      [...fates.values()],
      [
        { state: 'ran', result: 'ok' },
        { state: 'ran', result: 'ok' },
        { state: 'ran', result: 'ok' },
      ],
    );
    assert.equal(ctx.liveClaims.size, 0);
    assert.deepEqual(
      ledger.calls.filter((c) => c.startsWith('complete')).sort(),
      KEYS.map((k) => `complete ${k} token-${k}`),
      'each complete names the owner token of its claim',
    );
  });

  it('skips done and busy keys, reports a failed claim as unclaimed, and runs only what it won', async () => {
    const ledger = new CountingLedger();
    ledger.claimResults.set(KEYS[0] as string, 'done');
    ledger.claimResults.set(KEYS[1] as string, 'busy');
    ledger.claimResults.set(
      KEYS[2] as string,
      new WorkerError('DYNAMODB_ERROR', 'PutItem failed: throttled', { temporary: true }),
    );
    const { ctx, ledgerErrors } = context(ledger);
    let ran = false;
    const fates = await runGuarded(
      ctx,
      KEYS,
      async () => {
        ran = true;
        return new Map();
      },
      () => true,
    );
    assert.equal(ran, false, 'nothing won, nothing run');
    assert.equal(fates.get(KEYS[0] as string)?.state, 'done-before');
    assert.equal(fates.get(KEYS[1] as string)?.state, 'busy');
    const failed = fates.get(KEYS[2] as string);
    assert.equal(failed?.state, 'unclaimed');
    assert.match(failed?.state === 'unclaimed' ? failed.error.message : '', /throttled/);
    assert.equal(await ledgerErrors('claim'), 1);
  });

  it('records what happened and abandons what did not', async () => {
    const ledger = new CountingLedger();
    const { ctx } = context(ledger);
    const fates = await runGuarded(
      ctx,
      KEYS,
      async (claimed) => new Map(claimed.map((k, i) => [k, i === 1 ? 'failed' : 'sent'])),
      (result) => result === 'sent',
    );
    assert.deepEqual(ledger.calls.filter((c) => !c.startsWith('claim')).sort(), [
      `abandon ${KEYS[1]} token-${KEYS[1]}`,
      `complete ${KEYS[0]} token-${KEYS[0]}`,
      `complete ${KEYS[2]} token-${KEYS[2]}`,
    ]);
    assert.equal(fates.get(KEYS[1] as string)?.state, 'ran');
    assert.equal(ctx.liveClaims.size, 0);
  });

  it('counts and logs a complete whose claim is no longer ours, and still reports the effect as done', async () => {
    const ledger = new CountingLedger();
    ledger.completeResults = ['lost'];
    const { ctx, lines, ledgerErrors } = context(ledger);
    const fates = await runGuarded(
      ctx,
      [KEYS[0] as string],
      async (claimed) => new Map(claimed.map((k) => [k, 'sent'])),
      () => true,
    );
    assert.deepEqual(fates.get(KEYS[0] as string), { state: 'ran', result: 'sent' });
    assert.equal(await ledgerErrors('complete'), 1);
    const error = lines.find((l) => l.level === 'error');
    assert.match(String(error?.msg), /no longer ours/);
    assert.equal(error?.key, KEYS[0]);
  });

  it('retries a complete that failed temporarily, then gives up loudly without undoing the effect', async () => {
    const ledger = new CountingLedger();
    const throttled = () =>
      new WorkerError('DYNAMODB_ERROR', 'UpdateItem failed: throttled', { temporary: true });
    ledger.completeResults = [throttled(), throttled(), 'completed'];
    const first = context(ledger);
    await runGuarded(
      first.ctx,
      [KEYS[0] as string],
      async (c) => new Map(c.map((k) => [k, 1])),
      () => true,
    );
    assert.equal(ledger.calls.filter((c) => c.startsWith('complete')).length, 3, 'third attempt recorded it');
    assert.deepEqual(first.sleeps, [100, 200]);
    assert.equal(await first.ledgerErrors('complete'), 0);

    const stuck = new CountingLedger();
    stuck.completeResults = Array.from({ length: 10 }, throttled);
    const second = context(stuck);
    const fates = await runGuarded(
      second.ctx,
      [KEYS[0] as string],
      async (c) => new Map(c.map((k) => [k, 1])),
      () => true,
    );
    assert.equal(stuck.calls.filter((c) => c.startsWith('complete')).length, 5);
    assert.equal(
      stuck.calls.filter((c) => c.startsWith('abandon')).length,
      0,
      'never abandoned: it happened',
    );
    assert.equal(fates.get(KEYS[0] as string)?.state, 'ran');
    assert.equal(await second.ledgerErrors('complete'), 1);
    assert.ok(second.lines.some((l) => l.msg === 'effect done but not recorded in the ledger'));
  });

  it('abandons every claim when the effect throws, and passes the error on', async () => {
    const ledger = new CountingLedger();
    const { ctx } = context(ledger);
    await assert.rejects(
      runGuarded(
        ctx,
        KEYS,
        async () => {
          throw new Error('bug');
        },
        () => true,
      ),
      /bug/,
    );
    assert.equal(ledger.calls.filter((c) => c.startsWith('abandon')).length, 3);
    assert.equal(ledger.maxInFlight.abandon, 3);
    assert.equal(ctx.liveClaims.size, 0);
  });

  it('a key the effect gave no result for is abandoned and reported unclaimed', async () => {
    const ledger = new CountingLedger();
    const { ctx } = context(ledger);
    const fates = await runGuarded(
      ctx,
      KEYS.slice(0, 2),
      async (c) => new Map([[c[0] as string, 'x']]),
      () => true,
    );
    assert.equal(fates.get(KEYS[0] as string)?.state, 'ran');
    assert.equal(fates.get(KEYS[1] as string)?.state, 'unclaimed');
    assert.equal(ledger.calls.filter((c) => c.startsWith('abandon')).length, 1);
  });
});
