/**
 * The SMTP pool's scheduling between domains, by counting grants (no timing): a domain with a backlog of thousands
 * never keeps another domain's single mail waiting for more than one connection to free up.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FairQueue } from '../../src/smtp/fair-queue.ts';

/** Requests one slot for `key` and records the order in which slots are granted. */
function request(queue: FairQueue, key: string, order: string[]): Promise<() => void> {
  return queue.acquire(key).then((release) => {
    order.push(key);
    return release;
  });
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('FairQueue', () => {
  it('never holds more than its limit, and grants at once while there is room', async () => {
    const queue = new FairQueue(3);
    const order: string[] = [];
    const releases = await Promise.all(['a', 'a', 'b'].map((k) => request(queue, k, order)));
    assert.equal(queue.active, 3);
    const waiting = request(queue, 'a', order);
    await settle();
    assert.equal(queue.active, 3);
    assert.equal(queue.waiting, 1);
    releases[0]!();
    await waiting;
    assert.equal(queue.active, 3);
    assert.equal(queue.waiting, 0);
  });

  it('5,000 queued for one domain: another domain’s single request is the next one served', async () => {
    for (const limit of [1, 4]) {
      const queue = new FairQueue(limit);
      const order: string[] = [];
      const held = await Promise.all(Array.from({ length: limit }, () => request(queue, 'busy', order)));
      const backlog = Array.from({ length: 5_000 }, () => request(queue, 'busy', order));
      const single = request(queue, 'quiet', order);
      await settle();
      assert.equal(queue.waiting, 5_001);
      held[0]!();
      const release = await single;
      assert.equal(order.length, limit + 1, `limit ${limit}: served right after the first release`);
      assert.equal(order.at(-1), 'quiet');
      // The backlog is still served, all of it, first come first served.
      release();
      for (const r of held.slice(1)) r();
      let served = 0;
      for (const pending of backlog) {
        (await pending)();
        served += 1;
      }
      assert.equal(served, 5_000);
      assert.equal(queue.active, 0);
      assert.equal(queue.waiting, 0);
    }
  });

  it('several domains with backlogs take turns, one transaction each', async () => {
    const queue = new FairQueue(1);
    const order: string[] = [];
    const first = await request(queue, 'a', order);
    const pending = ['a', 'a', 'a', 'b', 'b', 'b', 'c', 'c', 'c'].map((k) => request(queue, k, order));
    // Each transaction ends as soon as it got its connection.
    for (const p of pending) void p.then((release) => release());
    first();
    await Promise.all(pending);
    assert.deepEqual(order, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c', 'a']);
    assert.equal(queue.active, 0);
  });

  it('a domain holding fewer connections goes first; a release twice counts once', async () => {
    const queue = new FairQueue(3);
    const order: string[] = [];
    const a1 = await request(queue, 'a', order);
    const a2 = await request(queue, 'a', order);
    const b1 = await request(queue, 'b', order);
    const nextA = request(queue, 'a', order);
    const nextB = request(queue, 'b', order);
    a1();
    a1();
    await settle();
    // Both now hold one connection: the one served longer ago (a) goes.
    assert.deepEqual(order, ['a', 'a', 'b', 'a']);
    assert.equal(queue.active, 3);
    a2();
    await settle();
    assert.deepEqual(order, ['a', 'a', 'b', 'a', 'b']);
    (await nextA)();
    (await nextB)();
    b1();
    assert.equal(queue.active, 0);
  });
});
