import type { Claim, EffectLedger } from '../aws/effect-ledger.ts';
import type { MailQueue, QueueMessage } from '../aws/queue.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';

export interface HeartbeatDeps {
  queue: MailQueue;
  ledger: EffectLedger;
  domain: string;
  logger: Logger;
  metrics: PipelineMetrics;
  visibilityTimeoutSeconds: number;
  heartbeatSeconds: number;
}

/**
 * Keeps a slow message (a large mail, a slow mail server) invisible while it is processed, so no second consumer
 * starts it; SQS would otherwise hand it out again when the visibility timeout runs out mid-delivery. Each beat
 * also renews the lease of the message's live ledger claims, so a slow delivery is never taken over either.
 * Returns the stop: it resolves once a beat still on its way has landed, so the retry visibility set after it is
 * not undone by a late beat.
 */
export function startHeartbeat(
  message: QueueMessage,
  liveClaims: ReadonlySet<Claim>,
  deps: HeartbeatDeps,
): () => Promise<void> {
  const entry = { messageId: message.messageId, receiptHandle: message.receiptHandle };
  let beat: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    const visibility = deps.queue
      .changeVisibility(entry, deps.visibilityTimeoutSeconds)
      .catch((error: unknown) => {
        deps.metrics.heartbeatFailed(deps.domain);
        deps.logger.warn(
          { sqsMessageId: message.messageId, err: errorMessage(error) },
          'visibility heartbeat failed',
        );
      });
    beat = Promise.all([visibility, ...[...liveClaims].map((claim) => renew(claim, deps))]);
  }, deps.heartbeatSeconds * 1000);
  return async () => {
    clearInterval(timer);
    await beat;
  };
}

async function renew(claim: Claim, deps: HeartbeatDeps): Promise<void> {
  try {
    if (await deps.ledger.renew(claim)) return;
    deps.metrics.ledgerError(deps.domain, 'renew');
    deps.logger.error(
      { key: claim.key },
      'ledger claim lost while its effect is in progress (the lease ran out and another worker took over)',
    );
  } catch (error) {
    deps.metrics.ledgerError(deps.domain, 'renew');
    deps.logger.warn({ key: claim.key, err: errorMessage(error) }, 'could not renew a ledger claim');
  }
}
