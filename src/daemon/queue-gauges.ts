import type { SQSClient } from '@aws-sdk/client-sqs';
import { openDeadLetterQueue, type DeadLetterQueue } from '../aws/dead-letter-queue.ts';
import type { MailQueue, QueueAttributes } from '../aws/queue.ts';
import type { Clock } from '../clock.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';

/** The alerts look at 10-minute windows and KEDA reads the queues itself: a minute is fresh enough. */
const REFRESH_MS = 60_000;

export interface QueueGaugeDeps {
  sqs: SQSClient;
  queue: MailQueue;
  domain: string;
  metrics: PipelineMetrics;
  logger: Logger;
  clock: Clock;
  /** The queue's attributes as read at start (the gauges show them at once). */
  initial: QueueAttributes | undefined;
}

/** Keeps a domain's queue gauges fresh: visible and in-flight messages, and its dead-letter queue's depth and age. */
export function startQueueGauges(deps: QueueGaugeDeps): () => void {
  const { domain, metrics } = deps;
  let deadLetters: Promise<DeadLetterQueue | undefined> | undefined;
  const refresh = async (attributes: QueueAttributes | undefined) => {
    if (!attributes) return;
    metrics.queueSize(domain, attributes.visible);
    metrics.queueInFlight(domain, attributes.inFlight);
    const arn = attributes.deadLetterTargetArn;
    if (arn === undefined) return;
    deadLetters ??= openDeadLetterQueue(deps.sqs, arn).catch((error: unknown) => {
      deps.logger.warn({ err: errorMessage(error) }, 'cannot watch the dead-letter queue');
      return undefined;
    });
    const dlq = await deadLetters;
    const depth = await dlq?.depth().catch(() => undefined);
    if (!depth) return;
    const age = depth.oldestSentAt === undefined ? 0 : (deps.clock.now() - depth.oldestSentAt) / 1000;
    metrics.deadLetters(domain, depth.messages, Math.max(0, Math.round(age)));
  };
  void refresh(deps.initial);
  const timer = setInterval(() => void deps.queue.attributes().then(refresh, () => undefined), REFRESH_MS);
  timer.unref();
  return () => clearInterval(timer);
}
