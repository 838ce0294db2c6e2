import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { resolveQueueUrl } from '../aws/queue.ts';
import { awsError } from '../errors.ts';

export interface EventMessage {
  messageId: string;
  receiptHandle: string;
  body: string | undefined;
  receiveCount: number;
}

export interface EventsQueueInfo {
  hasRedrivePolicy: boolean;
  maxReceiveCount?: number;
}

/** The SQS calls of the events consumer, each with its own deadline (and the consumer's stop signal). */
export interface EventsQueue {
  readonly url: string;
  receive(maxMessages: number, waitTimeSeconds: number, signal: AbortSignal): Promise<EventMessage[]>;
  /** Deletes in batches of 10; returns the messages SQS did not delete. */
  delete(messages: readonly EventMessage[], signal: AbortSignal): Promise<EventMessage[]>;
  /** Makes the messages visible again after `seconds` (a later retry of a failed write). */
  retryAfter(messages: readonly EventMessage[], seconds: number, signal: AbortSignal): Promise<void>;
  info(signal: AbortSignal): Promise<EventsQueueInfo>;
}

/** A call that is not a long poll gets this long. */
const CALL_TIMEOUT_MS = 10_000;
/** A long poll gets its wait plus this. */
const POLL_SLACK_MS = 10_000;

function within(ms: number, signal: AbortSignal): AbortSignal {
  return AbortSignal.any([AbortSignal.timeout(ms), signal]);
}

/** Resolves the queue by name; a missing queue throws a WorkerError with awsCode `QueueDoesNotExist`. */
export async function openEventsQueue(
  sqs: SQSClient,
  name: string,
  signal: AbortSignal,
): Promise<EventsQueue> {
  const url = await resolveQueueUrl(sqs, name, within(CALL_TIMEOUT_MS, signal));
  return createEventsQueue(sqs, url);
}

export function createEventsQueue(sqs: SQSClient, url: string): EventsQueue {
  return {
    url,
    async receive(maxMessages, waitTimeSeconds, signal) {
      try {
        const result = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: url,
            MaxNumberOfMessages: maxMessages,
            WaitTimeSeconds: waitTimeSeconds,
            MessageSystemAttributeNames: ['ApproximateReceiveCount'],
          }),
          { abortSignal: within(waitTimeSeconds * 1000 + POLL_SLACK_MS, signal) },
        );
        return (result.Messages ?? []).flatMap((m) =>
          m.MessageId && m.ReceiptHandle
            ? [
                {
                  messageId: m.MessageId,
                  receiptHandle: m.ReceiptHandle,
                  body: m.Body,
                  receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? '1') || 1,
                },
              ]
            : [],
        );
      } catch (error) {
        throw awsError('SQS_ERROR', 'ReceiveMessage', error);
      }
    },

    async delete(messages, signal) {
      const failed: EventMessage[] = [];
      for (let i = 0; i < messages.length; i += 10) {
        const chunk = messages.slice(i, i + 10);
        try {
          const result = await sqs.send(
            new DeleteMessageBatchCommand({
              QueueUrl: url,
              Entries: chunk.map((m, index) => ({ Id: String(index), ReceiptHandle: m.receiptHandle })),
            }),
            { abortSignal: within(CALL_TIMEOUT_MS, signal) },
          );
          for (const f of result.Failed ?? []) {
            const message = chunk[Number(f.Id)];
            if (message) failed.push(message);
          }
        } catch {
          failed.push(...chunk);
        }
      }
      return failed;
    },

    async retryAfter(messages, seconds, signal) {
      for (let i = 0; i < messages.length; i += 10) {
        const chunk = messages.slice(i, i + 10);
        try {
          await sqs.send(
            new ChangeMessageVisibilityBatchCommand({
              QueueUrl: url,
              Entries: chunk.map((m, index) => ({
                Id: String(index),
                ReceiptHandle: m.receiptHandle,
                VisibilityTimeout: seconds,
              })),
            }),
            { abortSignal: within(CALL_TIMEOUT_MS, signal) },
          );
        } catch (error) {
          throw awsError('SQS_ERROR', 'ChangeMessageVisibilityBatch', error);
        }
      }
    },

    async info(signal) {
      try {
        const result = await sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['RedrivePolicy'] }),
          { abortSignal: within(CALL_TIMEOUT_MS, signal) },
        );
        const policy = result.Attributes?.RedrivePolicy;
        if (!policy) return { hasRedrivePolicy: false };
        return { hasRedrivePolicy: true, ...redriveCount(policy) };
      } catch (error) {
        throw awsError('SQS_ERROR', 'GetQueueAttributes', error);
      }
    },
  };
}

/** An unreadable policy still is a policy; the count is only for the log. */
function redriveCount(policy: string): { maxReceiveCount?: number } {
  try {
    const count = Number((JSON.parse(policy) as { maxReceiveCount?: unknown }).maxReceiveCount);
    return Number.isFinite(count) ? { maxReceiveCount: count } : {};
  } catch {
    return {};
  }
}
