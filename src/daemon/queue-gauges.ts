import type { SQSClient } from '@aws-sdk/client-sqs';
import { openDeadLetterQueue, type DeadLetterDepth, type DeadLetterQueue } from '../aws/dead-letter-queue.ts';
import type { AwsDeadlines } from '../aws/deadlines.ts';
import type { MailQueue, QueueAttributes } from '../aws/queue.ts';
import type { Clock } from '../clock.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import type { PollerStatus } from '../poller/domain-poller.ts';

/**
 * The alerts look at 10-minute windows and KEDA reads the queues itself: a minute is fresh enough while mail moves.
 * A domain seen idle since the last read (empty then, every long poll since empty, nothing in hand) cannot have
 * gained mail unseen but through another replica: it is read every five minutes, which with many domains is most of
 * their SQS requests saved (BENCHMARKS.md, "Many domains").
 */
const REFRESH_MS = 60_000;
/** Ticks skipped in a row while idle: the fifth reads again (counted, not timed: a clock step cannot stretch it). */
const IDLE_SKIPS = 4;

export interface QueueGaugeDeps {
  sqs: SQSClient;
  deadlines: AwsDeadlines;
  queue: MailQueue;
  domain: string;
  metrics: PipelineMetrics;
  logger: Logger;
  clock: Clock;
  /** The queue's attributes as read at start (the gauges show them at once). */
  initial: QueueAttributes | undefined;
  /** What the domain's poller has seen since: its polls, its mail in hand, its last finished message. */
  poller: { getStatus(): Pick<PollerStatus, 'lastPollAt' | 'lastActivityAt' | 'inFlight'> };
}

interface LastRead {
  at: number;
  attributes: QueueAttributes;
}

/** Keeps a domain's queue gauges fresh: visible and in-flight messages, and its dead-letter queue's depth and age. */
export function startQueueGauges(deps: QueueGaugeDeps): () => void {
  const { domain, metrics, clock } = deps;
  let deadLetters: Promise<DeadLetterQueue | undefined> | undefined;
  let depth: DeadLetterDepth | undefined;
  let last: LastRead | undefined;
  let skipped = 0;
  const showDeadLetters = () => {
    if (!depth) return;
    const age = depth.oldestSentAt === undefined ? 0 : (clock.now() - depth.oldestSentAt) / 1000;
    metrics.deadLetters(domain, depth.messages, Math.max(0, Math.round(age)));
  };
  const refresh = async (attributes: QueueAttributes | undefined, at: number) => {
    if (!attributes) return;
    last = { at, attributes };
    metrics.queueSize(domain, attributes.visible);
    metrics.queueInFlight(domain, attributes.inFlight);
    const arn = attributes.deadLetterTargetArn;
    if (arn === undefined) return;
    deadLetters ??= openDeadLetterQueue(deps.sqs, arn, deps.deadlines).catch((error: unknown) => {
      deps.logger.warn({ err: errorMessage(error) }, 'cannot watch the dead-letter queue');
      return undefined;
    });
    const dlq = await deadLetters;
    depth = (await dlq?.depth().catch(() => undefined)) ?? depth;
    showDeadLetters();
  };
  const tick = () => {
    const now = clock.now();
    if (last && skipped < IDLE_SKIPS && idleSince(last, deps.poller.getStatus())) {
      skipped += 1;
      showDeadLetters();
      return;
    }
    skipped = 0;
    void deps.queue.attributes().then(
      (attributes) => refresh(attributes, now),
      () => undefined,
    );
  };
  void refresh(deps.initial, clock.now());
  const timer = setInterval(tick, REFRESH_MS);
  timer.unref();
  return () => clearInterval(timer);
}

function idleSince(
  last: LastRead,
  status: Pick<PollerStatus, 'lastPollAt' | 'lastActivityAt' | 'inFlight'>,
): boolean {
  return (
    last.attributes.visible === 0 &&
    last.attributes.inFlight === 0 &&
    status.inFlight === 0 &&
    (status.lastPollAt ?? 0) > last.at &&
    (status.lastActivityAt ?? -Infinity) < last.at
  );
}
