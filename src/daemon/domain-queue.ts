import type { SQSClient } from '@aws-sdk/client-sqs';
import { createSqsQueue, resolveQueueUrl, type MailQueue, type QueueAttributes } from '../aws/queue.ts';
import { queueNameFor, type Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import type { RetrySettings } from '../poller/retry-policy.ts';

export interface DomainQueue {
  queue: MailQueue;
  name: string;
  /** Undefined when they could not be read (the defaults below are used then). */
  attributes: QueueAttributes | undefined;
  visibilityTimeoutSeconds: number;
  retry: RetrySettings;
}

/**
 * Resolves a domain's queue (a missing queue is this domain's error, not the daemon's) and agrees on retries with
 * its redrive policy.
 */
export async function openDomainQueue(
  sqs: SQSClient,
  config: Config,
  domain: string,
  logger: Logger,
): Promise<DomainQueue> {
  const name = queueNameFor(config.queueNameTemplate, domain);
  const queue = createSqsQueue(sqs, await resolveQueueUrl(sqs, name), config.aws.deadlines);
  const attributes = await queue.attributes().catch(() => undefined);
  const visibilityTimeoutSeconds = attributes?.visibilityTimeoutSeconds ?? 30;
  return {
    queue,
    name,
    attributes,
    visibilityTimeoutSeconds,
    retry: {
      schedule: config.poll.retryDelaysSeconds,
      maxReceives: agreedMaxReceives(attributes, config.poll.maxReceives, name, logger),
      // Unknown (the attributes could not be read) counts as having one: a policy-less queue is the exception.
      hasRedrivePolicy: attributes?.hasRedrivePolicy ?? true,
      // Claims are whole seconds: one more and a dead worker's lease has surely run out.
      claimLeaseSeconds: leaseSecondsFor(visibilityTimeoutSeconds) + 1,
    },
  };
}

/** A claim outlives its worker by at most one visibility timeout: that is when SQS hands the message out again. */
export function leaseSecondsFor(visibilityTimeoutSeconds: number): number {
  return Math.max(5, visibilityTimeoutSeconds);
}

/**
 * The receive count at which the worker gives up: the queue's redrive maxReceiveCount when it has one (the queue
 * moves the message at that count whatever the worker thinks), else MAX_RECEIVES.
 */
function agreedMaxReceives(
  attributes: QueueAttributes | undefined,
  configured: number,
  queueName: string,
  logger: Logger,
): number {
  if (!attributes) return configured;
  if (!attributes.hasRedrivePolicy) {
    logger.warn(
      { queue: queueName, maxReceives: configured },
      'queue has no redrive policy: malformed messages stay until they expire, and a mail still failing at ' +
        'MAX_RECEIVES keeps coming back at the longest retry delay instead of moving to a dead-letter queue',
    );
    return configured;
  }
  const fromQueue = attributes.maxReceiveCount;
  if (fromQueue === undefined) return configured;
  if (fromQueue !== configured) {
    logger.warn(
      { queue: queueName, maxReceiveCount: fromQueue, MAX_RECEIVES: configured },
      "the queue's redrive maxReceiveCount differs from MAX_RECEIVES: the queue's value is used",
    );
  }
  return fromQueue;
}
