/**
 * The byte budget a poller thread's domains share (IN_FLIGHT_BYTES), by counting grants: a domain with a backlog
 * cannot hold more than its fair share while another waits, a domain's first mail always starts, and a large mail
 * is not starved by small ones.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FairByteBudget } from '../../src/flow-control/fair-byte-budget.ts';

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('FairByteBudget', () => {
  it('one domain alone behaves like a plain budget: first come first served, up to the capacity', async () => {
    const budget = new FairByteBudget(100);
    const seen: number[] = [];
    const share = budget.share('a', (inUse) => seen.push(inUse));
    const frees = [share.tryAcquire(60)!, await share.acquire(40)];
    assert.equal(share.inUse, 100);
    assert.equal(share.tryAcquire(1), undefined, 'full');
    let third = false;
    const waiting = share.acquire(30).then((free) => ((third = true), free));
    await settle();
    assert.equal(third, false);
    frees[0]!();
    const free = await waiting;
    assert.equal(share.inUse, 70);
    free();
    frees[1]!();
    assert.equal(budget.inUse, 0);
    assert.deepEqual(seen, [60, 100, 70, 70, 40, 0], 'the in-flight gauge follows every change');
  });

  it("a domain's backlog holds at most its fair share while another domain waits; the waiter goes next", async () => {
    const budget = new FairByteBudget(100);
    const busy = budget.share('busy');
    const quiet = budget.share('quiet');
    const held = [];
    for (let i = 0; i < 10; i++) held.push(busy.tryAcquire(10)!);
    const order: string[] = [];
    const backlog = Array.from({ length: 50 }, () =>
      busy.acquire(10).then((free) => (order.push('busy'), free)),
    );
    const single = quiet.acquire(10).then((free) => (order.push('quiet'), free));
    await settle();
    held.shift()!();
    const freeQuiet = await single;
    assert.deepEqual(order, ['quiet'], 'the waiting domain got the freed bytes, not the backlog');
    // Two domains want bytes: the busy one may hold 50 while the quiet one waits, and is at 90 now.
    const more = quiet.acquire(10).then((free) => (order.push('quiet'), free));
    for (let i = 0; i < 4; i++) held.shift()!();
    await settle();
    assert.deepEqual(order, ['quiet', 'quiet', 'busy', 'busy', 'busy'], 'turns while both wait');
    assert.ok(busy.inUse <= 80, `busy holds ${busy.inUse}`);
    freeQuiet();
    (await more)();
    for (const free of held) free();
    for (const pending of backlog) (await pending)();
    assert.equal(budget.inUse, 0);
    assert.equal(order.filter((o) => o === 'busy').length, 50);
  });

  it('a domain holding nothing may always start its first mail, even larger than its share', async () => {
    const budget = new FairByteBudget(100);
    const shares = ['a', 'b', 'c', 'd'].map((d) => budget.share(d));
    const frees = shares.slice(0, 3).map((s) => s.tryAcquire(10)!);
    const big = shares[3]!.tryAcquire(60);
    assert.ok(big, 'd holds nothing: 60 fits the free 70 though the fair share is 25');
    big();
    for (const free of frees) free();
  });

  it('a large mail is not overtaken by smaller ones when its turn comes', async () => {
    const budget = new FairByteBudget(100);
    const a = budget.share('a');
    const b = budget.share('b');
    const heldByA = a.tryAcquire(90)!;
    const order: string[] = [];
    const large = b.acquire(50).then((free) => (order.push('b-large'), free));
    const small = a.acquire(5).then((free) => (order.push('a-small'), free));
    await settle();
    assert.deepEqual(order, [], 'b waits for room; a is over its share while b waits');
    heldByA();
    (await large)();
    (await small)();
    assert.deepEqual(order, ['b-large', 'a-small']);
    assert.equal(budget.inUse, 0);
  });

  it('an aborted wait gives its turn back and rejects as a temporary SHUTTING_DOWN', async () => {
    const budget = new FairByteBudget(10);
    const a = budget.share('a');
    const b = budget.share('b');
    const held = a.tryAcquire(10)!;
    const abort = new AbortController();
    const aborted = b.acquire(5, abort.signal);
    const next = a.acquire(5);
    abort.abort();
    await assert.rejects(aborted, (error: unknown) => (error as { code?: string }).code === 'SHUTTING_DOWN');
    held();
    (await next)();
    assert.equal(budget.inUse, 0);
    await assert.rejects(b.acquire(1, abort.signal), /memory budget/);
  });

  it("message accounts of different domains' shares count against the one budget", async () => {
    const budget = new FairByteBudget(100);
    const a = budget.share('a').account();
    const b = budget.share('b').account();
    const mailA = a.tryAcquire(60)!;
    assert.ok(mailA);
    assert.equal(b.tryAcquire(60), undefined, 'the thread holds 60 of 100: no room for 60 more');
    const mailB = b.acquire(60);
    mailA();
    (await mailB)();
    assert.equal(budget.inUse, 0);
  });

  it('copies of mails held by two domains never wait on each other forever: the first stalled copy goes', async () => {
    const budget = new FairByteBudget(100);
    const a = budget.share('a').account();
    const b = budget.share('b').account();
    const mailA = a.tryAcquire(60)!;
    const mailB = b.tryAcquire(40)!;
    const order: string[] = [];
    const copyA = a.acquireCopy(50).then((free) => (order.push('a'), free));
    const copyB = b.acquireCopy(50).then((free) => (order.push('b'), free));
    await settle();
    assert.deepEqual(order, ['a'], 'every byte is held by messages waiting for a copy: the first gets it');
    assert.equal(budget.inUse, 150, 'past the budget by that one copy');
    (await copyA)();
    mailA();
    await settle();
    assert.deepEqual(order, ['a', 'b']);
    (await copyB)();
    mailB();
    assert.equal(budget.inUse, 0);
  });
});
