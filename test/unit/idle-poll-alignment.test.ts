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

/**
 * Polls an always-empty queue whose long polls take `pollMs` of the jumping clock; returns when each receive began.
 * Only the receive loop runs (no message ever arrives), so the ports the pipeline would use are left out.
 */
async function receiveStarts(idlePollAlignMs: number, pollMs: number, receives: number): Promise<number[]> {
  const clock = new JumpingClock(1_234);
  const starts: number[] = [];
  const queue = {
    url: 'https://sqs.example/000000000000/mail',
    receive(): Promise<QueueMessage[]> {
      starts.push(clock.now());
      clock.nowMs += pollMs;
      if (starts.length === receives) poller.stop();
      return Promise.resolve([]);
    },
  } as unknown as MailQueue;
  const ports = { domain: 'example.org', logger: pino({ level: 'silent' }), metrics: {}, clock };
  const poller = new DomainPoller(queue, ports as unknown as PipelinePorts, {
    waitTimeSeconds: 20,
    maxMessages: 10,
    concurrency: 10,
    idlePollAlignMs,
    retry: { schedule: [30], maxReceives: 5, claimLeaseSeconds: 60, hasRedrivePolicy: false },
    visibilityTimeoutSeconds: 300,
  });
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
});
