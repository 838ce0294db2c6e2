/**
 * How often a domain's queue gauges read SQS: every minute while mail moves, every five minutes once the domain is
 * seen idle (its queue empty at the last read, a long poll since, nothing in hand, nothing finished). Counted with a
 * queue that records its reads and mocked interval timers; the gauges are read back from the metrics registry.
 */
import { DEFAULT_AWS_DEADLINES } from '../../src/aws/deadlines.ts';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { MailQueue, QueueAttributes } from '../../src/aws/queue.ts';
import { startQueueGauges } from '../../src/daemon/queue-gauges.ts';
import { createLogger } from '../../src/log/logger.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import type { PollerStatus } from '../../src/poller/domain-poller.ts';

const empty: QueueAttributes = {
  visible: 0,
  inFlight: 0,
  visibilityTimeoutSeconds: 900,
  hasRedrivePolicy: false,
};
const MINUTE = 60_000;

function rig(t: TestContext) {
  t.mock.timers.enable({ apis: ['setInterval'] });
  let now = 0;
  const answers: QueueAttributes[] = [];
  const reads: number[] = [];
  const queue = {
    attributes: async () => {
      reads.push(now);
      return answers.shift() ?? empty;
    },
  } as unknown as MailQueue;
  const status: Pick<PollerStatus, 'lastPollAt' | 'lastActivityAt' | 'inFlight'> = { inFlight: 0 };
  const metrics = createPipelineMetrics();
  const logger = createLogger({
    level: 'silent',
    redactAddresses: false,
    destination: new Writable({ write: (_c, _e, done) => done() }),
  });
  const stop = startQueueGauges({
    sqs: {} as SQSClient,
    deadlines: DEFAULT_AWS_DEADLINES,
    queue,
    domain: 'gauges.test',
    metrics,
    logger,
    clock: { now: () => now, sleep: async () => undefined },
    initial: empty,
    poller: { getStatus: () => status },
  });
  t.after(stop);
  /** Moves the clock a minute on, runs the refresh timer, and lets its read settle. */
  const minute = async () => {
    now += MINUTE;
    t.mock.timers.tick(MINUTE);
    await new Promise((resolve) => setImmediate(resolve));
  };
  const gauge = async (name: string) => {
    const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
    return metric?.values.find((v) => v.labels.domain === 'gauges.test')?.value;
  };
  return { answers, reads, status, minute, gauge, at: () => now };
}

describe('queue gauges', () => {
  it('reads every minute until the poller has polled since an empty read', async (t) => {
    const r = rig(t);
    await r.minute();
    await r.minute();
    assert.deepEqual(r.reads, [MINUTE, 2 * MINUTE], 'no poll yet: nothing shows the queue idle');
  });

  it('reads an idle domain every five minutes, and again each minute once mail moved', async (t) => {
    const r = rig(t);
    r.status.lastPollAt = 30_000;
    for (let i = 0; i < 5; i++) await r.minute();
    assert.deepEqual(r.reads, [5 * MINUTE], 'idle since the start: one read in five minutes');

    r.status.lastPollAt = r.at() + 1;
    await r.minute();
    assert.equal(r.reads.length, 1, 'idle: polled since the read, nothing else');

    r.status.lastActivityAt = r.at() + 2;
    await r.minute();
    assert.deepEqual(r.reads.slice(1), [7 * MINUTE], 'a message finished since the last read');

    r.status.inFlight = 3;
    r.status.lastPollAt = r.at() + 1;
    await r.minute();
    assert.equal(r.reads.at(-1), 8 * MINUTE, 'mail in hand');
  });

  it('keeps reading each minute while the queue showed messages, and shows what it read', async (t) => {
    const r = rig(t);
    r.answers.push({ ...empty, visible: 12, inFlight: 4 });
    await r.minute();
    assert.equal(await r.gauge('ses_worker_queue_messages'), 12);
    r.status.lastPollAt = r.at() + 1;
    await r.minute();
    assert.deepEqual(r.reads, [MINUTE, 2 * MINUTE], 'the last read was not empty');
    assert.equal(await r.gauge('ses_worker_queue_messages'), 0);
  });
});
