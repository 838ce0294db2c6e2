/**
 * The SQS lookups setup, doctor and dlq share: a queue that may not exist, its ARN, and where its redrive
 * policy sends messages.
 */
import { GetQueueAttributesCommand, type SQSClient } from '@aws-sdk/client-sqs';

import { resolveQueueUrl } from '../aws/queue.ts';
import { deadLetterQueueName, nameFromTemplate } from '../aws/resources.ts';
import type { Config } from '../config/config.ts';
import { WorkerError, awsError } from '../errors.ts';

const MISSING_QUEUE = new Set(['QueueDoesNotExist', 'AWS.SimpleQueueService.NonExistentQueue']);

/** The queue's URL, or undefined when there is no such queue (any other failure throws). */
export async function findQueue(
  sqs: SQSClient,
  name: string,
  signal?: AbortSignal,
): Promise<string | undefined> {
  try {
    return await resolveQueueUrl(sqs, name, signal);
  } catch (error) {
    if (error instanceof WorkerError && error.awsCode !== undefined && MISSING_QUEUE.has(error.awsCode)) {
      return undefined;
    }
    throw error;
  }
}

export interface RedriveTarget {
  deadLetterTargetArn: string;
  maxReceiveCount: number | undefined;
}

export interface QueueFacts {
  arn: string;
  redrive?: RedriveTarget;
  visibilityTimeoutSeconds: number;
  /** The queue's resource policy (JSON text), when it has one. */
  policy?: string;
}

/** QueueArn, the parsed RedrivePolicy, the visibility timeout and the resource policy. */
export async function queueFacts(sqs: SQSClient, url: string, signal?: AbortSignal): Promise<QueueFacts> {
  let attributes: Record<string, string>;
  try {
    const result = await sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: url,
        AttributeNames: ['QueueArn', 'RedrivePolicy', 'VisibilityTimeout', 'Policy'],
      }),
      { abortSignal: signal },
    );
    attributes = result.Attributes ?? {};
  } catch (error) {
    throw awsError('SQS_ERROR', `GetQueueAttributes ${url}`, error);
  }
  const arn = attributes.QueueArn ?? '';
  const redrive = parseRedrivePolicy(attributes.RedrivePolicy);
  return {
    arn,
    visibilityTimeoutSeconds: Number(attributes.VisibilityTimeout ?? 30),
    ...(redrive && { redrive }),
    ...(attributes.Policy && { policy: attributes.Policy }),
  };
}

export function parseRedrivePolicy(text: string | undefined): RedriveTarget | undefined {
  if (!text) return undefined;
  try {
    const policy = JSON.parse(text) as { deadLetterTargetArn?: unknown; maxReceiveCount?: unknown };
    if (typeof policy.deadLetterTargetArn !== 'string') return undefined;
    const count = Number(policy.maxReceiveCount);
    return {
      deadLetterTargetArn: policy.deadLetterTargetArn,
      maxReceiveCount: Number.isFinite(count) ? count : undefined,
    };
  } catch {
    return undefined;
  }
}

/** `arn:aws:sqs:region:account:name` → `name`. */
export function queueNameFromArn(arn: string): string {
  return arn.slice(arn.lastIndexOf(':') + 1);
}

export interface DomainQueueNames {
  queue: string;
  deadLetter: string;
}

/** The names setup creates for a domain: QUEUE_NAME_TEMPLATE and its dead-letter queue. */
export function domainQueueNames(config: Config, domain: string): DomainQueueNames {
  const queue = nameFromTemplate(config.queueNameTemplate, domain);
  return { queue, deadLetter: deadLetterQueueName(queue) };
}

/** A domain's queue and the dead-letter queue its redrive policy names (or `<queue>-dlq`). */
export interface DomainQueues {
  domain: string;
  queueName: string;
  queueUrl: string;
  queueArn: string;
  dlqName: string;
  dlqUrl: string;
  dlqArn: string;
}

export async function resolveDomainQueues(
  sqs: SQSClient,
  config: Config,
  domain: string,
): Promise<DomainQueues> {
  const names = domainQueueNames(config, domain);
  const queueUrl = await findQueue(sqs, names.queue);
  if (queueUrl === undefined) {
    throw new Error(`queue ${names.queue} does not exist (unified-worker setup creates it)`);
  }
  const facts = await queueFacts(sqs, queueUrl);
  const dlqName = facts.redrive ? queueNameFromArn(facts.redrive.deadLetterTargetArn) : names.deadLetter;
  const dlqUrl = await findQueue(sqs, dlqName);
  if (dlqUrl === undefined) {
    throw new Error(
      facts.redrive
        ? `the dead-letter queue ${dlqName} named by ${names.queue}'s redrive policy does not exist`
        : `${names.queue} has no redrive policy and there is no ${dlqName} (unified-worker setup adds both)`,
    );
  }
  const dlqArn = facts.redrive?.deadLetterTargetArn ?? (await queueFacts(sqs, dlqUrl)).arn;
  return { domain, queueName: names.queue, queueUrl, queueArn: facts.arn, dlqName, dlqUrl, dlqArn };
}
