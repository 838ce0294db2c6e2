import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { WorkerError, awsError, awsErrorName } from '../errors.ts';

export interface QueueMessage {
  messageId: string;
  receiptHandle: string;
  body: string | undefined;
  receiveCount: number;
  /** Epoch ms when SQS first handed the message out. */
  firstReceivedAt: number;
}

export interface QueueEntry {
  messageId: string;
  receiptHandle: string;
}

export interface QueueAttributes {
  visible: number;
  inFlight: number;
  visibilityTimeoutSeconds: number;
  hasRedrivePolicy: boolean;
  maxReceiveCount?: number;
}

/** The SQS calls one domain poller makes. Kept small so tests and other transports can implement it. */
export interface MailQueue {
  receive(options: { maxMessages: number; waitTimeSeconds: number }): Promise<QueueMessage[]>;
  /** Deletes in batches of 10; returns the entries SQS did not delete. */
  deleteBatch(entries: readonly QueueEntry[]): Promise<QueueEntry[]>;
  changeVisibility(entry: QueueEntry, seconds: number): Promise<void>;
  changeVisibilityBatch(entries: readonly QueueEntry[], seconds: number): Promise<void>;
  attributes(): Promise<QueueAttributes>;
  readonly url: string;
}

export async function resolveQueueUrl(
  sqs: SQSClient,
  queueName: string,
  signal?: AbortSignal,
): Promise<string> {
  try {
    const result = await sqs.send(new GetQueueUrlCommand({ QueueName: queueName }), { abortSignal: signal });
    if (!result.QueueUrl) throw new Error('GetQueueUrl returned no URL');
    return result.QueueUrl;
  } catch (error) {
    const name = awsErrorName(error);
    if (name === 'QueueDoesNotExist' || name === 'AWS.SimpleQueueService.NonExistentQueue') {
      throw new WorkerError('SQS_ERROR', `queue ${queueName} does not exist`, {
        temporary: false,
        awsCode: name,
        cause: error,
      });
    }
    throw sqsError(`GetQueueUrl ${queueName}`, error);
  }
}

export function createSqsQueue(sqs: SQSClient, url: string): MailQueue {
  return {
    url,
    async receive({ maxMessages, waitTimeSeconds }) {
      try {
        const result = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: url,
            MaxNumberOfMessages: maxMessages,
            WaitTimeSeconds: waitTimeSeconds,
            MessageSystemAttributeNames: ['ApproximateReceiveCount', 'ApproximateFirstReceiveTimestamp'],
          }),
        );
        return (result.Messages ?? []).flatMap((m) =>
          m.MessageId && m.ReceiptHandle
            ? [
                {
                  messageId: m.MessageId,
                  receiptHandle: m.ReceiptHandle,
                  body: m.Body,
                  receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? '1') || 1,
                  firstReceivedAt: Number(m.Attributes?.ApproximateFirstReceiveTimestamp ?? Date.now()),
                },
              ]
            : [],
        );
      } catch (error) {
        throw sqsError('ReceiveMessage', error);
      }
    },
    async deleteBatch(entries) {
      const failed: QueueEntry[] = [];
      for (let i = 0; i < entries.length; i += 10) {
        const chunk = entries.slice(i, i + 10);
        try {
          const result = await sqs.send(
            new DeleteMessageBatchCommand({
              QueueUrl: url,
              Entries: chunk.map((e, index) => ({ Id: String(index), ReceiptHandle: e.receiptHandle })),
            }),
          );
          for (const f of result.Failed ?? []) {
            const entry = chunk[Number(f.Id)];
            if (entry) failed.push(entry);
          }
        } catch {
          failed.push(...chunk);
        }
      }
      return failed;
    },
    async changeVisibility(entry, seconds) {
      try {
        await sqs.send(
          new ChangeMessageVisibilityCommand({
            QueueUrl: url,
            ReceiptHandle: entry.receiptHandle,
            VisibilityTimeout: seconds,
          }),
        );
      } catch (error) {
        throw sqsError('ChangeMessageVisibility', error);
      }
    },
    async changeVisibilityBatch(entries, seconds) {
      for (let i = 0; i < entries.length; i += 10) {
        const chunk = entries.slice(i, i + 10);
        try {
          await sqs.send(
            new ChangeMessageVisibilityBatchCommand({
              QueueUrl: url,
              Entries: chunk.map((e, index) => ({
                Id: String(index),
                ReceiptHandle: e.receiptHandle,
                VisibilityTimeout: seconds,
              })),
            }),
          );
        } catch (error) {
          throw sqsError('ChangeMessageVisibilityBatch', error);
        }
      }
    },
    async attributes() {
      try {
        const result = await sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl: url,
            AttributeNames: [
              'ApproximateNumberOfMessages',
              'ApproximateNumberOfMessagesNotVisible',
              'VisibilityTimeout',
              'RedrivePolicy',
            ],
          }),
        );
        const attrs = result.Attributes ?? {};
        let maxReceiveCount: number | undefined;
        if (attrs.RedrivePolicy) {
          try {
            const policy = JSON.parse(attrs.RedrivePolicy) as { maxReceiveCount?: unknown };
            const n = Number(policy.maxReceiveCount);
            if (Number.isFinite(n)) maxReceiveCount = n;
          } catch {
            // An unreadable policy still is a policy; the count is only informational.
          }
        }
        return {
          visible: Number(attrs.ApproximateNumberOfMessages ?? 0),
          inFlight: Number(attrs.ApproximateNumberOfMessagesNotVisible ?? 0),
          visibilityTimeoutSeconds: Number(attrs.VisibilityTimeout ?? 30),
          hasRedrivePolicy: Boolean(attrs.RedrivePolicy),
          ...(maxReceiveCount !== undefined && { maxReceiveCount }),
        };
      } catch (error) {
        throw sqsError('GetQueueAttributes', error);
      }
    },
  };
}

function sqsError(operation: string, error: unknown): WorkerError {
  return awsError('SQS_ERROR', operation, error);
}
