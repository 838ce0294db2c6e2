/**
 * A queue the daemon consumes, with its dead-letter queue (14 days retention) and a redrive policy at
 * MAX_RECEIVES; an existing queue only gets the redrive policy it lacks.
 */
import { CreateQueueCommand, SetQueueAttributesCommand } from '@aws-sdk/client-sqs';

import { describeError } from '../command.ts';
import {
  findQueue,
  queueFacts,
  queueNameFromArn,
  type DomainQueueNames,
  type QueueFacts,
} from '../queues.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';

/** SQS's longest retention: what waits in a dead-letter queue needs time to be looked at. */
const DLQ_RETENTION_SECONDS = 14 * 86_400;

export interface EnsuredQueue {
  items: SetupItem[];
  /** The queue as it is now, when it exists. */
  queue?: { url: string; facts: QueueFacts };
}

export async function ensureQueues(context: SetupContext, names: DomainQueueNames): Promise<EnsuredQueue> {
  context.progress.step(`queue ${names.queue}`);
  const dlq = item('dead-letter queue', names.deadLetter);
  const queue = item('queue', names.queue);
  let dlqArn: string;
  try {
    dlqArn = await ensureDeadLetterQueue(context, names.deadLetter, dlq);
  } catch (error) {
    failed(dlq, describeError(error));
    return { items: [dlq, failed(queue, 'not checked: its dead-letter queue is missing')] };
  }
  try {
    const url = await ensureSourceQueue(context, names, dlqArn, queue);
    const facts = await queueFacts(context.clients.sqs, url);
    return { items: [dlq, queue], queue: { url, facts } };
  } catch (error) {
    return { items: [dlq, failed(queue, describeError(error))] };
  }
}

/** Creates the dead-letter queue when missing; returns its ARN. */
async function ensureDeadLetterQueue(
  context: SetupContext,
  name: string,
  result: SetupItem,
): Promise<string> {
  const { sqs } = context.clients;
  let url = await findQueue(sqs, name);
  if (url === undefined) {
    const created = await sqs.send(
      new CreateQueueCommand({
        QueueName: name,
        Attributes: {
          MessageRetentionPeriod: String(DLQ_RETENTION_SECONDS),
          ...(name.endsWith('.fifo') && { FifoQueue: 'true' }),
        },
      }),
    );
    url = created.QueueUrl ?? '';
    result.outcome = 'created';
    result.details.push('messages kept 14 days');
  }
  return (await queueFacts(sqs, url)).arn;
}

/** Creates the queue with its redrive policy, or adds the policy an existing queue lacks; returns its URL. */
async function ensureSourceQueue(
  context: SetupContext,
  names: DomainQueueNames,
  dlqArn: string,
  result: SetupItem,
): Promise<string> {
  const { sqs } = context.clients;
  const maxReceives = context.config.poll.maxReceives;
  const policy = JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: maxReceives });
  const redriveText = `redrive to ${names.deadLetter} after ${maxReceives} receives`;
  const url = await findQueue(sqs, names.queue);
  if (url === undefined) {
    const created = await sqs.send(
      new CreateQueueCommand({
        QueueName: names.queue,
        Attributes: { RedrivePolicy: policy, ...(names.queue.endsWith('.fifo') && { FifoQueue: 'true' }) },
      }),
    );
    result.outcome = 'created';
    result.details.push(redriveText);
    return created.QueueUrl ?? '';
  }
  const facts = await queueFacts(sqs, url);
  if (!facts.redrive) {
    await sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { RedrivePolicy: policy } }));
    result.outcome = 'updated';
    result.details.push(`had no redrive policy: now ${redriveText}`);
    return url;
  }
  const target = queueNameFromArn(facts.redrive.deadLetterTargetArn);
  if (target !== names.deadLetter) {
    result.warnings.push(`its redrive policy sends to ${target}, not ${names.deadLetter}: left as it is`);
  }
  if (facts.redrive.maxReceiveCount !== maxReceives) {
    result.warnings.push(
      `redrive maxReceiveCount is ${String(facts.redrive.maxReceiveCount)}, MAX_RECEIVES is ${maxReceives}: left as it is; ` +
        'make them equal (SetQueueAttributes RedrivePolicy, or set MAX_RECEIVES)',
    );
  }
  return url;
}
