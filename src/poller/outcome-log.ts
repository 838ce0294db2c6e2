import type { QueueMessage } from '../aws/queue.ts';
import type { Logger } from '../log/logger.ts';
import type { MessageOutcome } from '../pipeline/outcome.ts';
import type { RetryDecision } from './retry-policy.ts';

/**
 * The one log line per message outcome: SES and SQS ids, status, what happens to the message and why, each
 * recipient's state (and reply code), each effect, the bounds the mail went past, the duration. `domain` comes from
 * the logger's child binding.
 */
export function logOutcome(
  logger: Logger,
  redact: (address: string) => string,
  message: QueueMessage,
  outcome: MessageOutcome,
  decision: RetryDecision,
  durationMs: number,
): void {
  const line = {
    sesMessageId: outcome.sesMessageId,
    sqsMessageId: message.messageId,
    receiveCount: message.receiveCount,
    status: outcome.status,
    disposition: decision.action,
    ...(decision.action === 'retry' && { retryReason: decision.reason, retryAfterSeconds: decision.after }),
    recipients: outcome.recipients.map((r) => ({
      recipient: redact(r.recipient),
      state: r.state,
      ...(r.code !== undefined && { code: r.code }),
      // A delivery now carries the server's 250 (noise); one from an earlier attempt says so.
      ...((r.state !== 'delivered' || r.code === undefined) &&
        r.detail !== undefined && { detail: r.detail }),
    })),
    ...(outcome.effects.length > 0 && {
      effects: outcome.effects.map((e) => ({
        kind: e.kind,
        recipient: redact(e.recipient),
        ...(e.target && { target: redact(e.target) }),
        ...(e.route && { route: e.route }),
        status: e.status,
        ...(e.reason !== undefined && { reason: e.reason }),
      })),
    }),
    ...(outcome.bounceRewritten && { bounceRewritten: true }),
    ...(outcome.loopMarker && { loopMarker: true }),
    ...(outcome.limits && { limits: outcome.limits }),
    ...(outcome.reason !== undefined && { reason: outcome.reason }),
    durationMs,
  };
  if (outcome.status === 'malformed')
    logger.error(line, 'malformed SQS message left for the dead-letter queue');
  else if (decision.action === 'release') logger.info(line, 'message released for another consumer');
  else if (decision.action !== 'delete') logger.warn(line, 'message deferred');
  else if (outcome.status === 'failed') logger.error(line, 'message failed permanently');
  else logger.info(line, 'message processed');
}
