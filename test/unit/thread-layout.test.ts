import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { domainsOfShard, parseShard, shardOf } from '../../src/config/shards.ts';
import { STARTUP_WAVE, startInWaves } from '../../src/daemon/startup-waves.ts';
import { THREAD_PER_DOMAIN_UP_TO, threadLayout } from '../../src/daemon/thread-layout.ts';

const domains = (n: number) => Array.from({ length: n }, (_, i) => `d${i}.example`);

describe('threadLayout', () => {
  it('gives each domain a thread of its own up to THREAD_PER_DOMAIN_UP_TO domains (POLLER_THREADS=0)', () => {
    for (const n of [1, 2, THREAD_PER_DOMAIN_UP_TO]) {
      const layout = threadLayout(domains(n), 0);
      assert.deepEqual(
        layout,
        domains(n).map((d) => [d]),
      );
    }
  });

  it('beyond it, THREAD_PER_DOMAIN_UP_TO threads share the domains, one more or less each', () => {
    const all = domains(1000);
    const layout = threadLayout(all, 0);
    assert.equal(layout.length, THREAD_PER_DOMAIN_UP_TO);
    const sizes = layout.map((t) => t.length);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `balanced: ${sizes.join(',')}`);
    assert.deepEqual(layout.flat().sort(), [...all].sort(), 'every domain exactly once');
  });

  it('POLLER_THREADS=N: N threads, never more than domains', () => {
    assert.equal(threadLayout(domains(10), 3).length, 3);
    assert.deepEqual(threadLayout(domains(5), 2), [
      ['d0.example', 'd2.example', 'd4.example'],
      ['d1.example', 'd3.example'],
    ]);
    assert.deepEqual(
      threadLayout(domains(2), 8),
      [['d0.example'], ['d1.example']],
      'at most one thread per domain',
    );
    assert.deepEqual(threadLayout(domains(3), 1), [domains(3)], 'one thread for everything');
  });
});

describe('shards', () => {
  it('shardOf is the first four bytes of SHA-256 of the name, big-endian, mod n (as docs/scaling.md computes it)', () => {
    // printf %s example.com | sha256sum -> a379a6f6...; another.org -> 5495bd5a...
    assert.equal(shardOf('example.com', 4), 0xa379a6f6 % 4);
    assert.equal(shardOf('example.com', 3), 0xa379a6f6 % 3);
    assert.equal(shardOf('another.org', 4), 0x5495bd5a % 4);
    assert.equal(shardOf('example.com', 1), 0);
  });

  it('every domain is in exactly one shard, and adding a domain moves no other', () => {
    const all = domains(500);
    const count = 7;
    const shares = Array.from({ length: count }, (_, index) => domainsOfShard(all, { index, count }));
    assert.deepEqual(shares.flat().sort(), [...all].sort());
    for (const share of shares) assert.ok(share.length > 40 && share.length < 110, `spread: ${share.length}`);
    const more = [...all, 'new-domain.example'];
    for (let index = 0; index < count; index++) {
      const before = new Set(shares[index]);
      const after = domainsOfShard(more, { index, count }).filter((d) => d !== 'new-domain.example');
      assert.deepEqual(after, [...before]);
    }
  });

  it('parseShard reads i/n and nothing else', () => {
    assert.deepEqual(parseShard('3/8'), { index: 3, count: 8 });
    assert.deepEqual(parseShard(' 0/1 '), { index: 0, count: 1 });
    for (const bad of ['', '3', '3/', '/8', '3/8/1', 'x/8', '-1/8', '1.5/8'])
      assert.equal(parseShard(bad), undefined);
  });
});

describe('startInWaves', () => {
  it('starts a wave only when the one before it is up, and stops starting when aborted', async () => {
    const units = Array.from({ length: 10 }, (_, i) => ({ i, up: false }));
    const startedOrder: number[] = [];
    const listeners = new Set<() => void>();
    const abort = new AbortController();
    const done = startInWaves({
      units,
      start: (u) => startedOrder.push(u.i),
      started: (u) => u.up,
      onChange: listeners,
      signal: abort.signal,
      waveSize: 4,
      timeoutMs: 60_000,
    });
    await Promise.resolve();
    assert.deepEqual(startedOrder, [0, 1, 2, 3], 'the first wave');
    for (const u of units.slice(0, 3)) u.up = true;
    for (const listener of listeners) listener();
    await Promise.resolve();
    assert.deepEqual(startedOrder, [0, 1, 2, 3], 'one of the first wave is not up yet');
    units[3]!.up = true;
    for (const listener of [...listeners]) listener();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(startedOrder, [0, 1, 2, 3, 4, 5, 6, 7], 'the second wave');
    abort.abort();
    await done;
    assert.deepEqual(startedOrder, [0, 1, 2, 3, 4, 5, 6, 7], 'no third wave after the abort');
    assert.equal(listeners.size, 0, 'no listener left behind');
  });

  it('does not wait longer than the timeout for a wave that does not come up', async () => {
    const started: number[] = [];
    await startInWaves({
      units: [0, 1, 2],
      start: (u) => started.push(u),
      started: () => false,
      onChange: new Set(),
      signal: new AbortController().signal,
      waveSize: 1,
      timeoutMs: 1,
    });
    assert.deepEqual(started, [0, 1, 2]);
    assert.ok(STARTUP_WAVE >= 1);
  });
});
