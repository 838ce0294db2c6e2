import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Writable } from 'node:stream';
import type {
  Claim,
  ClaimResult,
  CompleteResult,
  EffectLedger,
  EffectMark,
  LegacyState,
  LedgerVerdict,
  RecordedMessage,
} from '../../src/aws/effect-ledger.ts';
import { WorkerError } from '../../src/errors.ts';
import { createLogger } from '../../src/log/logger.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { GuardContext, type GuardedMessage } from '../../src/pipeline/guarded-effect.ts';

/** A ledger in memory that records every call, answers as planned, and waits a macrotask per call. */
class PlannedLedger implements EffectLedger {
  readonly enabled = true;
  readonly calls: string[] = [];
  claimResult: 'claimed' | 'busy' | Error = 'claimed';
  recorded = new Map<string, EffectMark>();
  legacyLeft = false;
  legacyStates = new Map<string, LegacyState>();
  markResults: Array<boolean | Error> = [];
  completeResults: Array<CompleteResult | Error> = [];
  readonly marked: Array<Map<string, EffectMark>> = [];
  readonly completed: Array<Map<string, EffectMark>> = [];
  readonly verdicts: Array<LedgerVerdict | undefined> = [];

  private async step<T>(call: string, answer: () => T): Promise<T> {
    this.calls.push(call);
    await new Promise((resolve) => setTimeout(resolve, 1));
    return answer();
  }

  claim(key: string): Promise<ClaimResult> {
    return this.step(`claim ${key}`, () => {
      if (this.claimResult instanceof Error) throw this.claimResult;
      if (this.claimResult === 'busy') return { state: 'busy' };
      const claim: Claim = { key, token: 't', leaseUntil: 100, expiresAt: 200, legacy: this.legacyLeft };
      return { state: 'claimed', claim, marks: new Map(this.recorded) };
    });
  }

  mark(_claim: Claim, marks: ReadonlyMap<string, EffectMark>): Promise<boolean> {
    return this.step('mark', () => {
      const planned = this.markResults.shift() ?? true;
      if (planned instanceof Error) throw planned;
      if (planned) this.marked.push(new Map(marks));
      return planned;
    });
  }

  complete(
    _claim: Claim,
    marks: ReadonlyMap<string, EffectMark>,
    verdict?: LedgerVerdict,
  ): Promise<CompleteResult> {
    return this.step('complete', () => {
      const planned = this.completeResults.shift() ?? 'completed';
      if (planned instanceof Error) throw planned;
      this.completed.push(new Map(marks));
      this.verdicts.push(verdict);
      return planned;
    });
  }

  renew(): Promise<boolean> {
    return Promise.resolve(true);
  }

  read(): Promise<Map<string, RecordedMessage>> {
    return Promise.resolve(new Map());
  }

  legacy(keys: readonly string[]): Promise<Map<string, LegacyState>> {
    return this.step(`legacy ${keys.join(',')}`, () => {
      const found = new Map<string, LegacyState>();
      for (const key of keys) {
        const state = this.legacyStates.get(key);
        if (state) found.set(key, state);
      }
      return found;
    });
  }
}

const MESSAGE: GuardedMessage = {
  key: 'ses-1|example.com',
  sesMessageId: 'ses-1',
  generation: 0,
  retried: false,
};

function guarded(ledger: EffectLedger, message: GuardedMessage = MESSAGE) {
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
  const liveClaims = new Set<Claim>();
  const guard = new GuardContext(
    {
      ledger,
      liveClaims,
      domain: 'example.com',
      logger,
      metrics,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    },
    message,
  );
  const ledgerErrors = async (operation: string): Promise<number> => {
    const metric = await metrics.registry.getSingleMetric('ses_worker_ledger_errors_total')?.get();
    return metric?.values.find((v) => v.labels.operation === operation)?.value ?? 0;
  };
  return { guard, liveClaims, lines, sleeps, ledgerErrors };
}

const NAMES = Array.from({ length: 10 }, (_, i) => `u${i}@example.com|deliver`);
const all = <V>(names: readonly string[], value: V) => new Map(names.map((n) => [n, value]));

