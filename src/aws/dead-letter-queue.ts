import { GetQueueUrlCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { awsError } from '../errors.ts';
import type { AwsDeadlines } from './deadlines.ts';
import { directSqs } from './sqs-direct.ts';

/** What a dead-letter queue holds: how many messages, and when the oldest of a sample was first sent. */
export interface DeadLetterDepth {
  messages: number;
  /** Epoch ms; absent when the queue is empty or the sample held nothing. */
  oldestSentAt?: number;
}

export interface DeadLetterQueue {
  depth(): Promise<DeadLetterDepth>;
}

/**
 * A domain's dead-letter queue, watched for the gauges. SQS gives no age of the oldest message through its API
 * (only CloudWatch does), so a non-empty queue is sampled: a receive of up to 10 messages with a visibility of 0
 * (they stay visible; a dead letter's receive count matters to nobody) and the earliest SentTimestamp, which a
 * redrive keeps from the original queue.
 */
export async function openDeadLetterQueue(
  sqs: SQSClient,
  arn: string,
  deadlines: AwsDeadlines,
): Promise<DeadLetterQueue> {
  const [, , , , account, name] = arn.split(':');
  if (!account || !name)
    throw awsError('SQS_ERROR', `dead-letter queue ARN ${arn}`, new Error('not an SQS ARN'), false);
  let url: string;
  try {
    const found = await sqs.send(
      new GetQueueUrlCommand({ QueueName: name, QueueOwnerAWSAccountId: account }),
    );
    url = found.QueueUrl ?? '';
  } catch (error) {
    throw awsError('SQS_ERROR', `GetQueueUrl ${name}`, error);
  }
  const depthRequest = Object.freeze({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages'] });
  return {
    async depth() {
      try {
        // Read every few minutes for every domain: the direct call, as the queue's own gauges (aws/sqs-direct.ts).
        const attributes = await directSqs(sqs).getQueueAttributes(depthRequest, { deadlines });
        const messages = Number(attributes.ApproximateNumberOfMessages ?? 0);
        if (messages === 0) return { messages };
        const sample = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: url,
            MaxNumberOfMessages: 10,
            VisibilityTimeout: 0,
            WaitTimeSeconds: 0,
            MessageSystemAttributeNames: ['SentTimestamp'],
          }),
        );
        const sent = (sample.Messages ?? [])
          .map((m) => Number(m.Attributes?.SentTimestamp))
          .filter((t) => Number.isFinite(t) && t > 0);
        return sent.length > 0 ? { messages, oldestSentAt: Math.min(...sent) } : { messages };
      } catch (error) {
        throw awsError('SQS_ERROR', `dead-letter queue ${name}`, error);
      }
    },
  };
}
