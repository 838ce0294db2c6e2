import { gaveUpMetadata } from '../aws/audit-metadata.ts';
import type { MailStore } from '../aws/mail-store.ts';
import type { MailQueue, QueueMessage } from '../aws/queue.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log/logger.ts';
import type { MessageOutcome } from '../pipeline/outcome.ts';
import type { DeleteBatcher } from './delete-batcher.ts';
import type { RetryDecision } from './retry-policy.ts';

export interface SettleDeps {
  queue: MailQueue;
  batcher: DeleteBatcher;
  mailStore: MailStore;
  domain: string;
  logger: Logger;
  clock: Clock;
}

/** Applies a retry decision to the SQS message: delete (batched), make visible again later or now, or leave it. */
export async function settle(
  message: QueueMessage,
  outcome: MessageOutcome,
  decision: RetryDecision,
  deps: SettleDeps,
): Promise<void> {
  const entry = { messageId: message.messageId, receiptHandle: message.receiptHandle };
  if (decision.giveUp) await giveUp(message, outcome, decision, deps);
  if (decision.action === 'delete') deps.batcher.add(entry);
  else if (decision.action !== 'dead-letter') await deps.queue.changeVisibility(entry, decision.after ?? 0);
}

/** Marks the mail failed in S3 the first time it reaches the give-up count (not again on every later receive). */
async function giveUp(
  message: QueueMessage,
  outcome: MessageOutcome,
  decision: RetryDecision,
  deps: SettleDeps,
): Promise<void> {
  if (outcome.gaveUpRecorded) return;
  deps.logger.error(
    { sesMessageId: outcome.sesMessageId, receiveCount: message.receiveCount, reason: outcome.reason },
    decision.action === 'dead-letter'
      ? 'message reached MAX_RECEIVES; the queue will redrive it to the dead-letter queue'
      : 'message reached MAX_RECEIVES; the queue has no redrive policy, so it keeps coming back at the longest retry delay',
  );
  if (!outcome.mailLocation) return;
  const reason = `gave up after ${message.receiveCount} receives: ${outcome.reason ?? outcome.status}`;
  await deps.mailStore.updateMetadata(
    outcome.mailLocation,
    gaveUpMetadata(deps.clock.now(), deps.domain, reason),
  );
}
