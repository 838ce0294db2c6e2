import { BatchWriteCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { tableSpec } from '../aws/resources.ts';
import { callDynamo } from '../aws/dynamo.ts';
import { backoffMs, type Clock } from '../clock.ts';
import { errorMessage, WorkerError } from '../errors.ts';
import type { OutboundEvent } from './outbound-event.ts';

export interface OutboundWriterOptions {
  /** OUTBOUND_TABLE: key `MessageId`, TTL attribute `expires_at` (src/aws/resources.ts). */
  table: string;
  /** OUTBOUND_RETENTION_DAYS: how long after recording DynamoDB's TTL removes a record. */
  retentionDays: number;
  clock: Clock;
  /** Deadline of each DynamoDB call. */
  callTimeoutMs?: number;
}

export interface OutboundWriter {
  /**
   * Writes the record of each event and resolves with one entry per event: undefined when it was written, else
   * the error (the event stays in its queue and is tried again). `signal` cancels the calls in flight.
   */
  write(events: readonly OutboundEvent[], signal?: AbortSignal): Promise<Array<WorkerError | undefined>>;
}

/** The attribute DynamoDB's TTL deletes by (src/aws/resources.ts: setup, doctor and the AWS app agree on it). */
const TTL_ATTRIBUTE = tableSpec('outbound').ttlAttribute ?? 'expires_at';
/** BatchWriteItem takes 25 requests. */
const BATCH_WRITE_MAX = 25;
/** Retries of UnprocessedItems (throttling) within one write; what is still left waits for the queue's retry. */
const UNPROCESSED_RETRIES = 3;

/**
 * The outbound table's writer. A send is a whole item (PutRequest), so the sends of a batch go out in one
 * BatchWriteItem; a bounce or complaint adds its recipients to the item (UpdateItem with ADD on a string set), so
 * bounces of one mail reported separately all stay, and a bounce alone still makes a complete record.
 */
export function createOutboundWriter(
  ddb: DynamoDBDocumentClient,
  options: OutboundWriterOptions,
): OutboundWriter {
  const { table, clock } = options;
  const callTimeoutMs = options.callTimeoutMs ?? 10_000;
  const deadline = (signal: AbortSignal) => ({
    abortSignal: AbortSignal.any([AbortSignal.timeout(callTimeoutMs), signal]),
  });

  function common(event: OutboundEvent, now: number) {
    return {
      original_source: event.source,
      destinations: event.destinations,
      recorded_at: new Date(now).toISOString(),
      // DynamoDB deletes the record by itself once this (epoch seconds) has passed.
      [TTL_ATTRIBUTE]: Math.floor(now / 1000) + options.retentionDays * 86_400,
      ...(event.sentAt !== undefined && { sent_at: event.sentAt }),
    };
  }

  /** One BatchWriteItem of at most 25 items, UnprocessedItems retried; returns the ids still not written. */
  async function putBatch(items: Array<Record<string, unknown>>, signal: AbortSignal): Promise<Set<string>> {
    let pending = items.map((Item) => ({ PutRequest: { Item } }));
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt > 0) {
        if (attempt > UNPROCESSED_RETRIES) break;
        await clock.sleep(backoffMs(attempt - 1, 50, 1_000), signal);
      }
      const response = await callDynamo('BatchWriteItem', () =>
        ddb.send(new BatchWriteCommand({ RequestItems: { [table]: pending } }), deadline(signal)),
      );
      pending = (response.UnprocessedItems?.[table] ?? []) as typeof pending;
    }
    return new Set(pending.map((request) => String(request.PutRequest.Item.MessageId)));
  }

  async function writeSends(
    events: readonly OutboundEvent[],
    indexes: number[],
    results: Results,
    signal: AbortSignal,
  ) {
    const now = clock.now();
    // BatchWriteItem refuses two requests for one key: a send reported twice in a batch is written once.
    const byId = new Map<string, number[]>();
    for (const i of indexes) {
      const id = (events[i] as OutboundEvent).messageId;
      byId.set(id, [...(byId.get(id) ?? []), i]);
    }
    const ids = [...byId.keys()];
    for (let start = 0; start < ids.length; start += BATCH_WRITE_MAX) {
      const chunk = ids.slice(start, start + BATCH_WRITE_MAX);
      const items = chunk.map((id) => {
        const event = events[(byId.get(id) as number[])[0] as number] as OutboundEvent;
        return { MessageId: id, ...common(event, now) };
      });
      let failedIds: Set<string>;
      let error: WorkerError;
      try {
        failedIds = await putBatch(items, signal);
        error = new WorkerError('DYNAMODB_ERROR', 'BatchWriteItem left the item unprocessed (throttled)', {
          temporary: true,
        });
      } catch (thrown) {
        failedIds = new Set(chunk);
        error = asWorkerError(thrown);
      }
      for (const id of failedIds) for (const i of byId.get(id) ?? []) results[i] = error;
    }
  }

  async function addRecipients(event: OutboundEvent, signal: AbortSignal): Promise<void> {
    const values = common(event, clock.now());
    const names: Record<string, string> = {};
    const attributeValues: Record<string, unknown> = {};
    const sets: string[] = [];
    for (const [name, value] of Object.entries(values)) {
      names[`#${name}`] = name;
      attributeValues[`:${name}`] = value;
      // SES's first timestamp of the mail stays; everything else is the same in every event of one mail.
      sets.push(name === 'sent_at' ? `#${name} = if_not_exists(#${name}, :${name})` : `#${name} = :${name}`);
    }
    let expression = `SET ${sets.join(', ')}`;
    if (event.recipients.length > 0) {
      const attribute = event.type === 'bounce' ? 'bouncedRecipients' : 'complainedRecipients';
      names['#recipients'] = attribute;
      attributeValues[':recipients'] = new Set(event.recipients);
      expression += ' ADD #recipients :recipients';
    }
    await callDynamo('UpdateItem', () =>
      ddb.send(
        new UpdateCommand({
          TableName: table,
          Key: { MessageId: event.messageId },
          UpdateExpression: expression,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: attributeValues,
        }),
        deadline(signal),
      ),
    );
  }

  return {
    async write(events, signal = new AbortController().signal) {
      const results: Results = events.map(() => undefined);
      const sends: number[] = [];
      const others: number[] = [];
      events.forEach((event, i) => (event.type === 'send' ? sends : others).push(i));
      // Sends first: a bounce of the same batch then lands on its send instead of being replaced by it.
      await writeSends(events, sends, results, signal);
      await Promise.all(
        others.map(async (i) => {
          try {
            await addRecipients(events[i] as OutboundEvent, signal);
          } catch (error) {
            results[i] = asWorkerError(error);
          }
        }),
      );
      return results;
    },
  };
}

type Results = Array<WorkerError | undefined>;

function asWorkerError(error: unknown): WorkerError {
  return error instanceof WorkerError
    ? error
    : new WorkerError('DYNAMODB_ERROR', errorMessage(error), {
        temporary: true,
        cause: error,
      });
}
