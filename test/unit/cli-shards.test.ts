import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { shardOf } from '../../src/config/shards.ts';
import { runCommand } from '../harness/cli-runner.ts';

const DOMAINS = 'example.com,another.com,example.org,example.net';

describe('unified-worker shards', () => {
  it('lists each shard of DOMAINS with its queues, as the daemon with SHARD=i/n would poll them', async () => {
    const result = await runCommand(['shards', '--count', '2', '--json'], { DOMAINS });
    assert.equal(result.code, 0, result.stderr);
    const { count, shards } = result.json<{
      count: number;
      shards: Array<{ shard: string; domains: Array<{ domain: string; queue: string }> }>;
    }>();
    assert.equal(count, 2);
    assert.deepEqual(
      shards.map((s) => s.shard),
      ['0/2', '1/2'],
    );
    for (const [index, shard] of shards.entries()) {
      for (const { domain, queue } of shard.domains) {
        assert.equal(shardOf(domain, 2), index, domain);
        assert.equal(queue, `${domain.replaceAll('.', '-')}-queue`);
      }
    }
    assert.deepEqual(
      shards.flatMap((s) => s.domains.map((d) => d.domain)).sort(),
      DOMAINS.split(',').sort(),
      'every domain in exactly one shard',
    );
    // The overlay in deploy/kubernetes/overlays/sharded-example was written from this.
    assert.deepEqual(
      shards[0]!.domains.map((d) => d.domain),
      ['example.com', 'example.org'],
    );
  });

  it('says which shards would have no domain, and refuses a count that is no count', async () => {
    const human = await runCommand(['shards', '--count', '8', '--domains', 'example.com'], {});
    assert.equal(human.code, 0, human.stderr);
    // 0xa379a6f6 % 8 = 6 (printf %s example.com | sha256sum)
    assert.match(human.stdout, /^SHARD=6\/8: 1 domain\n {2}example\.com {2}\(queue example-com-queue\)$/m);
    assert.match(human.stdout, /SHARD=0\/8: 0 domains\n {2}none: a daemon with this SHARD refuses to start/);
    for (const bad of ['0', 'two', '1025', '1.5']) {
      const result = await runCommand(['shards', '--count', bad], { DOMAINS });
      assert.equal(result.code, 2, bad);
      assert.match(result.stderr, /--count must be an integer 1\.\.1024/);
    }
  });
});
