import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PollerOptionsError, resolvePollerOptions, type PollerOptions } from '../../src/poller/options.ts';

const valid: PollerOptions = {
  waitTimeSeconds: 20,
  idlePollAlignMs: 500,
  maxMessages: 10,
  concurrency: 100,
  retry: { schedule: [30, 60], maxReceives: 10, hasRedrivePolicy: true, claimLeaseSeconds: 31 },
  visibilityTimeoutSeconds: 30,
};

describe('poller options are checked once, before the poller starts', () => {
  it('fills in the receivers (one per 4 batches of concurrency) and the heartbeat (a third of the visibility)', () => {
    const resolved = resolvePollerOptions(valid);
    assert.equal(resolved.receivers, 2);
    assert.equal(resolved.heartbeatSeconds, 10);
    assert.equal(resolvePollerOptions({ ...valid, concurrency: 5 }).receivers, 1);
  });

  const refused: Array<[string, Partial<PollerOptions>, RegExp]> = [
    [
      'a heartbeat that comes after the visibility timeout',
      { heartbeatSeconds: 30 },
      /heartbeat \(every 30 s\) must come before the visibility timeout \(30 s\)/,
    ],
    [
      'a long poll over 20 s',
      { waitTimeSeconds: 21 },
      /waitTimeSeconds is 21: must be an integer from 0 to 20/,
    ],
    ['more than 10 messages per receive', { maxMessages: 11 }, /maxMessages is 11/],
    ['no concurrency', { concurrency: 0 }, /concurrency is 0/],
    [
      'more receivers than slots',
      { concurrency: 2, receivers: 3 },
      /receivers is 3: must be an integer from 1 to 2/,
    ],
    ['a visibility timeout of 0', { visibilityTimeoutSeconds: 0 }, /visibilityTimeoutSeconds is 0/],
    ['an empty retry schedule', { retry: { ...valid.retry, schedule: [] } }, /retry.schedule is empty/],
    [
      "a delay over SQS's 12 hours",
      { retry: { ...valid.retry, schedule: [30, 50_000] } },
      /retry.schedule\[1\] is 50000/,
    ],
    ['no receive before giving up', { retry: { ...valid.retry, maxReceives: 0 } }, /retry.maxReceives is 0/],
  ];
  for (const [name, patch, message] of refused) {
    it(`refuses ${name}`, () => {
      assert.throws(
        () => resolvePollerOptions({ ...valid, ...patch }),
        (error: unknown) => error instanceof PollerOptionsError && message.test(error.message),
      );
    });
  }
});
