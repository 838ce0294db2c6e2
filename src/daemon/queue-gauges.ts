import type { MailQueue, QueueAttributes } from '../aws/queue.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';

/** The alerts look at 10-minute windows and KEDA reads the queues itself: a minute is fresh enough. */
const REFRESH_MS = 60_000;

/** Keeps a domain's queue gauges (visible, in flight) fresh; returns the stop. */
export function startQueueGauges(
  queue: MailQueue,
  domain: string,
  metrics: PipelineMetrics,
  initial: QueueAttributes | undefined,
): () => void {
  const show = (attributes: QueueAttributes | undefined) => {
    if (!attributes) return;
    metrics.queueSize(domain, attributes.visible);
    metrics.queueInFlight(domain, attributes.inFlight);
  };
  show(initial);
  const timer = setInterval(() => void queue.attributes().then(show, () => undefined), REFRESH_MS);
  timer.unref();
  return () => clearInterval(timer);
}
