import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  DeleteMessageBatchCommand,
  GetQueueUrlCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { WorkerError, awsError, awsErrorName } from '../errors.ts';
import { DEFAULT_AWS_DEADLINES, type AwsDeadlines } from './deadlines.ts';
import { directSqs, type LongPollRequest } from './sqs-direct.ts';

export interface QueueMessage {
  messageId: string;
  receiptHandle: string;
  body: string | undefined;
  receiveCount: number;
  /** Epoch ms when SQS first handed the message out. */
  firstReceivedAt: number;
  /** Present when `unified-worker replay` enqueued this notification again (ARCHITECTURE.md, "Replays"). */
  replay?: ReplayRequest;
}

/**
 * The replay contract with the CLI: a re-enqueued notification carries the String attribute `uw-replay` = `true`
 * (do not take the "already processed" shortcut) and, only with `--force`, the Number attribute
 * `uw-replay-generation` = N >= 1 (part of every ledger key and delivery id: deliver again, on purpose).
 */
export const REPLAY_ATTRIBUTE = 'uw-replay';
export const REPLAY_GENERATION_ATTRIBUTE = 'uw-replay-generation';

export interface ReplayRequest {
  /** 0: the ledger still skips what was done; N > 0: a forced replay, whose effects are new. */
  generation: number;
  /** The generation attribute as received when it was not an integer >= 1 (the replay then counts as generation 0). */
  invalidGeneration?: string;
}

/** Reads the replay attributes of a received message; undefined for a notification from SES. */
export function replayOf(message: Pick<Message, 'MessageAttributes'>): ReplayRequest | undefined {
  const attributes = message.MessageAttributes ?? {};
  const flag = attributes[REPLAY_ATTRIBUTE]?.StringValue;
  const generation = attributes[REPLAY_GENERATION_ATTRIBUTE]?.StringValue;
  if (flag !== 'true' && generation === undefined) return undefined;
  if (generation === undefined) return { generation: 0 };
  const n = Number(generation);
  return /^\d+$/.test(generation.trim()) && Number.isSafeInteger(n) && n >= 1
    ? { generation: n }
    : { generation: 0, invalidGeneration: generation.slice(0, 64) };
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
  /** Where the redrive policy sends messages. */
  deadLetterTargetArn?: string;
}

/** The SQS calls one domain poller makes. Kept small so tests and other transports can implement it. */
export interface ReceiveOptions {
  maxMessages: number;
  waitTimeSeconds: number;
  /** Ends the long poll early (shutdown); it then resolves with no messages. */
  signal?: AbortSignal;
}

export interface MailQueue {
  receive(options: ReceiveOptions): Promise<QueueMessage[]>;
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

export function createSqsQueue(
  sqs: SQSClient,
  url: string,
  deadlines: AwsDeadlines = DEFAULT_AWS_DEADLINES,
): MailQueue {
  const direct = directSqs(sqs);
  // One frozen object per shape: the direct path prepares such a request once (aws/sqs-direct.ts).
  const receiveRequests = new Map<string, LongPollRequest>();
  const receiveRequest = (maxMessages: number, waitTimeSeconds: number): LongPollRequest => {
    const shape = `${maxMessages}/${waitTimeSeconds}`;
    let request = receiveRequests.get(shape);
    if (!request) {
      request = Object.freeze({
        QueueUrl: url,
        MaxNumberOfMessages: maxMessages,
        WaitTimeSeconds: waitTimeSeconds,
        MessageSystemAttributeNames: ['ApproximateReceiveCount', 'ApproximateFirstReceiveTimestamp'],
        MessageAttributeNames: [REPLAY_ATTRIBUTE, REPLAY_GENERATION_ATTRIBUTE],
      });
      receiveRequests.set(shape, request);
    }
    return request;
  };
  const attributesRequest = Object.freeze({
    QueueUrl: url,
    AttributeNames: [
      'ApproximateNumberOfMessages',
      'ApproximateNumberOfMessagesNotVisible',
      'VisibilityTimeout',
      'RedrivePolicy',
    ],
  });
  return {
    url,
    async receive({ maxMessages, waitTimeSeconds, signal }) {
      if (signal?.aborted) return [];
      try {
        const messages = await direct.receiveMessage(receiveRequest(maxMessages, waitTimeSeconds), {
          deadlines,
          ...(signal && { signal }),
        });
        return messages.flatMap((m): QueueMessage[] => {
          if (!m.MessageId || !m.ReceiptHandle) return [];
          const replay = replayOf(m);
          return [
            {
              messageId: m.MessageId,
              receiptHandle: m.ReceiptHandle,
              body: m.Body,
              receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? '1') || 1,
              firstReceivedAt: Number(m.Attributes?.ApproximateFirstReceiveTimestamp ?? Date.now()),
              ...(replay && { replay }),
            },
          ];
        });
      } catch (error) {
        if (signal?.aborted) return [];
        throw sqsError('ReceiveMessage', error);
      }
    },
    async deleteBatch(entries) {
      // Batches go out side by side: one that hangs until its deadline holds up no other.
      const failed = await Promise.all(
        chunksOf(entries, 10).map(async (chunk) => {
          try {
            const result = await sqs.send(
              new DeleteMessageBatchCommand({
                QueueUrl: url,
                Entries: chunk.map((e, index) => ({ Id: String(index), ReceiptHandle: e.receiptHandle })),
              }),
            );
            return (result.Failed ?? []).flatMap((f) => {
              const entry = chunk[Number(f.Id)];
              return entry ? [entry] : [];
            });
          } catch {
            return chunk;
          }
        }),
      );
      return failed.flat();
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
      await Promise.all(
        chunksOf(entries, 10).map(async (chunk) => {
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
        }),
      );
    },
    async attributes() {
      try {
        const attrs = await direct.getQueueAttributes(attributesRequest, { deadlines });
        let maxReceiveCount: number | undefined;
        let deadLetterTargetArn: string | undefined;
        if (attrs.RedrivePolicy) {
          try {
            const policy = JSON.parse(attrs.RedrivePolicy) as {
              maxReceiveCount?: unknown;
              deadLetterTargetArn?: unknown;
            };
            const n = Number(policy.maxReceiveCount);
            if (Number.isFinite(n)) maxReceiveCount = n;
            if (typeof policy.deadLetterTargetArn === 'string')
              deadLetterTargetArn = policy.deadLetterTargetArn;
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
          ...(deadLetterTargetArn !== undefined && { deadLetterTargetArn }),
        };
      } catch (error) {
        throw sqsError('GetQueueAttributes', error);
      }
    },
  };
}

function chunksOf<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

function sqsError(operation: string, error: unknown): WorkerError {
  return awsError('SQS_ERROR', operation, error);
}
