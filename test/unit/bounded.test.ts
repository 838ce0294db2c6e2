/** doctor's bounded fan-out over domains (src/cli/doctor/bounded.ts): order kept, never more than the limit at once. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';

import { mapBounded } from '../../src/cli/doctor/bounded.ts';

describe('mapBounded', () => {
  it('keeps the order of the items and runs at most `limit` at once', async () => {
    let running = 0;
    let most = 0;
    const items = Array.from({ length: 20 }, (_, i) => i);
    const results = await mapBounded(items, 3, async (i) => {
      running += 1;
      most = Math.max(most, running);
      await sleep(i % 4);
      running -= 1;
      return i * 10;
    });
    assert.deepEqual(
      results,
      items.map((i) => i * 10),
    );
    assert.equal(most, 3);
  });

  it('handles no items and fewer items than the limit', async () => {
    assert.deepEqual(await mapBounded([], 8, async () => 1), []);
    assert.deepEqual(await mapBounded(['a'], 8, async (s) => s.toUpperCase()), ['A']);
  });

  it('rejects with the first failure', async () => {
    await assert.rejects(
      mapBounded([1, 2, 3], 2, async (i) => {
        if (i === 2) throw new Error('two');
        return i;
      }),
      /two/,
    );
  });
});
