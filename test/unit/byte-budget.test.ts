import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { setImmediate as tick } from 'node:timers/promises';
import { WorkerError } from '../../src/errors.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { ByteBudget } from '../../src/flow-control/byte-budget.ts';

/** Lets every pending promise callback run. */
async function settle(): Promise<void> {
  await tick();
  await tick();
}

/** Tracks which acquisitions have resolved, in order. */
function recorder(): {
  order: string[];
  track: (name: string, p: Promise<() => void>) => Promise<() => void>;
} {
  const order: string[] = [];
  return {
    order,
    track: (name, p) =>
      p.then((release) => {
        order.push(name);
        return release;
      }),
  };
}

function isShuttingDown(error: unknown): boolean {
  return (
    error instanceof WorkerError &&
    error.code === 'SHUTTING_DOWN' &&
    error.temporary === true &&
    error.message === 'stopped while waiting for memory budget'
  );
}

describe('ByteBudget.acquire', () => {
  it('grants a request that fits at once and counts it in inUse', async () => {
    const budget = new ByteBudget(100);
    assert.equal(budget.capacity, 100);
    assert.equal(budget.inUse, 0);
    const release = await budget.acquire(40);
    assert.equal(budget.inUse, 40);
    const release2 = await budget.acquire(60);
    assert.equal(budget.inUse, 100);
    release();
    assert.equal(budget.inUse, 60);
    release2();
    assert.equal(budget.inUse, 0);
  });

  it('rounds fractional sizes up and treats negative sizes as zero', async () => {
    const budget = new ByteBudget(100);
    const a = await budget.acquire(10.2);
    assert.equal(budget.inUse, 11);
    const b = await budget.acquire(-50);
    assert.equal(budget.inUse, 11);
    a();
    b();
    assert.equal(budget.inUse, 0);
  });

  it('makes a request that does not fit wait until enough is released', async () => {
    const budget = new ByteBudget(100);
    const first = await budget.acquire(70);
    let granted = false;
    const second = budget.acquire(50).then((release) => {
      granted = true;
      return release;
    });
    await settle();
    assert.equal(granted, false);
    assert.equal(budget.inUse, 70);
    first();
    const release = await second;
    assert.equal(granted, true);
    assert.equal(budget.inUse, 50);
    release();
    assert.equal(budget.inUse, 0);
  });

  it('serves waiters first come, first served, and a small one does not overtake a large one', async () => {
    const budget = new ByteBudget(100);
    const { order, track } = recorder();
    const held = await budget.acquire(90);
    const large = track('large', budget.acquire(80));
    const small = track('small', budget.acquire(5)); // would fit now (90 + 5 <= 100), but waits its turn
    await settle();
    assert.deepEqual(order, []);
    assert.equal(budget.inUse, 90);

    held();
    const releaseLarge = await large;
    await settle();
    // 80 + 5 fits, so the small one follows straight away.
    assert.deepEqual(order, ['large', 'small']);
    assert.equal(budget.inUse, 85);
    releaseLarge();
    (await small)();
    assert.equal(budget.inUse, 0);
  });

  it('grants waiters in arrival order as room appears', async () => {
    const budget = new ByteBudget(10);
    const { order, track } = recorder();
    const held = await budget.acquire(10);
    const a = track('a', budget.acquire(6));
    const b = track('b', budget.acquire(6));
    const c = track('c', budget.acquire(4));
    held();
    await settle();
    // a (6) fits, b (6) does not fit next to it, and c waits behind b.
    assert.deepEqual(order, ['a']);
    assert.equal(budget.inUse, 6);
    (await a)();
    await settle();
    assert.deepEqual(order, ['a', 'b', 'c']);
    assert.equal(budget.inUse, 10);
    (await b)();
    (await c)();
    assert.equal(budget.inUse, 0);
  });

  it('queues a request that fits behind an earlier waiter', async () => {
    const budget = new ByteBudget(100);
    const held = await budget.acquire(60);
    const { order, track } = recorder();
    const big = track('big', budget.acquire(50));
    const tiny = track('tiny', budget.acquire(1));
    await settle();
    assert.deepEqual(order, []);
    held();
    await Promise.all([big, tiny]);
    assert.deepEqual(order, ['big', 'tiny']);
    assert.equal(budget.inUse, 51);
  });

  it('runs a request larger than the whole budget at once when the budget is empty', async () => {
    const budget = new ByteBudget(100);
    const release = await budget.acquire(250);
    assert.equal(budget.inUse, 250);
    release();
    assert.equal(budget.inUse, 0);
  });

  it('makes an oversized request wait for an empty budget and then run alone', async () => {
    const budget = new ByteBudget(100);
    const { order, track } = recorder();
    const a = await budget.acquire(30);
    const b = await budget.acquire(30);
    const huge = track('huge', budget.acquire(500));
    const small = track('small', budget.acquire(1));
    a();
    await settle();
    assert.deepEqual(order, [], 'huge waits while anything is still in use');
    assert.equal(budget.inUse, 30);
    b();
    const releaseHuge = await huge;
    await settle();
    assert.deepEqual(order, ['huge'], 'nothing runs next to the oversized request');
    assert.equal(budget.inUse, 500);
    assert.equal(budget.tryAcquire(0), undefined);
    releaseHuge();
    (await small)();
    assert.deepEqual(order, ['huge', 'small']);
    assert.equal(budget.inUse, 0);
  });

  it('ignores a second call of the same release function', async () => {
    const budget = new ByteBudget(100);
    const a = await budget.acquire(40);
    const b = await budget.acquire(50);
    a();
    a();
    a();
    assert.equal(budget.inUse, 50);
    b();
    b();
    assert.equal(budget.inUse, 0);
    const c = await budget.acquire(100);
    a();
    assert.equal(budget.inUse, 100, 'a stale release must not free bytes of a later holder');
    c();
  });

  it('a double release does not let waiters in beyond capacity', async () => {
    const budget = new ByteBudget(100);
    const a = await budget.acquire(60);
    const b = await budget.acquire(40);
    const { order, track } = recorder();
    const w1 = track('w1', budget.acquire(60));
    const w2 = track('w2', budget.acquire(60));
    a();
    a();
    await settle();
    assert.deepEqual(order, ['w1']);
    assert.equal(budget.inUse, 100);
    b();
    (await w1)();
    (await w2)();
    assert.equal(budget.inUse, 0);
  });

  it('rejects at once with SHUTTING_DOWN when the signal has already aborted', async () => {
    const budget = new ByteBudget(100);
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(budget.acquire(10, controller.signal), isShuttingDown);
    assert.equal(budget.inUse, 0);
  });

  it('rejects a waiting request with SHUTTING_DOWN when its signal aborts', async () => {
    const budget = new ByteBudget(100);
    const held = await budget.acquire(100);
    const controller = new AbortController();
    const waiting = budget.acquire(10, controller.signal);
    await settle();
    controller.abort();
    await assert.rejects(waiting, isShuttingDown);
    assert.equal(budget.inUse, 100);
    held();
    assert.equal(budget.inUse, 0, 'the aborted request was not granted afterwards');
  });

  it('frees the queue slot of an aborted waiter so later waiters and tryAcquire are not blocked by it', async () => {
    const budget = new ByteBudget(100);
    const held = await budget.acquire(50);
    const controller = new AbortController();
    const aborted = budget.acquire(80, controller.signal);
    const { order, track } = recorder();
    const next = track('next', budget.acquire(80));
    assert.equal(budget.tryAcquire(10), undefined, 'waiters are queued, so tryAcquire declines');
    controller.abort();
    await assert.rejects(aborted, isShuttingDown);
    held();
    const releaseNext = await next;
    assert.deepEqual(order, ['next']);
    assert.equal(budget.inUse, 80);
    const release = budget.tryAcquire(20);
    assert.equal(typeof release, 'function', 'no waiters left: a request that fits is granted');
    assert.equal(budget.inUse, 100);
    release?.();
    releaseNext();
    assert.equal(budget.inUse, 0);
  });

  it('grants the next waiter as soon as the aborted one ahead of it no longer blocks it', async () => {
    const budget = new ByteBudget(100);
    const held = await budget.acquire(50);
    const controller = new AbortController();
    const aborted = budget.acquire(80, controller.signal);
    const { order, track } = recorder();
    const small = track('small', budget.acquire(20)); // fits next to `held`, waits only behind `aborted`
    controller.abort();
    await assert.rejects(aborted, isShuttingDown);
    await settle();
    assert.deepEqual(order, ['small']);
    assert.equal(budget.inUse, 70);
    held();
    (await small)();
  });

  it('leaves no abort listener on the signal once a waiting request has been granted', async () => {
    const budget = new ByteBudget(100);
    const controller = new AbortController();
    const held = await budget.acquire(100);
    const waiters = [budget.acquire(10, controller.signal), budget.acquire(10, controller.signal)];
    held();
    for (const release of await Promise.all(waiters)) release();
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
  });

  it('an abort after the request was granted changes nothing', async () => {
    const budget = new ByteBudget(100);
    const controller = new AbortController();
    const held = await budget.acquire(100);
    const waiting = budget.acquire(30, controller.signal);
    held();
    const release = await waiting;
    controller.abort();
    await settle();
    assert.equal(budget.inUse, 30);
    release();
    assert.equal(budget.inUse, 0);
  });
});

