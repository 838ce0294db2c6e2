import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenBucketPacer } from '../../src/flow-control/send-pacer.ts';

/** A clock and timers the test moves by hand: the pacer's arithmetic, not the machine's timing, is under test. */
function manualTime() {
  let now = 0;
  const timers: Array<{ at: number; fn: () => void }> = [];
  return {
    clock: { now: () => now, sleep: async () => undefined },
    timers: {
      set: (fn: () => void, ms: number) => {
        const timer = { at: now + ms, fn };
        timers.push(timer);
        return timer;
      },
      clear: (handle: unknown) => {
        const i = timers.indexOf(handle as (typeof timers)[number]);
        if (i >= 0) timers.splice(i, 1);
      },
    },
    /** Moves time forward, firing due timers in order. */
    async advance(ms: number) {
      const end = now + ms;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const next = timers[0];
        if (!next || next.at > end) break;
        timers.shift();
        now = next.at;
        next.fn();
        await Promise.resolve();
      }
      now = end;
      await Promise.resolve();
    },
  };
}

async function grantedWithin(
  pacer: TokenBucketPacer,
  time: ReturnType<typeof manualTime>,
  n: number,
  ms: number,
) {
  let granted = 0;
  for (let i = 0; i < n; i++) void pacer.acquire().then(() => granted++);
  await time.advance(0);
  await time.advance(ms);
  return granted;
}

describe('TokenBucketPacer', () => {
  it('spaces sends evenly at the rate, with no burst (SES counts over any one second)', async () => {
    const time = manualTime();
    const pacer = new TokenBucketPacer({ rate: 14, clock: time.clock, timers: time.timers });
    const grants: number[] = [];
    for (let i = 0; i < 100; i++) void pacer.acquire().then(() => grants.push(time.clock.now()));
    await time.advance(0);
    assert.equal(grants.length, 1, 'one send at once');
    await time.advance(1000);
    // Timers round up to whole milliseconds, so the 14th of the second may land just after it.
    assert.ok(grants.length >= 14 && grants.length <= 15, `${grants.length} in the first second`);
    for (let i = 1; i < grants.length; i++) assert.ok(grants[i]! - grants[i - 1]! >= 71, 'evenly spaced');
  });

  it('paces a burst of 500 at 14 per second: about 35 seconds, never faster', async () => {
    const time = manualTime();
    const pacer = new TokenBucketPacer({ rate: 14, clock: time.clock, timers: time.timers });
    const grants: number[] = [];
    for (let i = 0; i < 500; i++) void pacer.acquire().then(() => grants.push(time.clock.now()));
    await time.advance(0);
    await time.advance(40_000);
    assert.equal(grants.length, 500);
    for (let second = 1; second * 1000 <= grants.at(-1)!; second++) {
      const inWindow = grants.filter((t) => t > (second - 1) * 1000 && t <= second * 1000).length;
      assert.ok(inWindow <= 14, `${inWindow} grants in second ${second}`);
    }
    assert.ok(grants.at(-1)! >= 34_000 && grants.at(-1)! <= 36_000, `last grant at ${grants.at(-1)} ms`);
  });

  it('halves the rate when SES throttles anyway, then recovers towards the quota', async () => {
    const time = manualTime();
    const pacer = new TokenBucketPacer({ rate: 20, clock: time.clock, timers: time.timers });
    pacer.throttled();
    assert.equal(pacer.currentRate, 10);
    pacer.throttled();
    assert.equal(pacer.currentRate, 10, 'throttles of one burst count once');
    await time.advance(1_500);
    pacer.throttled();
    assert.equal(pacer.currentRate, 5);
    await time.advance(60_000);
    assert.equal(pacer.currentRate, 20, 'back at the quota after a quiet minute');
  });

  it('tells a caller that has to wait, and frees it on abort', async () => {
    const time = manualTime();
    const pacer = new TokenBucketPacer({ rate: 1, clock: time.clock, timers: time.timers });
    await pacer.acquire();
    const notices: boolean[] = [];
    const abort = new AbortController();
    const waiting = pacer.acquire({ signal: abort.signal, onWait: (w) => notices.push(w) });
    assert.deepEqual(notices, [true]);
    assert.equal(pacer.waiting, 1);
    abort.abort();
    await assert.rejects(waiting, { code: 'SHUTTING_DOWN' });
    assert.deepEqual(notices, [true, false]);
    assert.equal(pacer.waiting, 0);
  });

  it('does not save up sends while idle: after a quiet minute the next burst is paced as well', async () => {
    const time = manualTime();
    const pacer = new TokenBucketPacer({ rate: 10, clock: time.clock, timers: time.timers });
    await time.advance(60_000);
    assert.equal(await grantedWithin(pacer, time, 50, 0), 1);
  });

  it('never waits forever below one send per second', async () => {
    const time = manualTime();
    const pacer = new TokenBucketPacer({ rate: 0.5, clock: time.clock, timers: time.timers });
    assert.equal(await grantedWithin(pacer, time, 3, 4_100), 3);
  });
});