describe('GuardContext: one ledger record per message', () => {
  it('ten recipients cost one claim and one complete, and the effect runs once for what is owed', async () => {
    const ledger = new PlannedLedger();
    ledger.recorded.set(NAMES[0]!, 'done');
    const { guard, liveClaims } = guarded(ledger);
    const runs: string[][] = [];
    const fates = await guard.run(
      NAMES,
      async (owed) => {
        runs.push([...owed]);
        assert.equal(
          liveClaims.size,
          1,
          'the claim is live (renewed by the heartbeat) while the effect runs',
        );
        return all(owed, 'delivered');
      },
      (r) => r === 'delivered',
    );
    assert.deepEqual(runs, [NAMES.slice(1)]);
    assert.deepEqual(fates.get(NAMES[0]!), { state: 'done-before' });
    assert.deepEqual(fates.get(NAMES[1]!), { state: 'ran', result: 'delivered' });
    await guard.finish();
    assert.deepEqual(ledger.calls, ['claim ses-1|example.com', 'complete']);
    assert.deepEqual([...ledger.completed[0]!].sort(), NAMES.map((n) => [n, 'done']).sort());
    assert.equal(liveClaims.size, 0);
  });

  it('what did not happen is not marked; finishing twice writes once', async () => {
    const ledger = new PlannedLedger();
    const { guard } = guarded(ledger);
    await guard.run(
      NAMES.slice(0, 3),
      async (owed) => new Map(owed.map((n, i) => [n, i === 1 ? 'deferred' : 'delivered'])),
      (r) => r === 'delivered',
    );
    await guard.finish();
    await guard.finish();
    assert.deepEqual([...ledger.completed[0]!.keys()].sort(), [NAMES[0], NAMES[2]]);
    assert.equal(ledger.calls.filter((c) => c === 'complete').length, 1);
  });

  it('a busy message runs nothing and writes nothing', async () => {
    const ledger = new PlannedLedger();
    ledger.claimResult = 'busy';
    const { guard } = guarded(ledger);
    let ran = false;
    const fates = await guard.run(
      NAMES.slice(0, 2),
      async () => {
        ran = true;
        return new Map();
      },
      () => true,
    );
    await guard.finish();
    assert.equal(ran, false);
    assert.deepEqual([...fates.values()], [{ state: 'busy' }, { state: 'busy' }]);
    assert.deepEqual(ledger.calls, ['claim ses-1|example.com']);
  });

  it('a failed claim leaves every effect unclaimed with its error, counted', async () => {
    const ledger = new PlannedLedger();
    ledger.claimResult = new WorkerError('DYNAMODB_ERROR', 'UpdateItem failed: throttled', {
      temporary: true,
    });
    const { guard, ledgerErrors } = guarded(ledger);
    const fates = await guard.run(
      NAMES.slice(0, 1),
      async () => new Map(),
      () => true,
    );
    const fate = fates.get(NAMES[0]!);
    assert.equal(fate?.state, 'unclaimed');
    assert.match(fate?.state === 'unclaimed' ? fate.error.message : '', /throttled/);
    assert.equal(await ledgerErrors('claim'), 1);
  });

  it('an SES send marked "sending" by an earlier attempt is maybe-sent: never run again, the mark kept', async () => {
    const ledger = new PlannedLedger();
    const forward = 'a@example.com|forward:x@far.test';
    ledger.recorded.set(forward, 'sending');
    const { guard } = guarded(ledger);
    let ran = false;
    const fates = await guard.run(
      [forward],
      async () => {
        ran = true;
        return new Map();
      },
      () => true,
      { throughSes: true },
    );
    await guard.finish();
    assert.equal(ran, false);
    assert.deepEqual(fates.get(forward), { state: 'maybe-sent' });
    assert.equal(ledger.completed[0]?.get(forward), 'sending');
  });

  it('markSending writes the marks not yet written with the "sending" mark, in one call before the send', async () => {
    const ledger = new PlannedLedger();
    const { guard } = guarded(ledger);
    const forward = 'a@example.com|forward:x@far.test';
    await guard.run(
      NAMES.slice(0, 2),
      async (owed) => all(owed, 'ok'),
      () => true,
    );
    const fates = await guard.run(
      [forward],
      async (owed) => {
        await guard.markSending(forward);
        return all(owed, 'sent');
      },
      () => true,
      { throughSes: true },
    );
    assert.deepEqual(fates.get(forward), { state: 'ran', result: 'sent' });
    assert.deepEqual(
      [...ledger.marked[0]!].sort(),
      [
        [forward, 'sending'],
        [NAMES[0], 'done'],
        [NAMES[1], 'done'],
      ].sort(),
    );
    await guard.finish();
    assert.equal(ledger.completed[0]?.get(forward), 'done', 'sent: the mark becomes done');
  });

  it('a send that did not happen after its mark is cleared by the last write', async () => {
    const ledger = new PlannedLedger();
    const { guard } = guarded(ledger);
    const forward = 'a@example.com|forward:x@far.test';
    await guard.run(
      [forward],
      async (owed) => {
        await guard.markSending(forward);
        return all(owed, 'throttled');
      },
      (r) => r === 'sent',
      { throughSes: true },
    );
    await guard.finish();
    assert.equal(ledger.marked[0]?.get(forward), 'sending');
    assert.equal(ledger.completed[0]?.has(forward), false);
  });

  it('markSending that cannot be written, or finds the lease gone, throws a temporary error and is counted', async () => {
    const ledger = new PlannedLedger();
    ledger.markResults = [
      new WorkerError('DYNAMODB_ERROR', 'UpdateItem failed: throttled', { temporary: true }),
      false,
    ];
    const { guard, ledgerErrors } = guarded(ledger);
    await guard.run(
      ['x'],
      async () => new Map([['x', 1]]),
      () => false,
    );
    await assert.rejects(
      guard.markSending('f1'),
      (e: WorkerError) => e.temporary && /not sent/.test(e.message),
    );
    await assert.rejects(
      guard.markSending('f2'),
      (e: WorkerError) => e.temporary && /no longer ours/.test(e.message),
    );
    assert.equal(await ledgerErrors('sending'), 2);
    await guard.finish();
    assert.equal(ledger.completed[0]?.size, 0, 'neither send counts as begun');
  });

  it('retries the last write when it fails temporarily, then gives up loudly without undoing anything', async () => {
    const throttled = () => new WorkerError('DYNAMODB_ERROR', 'throttled', { temporary: true });
    const ledger = new PlannedLedger();
    ledger.completeResults = [throttled(), throttled(), 'completed'];
    const first = guarded(ledger);
    await first.guard.run(
      NAMES.slice(0, 1),
      async (o) => all(o, 1),
      () => true,
    );
    await first.guard.finish();
    assert.equal(ledger.calls.filter((c) => c === 'complete').length, 3);
    assert.deepEqual(first.sleeps, [100, 200]);
    assert.equal(await first.ledgerErrors('complete'), 0);

    const stuck = new PlannedLedger();
    stuck.completeResults = Array.from({ length: 10 }, throttled);
    const second = guarded(stuck);
    await second.guard.run(
      NAMES.slice(0, 1),
      async (o) => all(o, 1),
      () => true,
    );
    await second.guard.finish();
    assert.equal(stuck.calls.filter((c) => c === 'complete').length, 5);
    assert.equal(await second.ledgerErrors('complete'), 1);
    assert.ok(second.lines.some((l) => l.msg === 'effects done but not recorded in the ledger'));
    assert.equal(second.liveClaims.size, 0, 'no longer renewed');
  });

  it('a last write that finds the record taken over is logged at error and counted', async () => {
    const ledger = new PlannedLedger();
    ledger.completeResults = ['lost'];
    const { guard, lines, ledgerErrors } = guarded(ledger);
    await guard.run(
      NAMES.slice(0, 1),
      async (o) => all(o, 1),
      () => true,
    );
    await guard.finish();
    assert.equal(await ledgerErrors('complete'), 1);
    const error = lines.find((l) => l.level === 'error');
    assert.match(String(error?.msg), /no longer ours/);
    assert.equal(error?.key, MESSAGE.key);
  });

  it('a retried message reads records of the first shape once per effect: done, busy, and a lapsed SES send', async () => {
    const ledger = new PlannedLedger();
    ledger.legacyLeft = true;
    const forward = 'a@example.com|forward:x@far.test';
    const internal = 'a@example.com|forward:y@example.com';
    ledger.legacyStates.set(`ses-1|${NAMES[0]}`, 'done');
    ledger.legacyStates.set(`ses-1|${NAMES[1]}`, 'busy');
    ledger.legacyStates.set(`ses-1|${forward}`, 'lapsed');
    ledger.legacyStates.set(`ses-1|${internal}`, 'lapsed');
    const { guard } = guarded(ledger, { ...MESSAGE, retried: true });
    const delivered = await guard.run(
      NAMES.slice(0, 3),
      async (o) => all(o, 1),
      () => true,
    );
    assert.deepEqual(
      NAMES.slice(0, 3).map((n) => delivered.get(n)?.state),
      ['done-before', 'busy', 'ran'],
    );
    const ses = await guard.run(
      [forward],
      async (o) => all(o, 1),
      () => true,
      { throughSes: true },
    );
    assert.deepEqual(
      ses.get(forward),
      { state: 'maybe-sent' },
      'an SES send the old worker claimed may have gone out',
    );
    const port = await guard.run(
      [internal],
      async (o) => all(o, 1),
      () => true,
    );
    assert.equal(
      port.get(internal)?.state,
      'ran',
      "the internal port's copy is caught by the mailbox instead",
    );
    await guard.finish();
    const written = ledger.completed[0]!;
    assert.equal(written.get(NAMES[0]!), 'done', 'what the old record said is carried into the new one');
    assert.equal(written.has(NAMES[1]!), false);
    assert.equal(written.get(forward), 'sending');
    assert.equal(ledger.calls.filter((c) => c.startsWith('legacy')).length, 5);
  });
});