describe('ByteBudget.tryAcquire', () => {
  it('returns a release function when the bytes fit now', () => {
    const budget = new ByteBudget(100);
    const release = budget.tryAcquire(100);
    assert.equal(typeof release, 'function');
    assert.equal(budget.inUse, 100);
    release?.();
    assert.equal(budget.inUse, 0);
  });

  it('returns undefined without reserving anything when the bytes do not fit', () => {
    const budget = new ByteBudget(100);
    const first = budget.tryAcquire(60);
    assert.equal(budget.tryAcquire(41), undefined);
    assert.equal(budget.inUse, 60);
    const second = budget.tryAcquire(40);
    assert.equal(budget.inUse, 100);
    first?.();
    second?.();
    assert.equal(budget.inUse, 0);
  });

  it('grants an oversized request only on an empty budget', () => {
    const budget = new ByteBudget(100);
    const small = budget.tryAcquire(1);
    assert.equal(budget.tryAcquire(1000), undefined);
    small?.();
    const huge = budget.tryAcquire(1000);
    assert.equal(typeof huge, 'function');
    assert.equal(budget.inUse, 1000);
    huge?.();
    assert.equal(budget.inUse, 0);
  });

  it('declines while anyone is waiting, even when the bytes would fit', async () => {
    const budget = new ByteBudget(100);
    const held = budget.tryAcquire(90);
    const waiting = budget.acquire(50);
    assert.equal(budget.tryAcquire(5), undefined);
    assert.equal(budget.inUse, 90);
    held?.();
    (await waiting)();
    assert.equal(budget.inUse, 0);
  });

  it('hands bytes released by a tryAcquire holder to the waiters', async () => {
    const budget = new ByteBudget(10);
    const held = budget.tryAcquire(10);
    const waiting = budget.acquire(10);
    held?.();
    held?.();
    const release = await waiting;
    assert.equal(budget.inUse, 10);
    release();
    assert.equal(budget.inUse, 0);
  });
});

