import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { MailQueue, QueueMessage } from '../../src/aws/queue.ts';
import type { Clock } from '../../src/clock.ts';
import type { PipelinePorts } from '../../src/pipeline/ports.ts';
import { DomainPoller } from '../../src/poller/domain-poller.ts';

/** A clock that jumps: a sleep moves "now" forward by its length and ends at once. */
class JumpingClock implements Clock {
  constructor(public nowMs: number) {}
  now(): number {
    return this.nowMs;
  }
  sleep(ms: number): Promise<void> {
    this.nowMs += ms;
    return Promise.resolve();
  }
}

/** A poller of `queue` on `clock`; only its receive loop runs (no message ever arrives), so other ports are left out. */
function pollerOn(queue: Pick<MailQueue, 'receive'>, clock: Clock, idlePollAlignMs: number): DomainPoller {
  const ports = { domain: 'example.org', logger: pino({ level: 'silent' }), metrics: {}, clock };
  return new DomainPoller(queue as MailQueue, ports as unknown as PipelinePorts, {
    waitTimeSeconds: 20,
    maxMessages: 10,
    concurrency: 10,
    idlePollAlignMs,
    retry: { schedule: [30], maxReceives: 5, claimLeaseSeconds: 60, hasRedrivePolicy: false },
    visibilityTimeoutSeconds: 300,
  });
}

/** Polls an always-empty queue whose long polls take `pollMs` of a jumping clock; returns when each receive began. */
async function receiveStarts(idlePollAlignMs: number, pollMs: number, receives: number): Promise<number[]> {
  const clock = new JumpingClock(1_234);
  const starts: number[] = [];
  const poller = pollerOn(
    {
      receive(): Promise<QueueMessage[]> {
        starts.push(clock.now());
        clock.nowMs += pollMs;
        if (starts.length === receives) poller.stop();
        return Promise.resolve([]);
      },
    },
    clock,
    idlePollAlignMs,
  );
  await poller.run();
  return starts;
}

describe('an idle domain polls again in step with the clock', () => {
  it('starts the poll after an empty one on the next whole multiple of IDLE_POLL_ALIGN_MS', async () => {
    const starts = await receiveStarts(500, 20_007, 4);
    assert.equal(starts[0], 1_234, 'the first poll starts at once');
    for (const start of starts.slice(1)) assert.equal(start % 500, 0, `a poll started at ${start}`);
    // Each gap is the shortest wait to the next step: never a whole step more.
    starts.slice(1).forEach((start, i) => assert.ok(start - (starts[i]! + 20_007) < 500));
  });

  it('polls again at once with IDLE_POLL_ALIGN_MS=0', async () => {
    const starts = await receiveStarts(0, 20_007, 3);
    assert.deepEqual(starts, [1_234, 21_241, 41_248]);
  });

  it('stops at once while waiting for the next step', async () => {
    // A clock that never moves: without the stop's abort, the wait after the first (empty) poll would never end.
    const stillClock: Clock = {
      now: () => 1_234,
      sleep: (_ms, signal) =>
        new Promise((_resolve, reject) => signal?.addEventListener('abort', () => reject(signal.reason))),
    };
    let receives = 0;
    const poller = pollerOn(
      {
        receive: () => {
          receives += 1;
          setTimeout(() => poller.stop(), 20);
          return new Promise((resolve) => setImmediate(() => resolve([])));
        },
      },
      stillClock,
      5_000,
    );
    await poller.run();
    assert.equal(receives, 1);
  });
});
