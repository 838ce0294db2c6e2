import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { backoffMs, type Clock } from '../clock.ts';
import { BATCH_GET_MAX_KEYS, batchGet, stringList } from './dynamo.ts';

/** A record of mail sent out through SES (table `ses-outbound-messages`). */
export interface OutboundRecord {
  messageId: string;
  originalSource?: string;
  bouncedRecipients: string[];
}

/** The records a bounce is matched against. */
export interface OutboundRecords {
  /**
   * The record of the first candidate id that has one: one BatchGetItem over all candidates (at most 100) per
   * attempt, retried briefly because the record may lag the bounce.
   */
  find(candidates: readonly string[], options?: { attempts?: number }): Promise<OutboundRecord | undefined>;
}

/** DynamoDB refuses a partition key over 2048 bytes (and the whole batch with it); ids longer are no SES ids. */
const MAX_KEY_BYTES = 1024;

export function createDynamoOutboundRecords(
  ddb: DynamoDBDocumentClient,
  options: { table: string; clock: Clock },
): OutboundRecords {
  const { table, clock } = options;
  return {
    async find(candidates, lookup = {}) {
      const keys = [...new Set(candidates)]
        .filter((id) => id !== '' && Buffer.byteLength(id, 'utf8') <= MAX_KEY_BYTES)
        .slice(0, BATCH_GET_MAX_KEYS);
      if (keys.length === 0) return undefined;
      const attempts = lookup.attempts ?? 3;
      for (let attempt = 0; attempt < attempts; attempt++) {
        if (attempt > 0) await clock.sleep(backoffMs(attempt - 1, 250, 2_000));
        const items = await batchGet(ddb, clock, {
          [table]: { Keys: keys.map((id) => ({ MessageId: id })) },
        });
        const found = new Map((items[table] ?? []).map((item) => [String(item.MessageId), item]));
        // The best candidate comes first; BatchGetItem answers in no particular order.
        const id = keys.find((k) => found.has(k));
        const item = id === undefined ? undefined : found.get(id);
        if (id !== undefined && item) {
          return {
            messageId: id,
            ...(typeof item.original_source === 'string' && { originalSource: item.original_source }),
            bouncedRecipients: stringList(item.bouncedRecipients),
          };
        }
      }
      return undefined;
    },
  };
}