describe('BudgetAccount: copies of a mail the message already holds', () => {
  it('a copy that fits next to everything in use is granted at once and counted to the message', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const mail = await message.acquire(30);
    const copy = await message.acquireCopy(30);
    assert.equal(budget.inUse, 60);
    assert.equal(message.held, 60);
    copy();
    mail();
    assert.equal(budget.inUse, 0);
    assert.equal(message.held, 0);
  });

  it('a copy bigger than what is left does not wait for the message itself: alone, it gets it past the budget', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const mail = await message.acquire(60);
    const copy = await message.acquireCopy(90);
    assert.equal(budget.inUse, 150, 'past the budget by at most that copy');
    copy();
    mail();
    assert.equal(budget.inUse, 0);
  });

  it('the copies of one mail go one at a time when they do not fit together: forwards wait, they are not built at once', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const mail = await message.acquire(40);
    const { order, track } = recorder();
    const copies = ['f1', 'f2', 'f3'].map((name) => track(name, message.acquireCopy(70)));
    await settle();
    assert.deepEqual(order, ['f1']);
    assert.equal(budget.inUse, 110);
    (await copies[0]!)();
    await settle();
    assert.deepEqual(order, ['f1', 'f2']);
    assert.equal(budget.inUse, 110);
    (await copies[1]!)();
    await settle();
    assert.deepEqual(order, ['f1', 'f2', 'f3']);
    (await copies[2]!)();
    mail();
    assert.equal(budget.inUse, 0);
  });

  it('small copies that fit together are granted together', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const mail = await message.acquire(10);
    const copies = await Promise.all(Array.from({ length: 5 }, () => message.acquireCopy(15)));
    assert.equal(budget.inUse, 85);
    for (const free of copies) free();
    mail();
  });

  it('two messages each waiting for a copy while holding their mail cannot deadlock: the first goes, the other when there is room', async () => {
    const budget = new ByteBudget(100);
    const a = budget.account();
    const b = budget.account();
    const mailA = await a.acquire(45);
    const mailB = await b.acquire(45);
    const { order, track } = recorder();
    const copyA = track('a', a.acquireCopy(60));
    await settle();
    assert.deepEqual(order, [], 'b holds its mail and may still give it back: a waits');
    const copyB = track('b', b.acquireCopy(60));
    await settle();
    assert.deepEqual(order, ['a'], 'both stalled: the first one asking gets its copy');
    assert.equal(budget.inUse, 150);
    (await copyA)();
    await settle();
    assert.deepEqual(order, ['a'], 'a is done with its copy but may still go on and give its mail back');
    mailA();
    await settle();
    assert.deepEqual(order, ['a', 'b']);
    assert.equal(budget.inUse, 105);
    (await copyB)();
    mailB();
    assert.equal(budget.inUse, 0);
  });

  it('a waiting copy is not granted past the budget while someone else holds memory and is not stalled', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const other = await budget.acquire(50);
    const mail = await message.acquire(40);
    const { order, track } = recorder();
    const copy = track('copy', message.acquireCopy(30));
    await settle();
    assert.deepEqual(order, []);
    other();
    await settle();
    assert.deepEqual(order, ['copy']);
    assert.equal(budget.inUse, 70);
    (await copy)();
    mail();
  });

  it('a stalled message does not let a new mail in past the budget: only its own copy', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const mail = await message.acquire(80);
    const { order, track } = recorder();
    const fetch = track('fetch', budget.account().acquire(50));
    const copy = track('copy', message.acquireCopy(80));
    await settle();
    assert.deepEqual(order, ['copy']);
    assert.equal(budget.inUse, 160);
    (await copy)();
    mail();
    await settle();
    assert.deepEqual(order, ['copy', 'fetch']);
    (await fetch)();
    assert.equal(budget.inUse, 0);
  });

  it('an aborted copy wait leaves the message neither stalled nor counted', async () => {
    const budget = new ByteBudget(100);
    const message = budget.account();
    const other = await budget.acquire(50);
    const mail = await message.acquire(40);
    const controller = new AbortController();
    const copy = message.acquireCopy(30, controller.signal);
    controller.abort();
    await assert.rejects(copy, isShuttingDown);
    assert.equal(message.waitingCopies, 0);
    assert.equal(message.held, 40);
    other();
    mail();
    assert.equal(budget.inUse, 0);
  });
});

