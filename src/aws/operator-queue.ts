/**
 * The SQS calls of the operator commands (`dlq show`, `redrive`, `purge`), on top of the daemon's queue layer
 * (queue.ts): receiving a message with everything it carries, to read it, move it or remove it as it is; sending a
 * copy on; deleting; releasing. Every call goes through the same client, with the same deadlines, as the daemon's.
 */
import {
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type MessageAttributeValue,
  type SQSClient,
} from '@aws-sdk/client-sqs';

import { awsError } from '../errors.ts';
import { createSqsQueue, type QueueAttributes } from './queue.ts';

/** A received message, hidden from other receivers until it is released, deleted, or its hold runs out. */
export interface HeldMessage {
  messageId: string;
  receiptHandle: string;
  body: string | undefined;
  /** Epoch ms SQS received it (for a dead letter: when it was first sent to the source queue). */
  sentAt?: number;
  receiveCount?: number;
  /** FIFO queues only. */
  groupId?: string;
  attributes: Record<string, MessageAttributeValue>;
}

export interface OperatorQueue {
  readonly url: string;
  /** One receive of up to ten messages, each hidden for `holdSeconds`; waits up to a second for any. */
  receive(max: number, holdSeconds: number): Promise<HeldMessage[]>;
  /**
   * Up to `count` distinct messages, each hidden for `holdSeconds`; stops at `count`, or when two receives in a row
   * return nothing (a receive may miss messages now and then, rarely twice).
   */
  hold(count: number, holdSeconds: number): Promise<HeldMessage[]>;
  /** Sends each message's body and attributes to this queue; returns the ids (of `messages`) SQS accepted. */
  sendCopies(messages: readonly HeldMessage[]): Promise<Set<string>>;
  /** Deletes; returns the messages SQS did not delete. */
  remove(messages: readonly HeldMessage[]): Promise<HeldMessage[]>;
  /** Makes the messages visible again at once. */
  release(messages: readonly HeldMessage[]): Promise<void>;
  attributes(): Promise<QueueAttributes>;
}

export function createOperatorQueue(sqs: SQSClient, url: string): OperatorQueue {
  const queue = createSqsQueue(sqs, url);
  const entries = (messages: readonly HeldMessage[]) =>
    messages.map((m) => ({ messageId: m.messageId, receiptHandle: m.receiptHandle }));
  const operator: OperatorQueue = {
    url,
    receive: (max, holdSeconds) => receiveHeld(sqs, url, max, holdSeconds),
    async hold(count, holdSeconds) {
      const held = new Map<string, HeldMessage>();
      let empty = 0;
      while (held.size < count && empty < 2) {
        const batch = await operator.receive(Math.min(10, count - held.size), holdSeconds);
        empty = batch.length === 0 ? empty + 1 : 0;
        for (const message of batch) held.set(message.messageId, message);
      }
      return [...held.values()];
    },
    sendCopies: (messages) => sendCopies(sqs, url, messages),
    async remove(messages) {
      const failed = new Set((await queue.deleteBatch(entries(messages))).map((e) => e.messageId));
      return messages.filter((m) => failed.has(m.messageId));
    },
    release: (messages) => queue.changeVisibilityBatch(entries(messages), 0),
    attributes: () => queue.attributes(),
  };
  return operator;
}

async function receiveHeld(
  sqs: SQSClient,
  url: string,
  max: number,
  holdSeconds: number,
): Promise<HeldMessage[]> {
  try {
    const result = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: max,
        VisibilityTimeout: holdSeconds,
        WaitTimeSeconds: 1,
        MessageAttributeNames: ['All'],
        MessageSystemAttributeNames: ['SentTimestamp', 'ApproximateReceiveCount', 'MessageGroupId'],
      }),
    );
    return (result.Messages ?? []).flatMap((m): HeldMessage[] => {
      if (!m.MessageId || !m.ReceiptHandle) return [];
      const sentAt = Number(m.Attributes?.SentTimestamp);
      const receiveCount = Number(m.Attributes?.ApproximateReceiveCount);
      return [
        {
          messageId: m.MessageId,
          receiptHandle: m.ReceiptHandle,
          body: m.Body,
          ...(Number.isFinite(sentAt) && { sentAt }),
          ...(Number.isFinite(receiveCount) && { receiveCount }),
          ...(m.Attributes?.MessageGroupId !== undefined && { groupId: m.Attributes.MessageGroupId }),
          attributes: m.MessageAttributes ?? {},
        },
      ];
    });
  } catch (error) {
    throw awsError('SQS_ERROR', `ReceiveMessage ${url}`, error);
  }
}

async function sendCopies(
  sqs: SQSClient,
  url: string,
  messages: readonly HeldMessage[],
): Promise<Set<string>> {
  const fifo = url.endsWith('.fifo');
  const accepted = new Set<string>();
  for (let i = 0; i < messages.length; i += 10) {
    const chunk = messages.slice(i, i + 10);
    let result;
    try {
      result = await sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: url,
          Entries: chunk.map((m, index) => ({
            Id: String(index),
            MessageBody: m.body ?? '',
            ...(Object.keys(m.attributes).length > 0 && { MessageAttributes: m.attributes }),
            ...(fifo && { MessageGroupId: m.groupId ?? 'redrive', MessageDeduplicationId: m.messageId }),
          })),
        }),
      );
    } catch (error) {
      throw awsError('SQS_ERROR', `SendMessageBatch ${url}`, error);
    }
    for (const sent of result.Successful ?? []) {
      const original = chunk[Number(sent.Id)];
      if (original) accepted.add(original.messageId);
    }
  }
  return accepted;
}