describe('ses_worker_in_flight_peak_bytes', () => {
  /** The gauge's value for `domain`, read from the registry the way /metrics reads it. */
  async function gauge(metrics: ReturnType<typeof createPipelineMetrics>, name: string, domain: string) {
    const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
    return metric?.values.find((v) => v.labels.domain === domain)?.value;
  }

  it('keeps the highest bytes in use while the current value goes back down', async () => {
    // Wired as domain-runtime.ts wires the poller's budget.
    const metrics = createPipelineMetrics();
    const budget = new ByteBudget(100, (inUse) => metrics.inFlightBytes('a.test', inUse, 100));
    const first = await budget.acquire(30);
    const second = await budget.acquire(60);
    const third = budget.acquire(50);
    first();
    second();
    (await third)();
    assert.equal(await gauge(metrics, 'ses_worker_in_flight_bytes', 'a.test'), 0);
    assert.equal(await gauge(metrics, 'ses_worker_in_flight_peak_bytes', 'a.test'), 90);
    assert.equal(await gauge(metrics, 'ses_worker_in_flight_limit_bytes', 'a.test'), 100);
  });

  it('is kept per domain', async () => {
    const metrics = createPipelineMetrics();
    metrics.inFlightBytes('a.test', 70, 100);
    metrics.inFlightBytes('b.test', 20, 100);
    metrics.inFlightBytes('a.test', 0, 100);
    assert.equal(await gauge(metrics, 'ses_worker_in_flight_peak_bytes', 'a.test'), 70);
    assert.equal(await gauge(metrics, 'ses_worker_in_flight_peak_bytes', 'b.test'), 20);
  });
});
