import { randomUUID } from 'node:crypto';
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  GetCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import type { Clock } from '../clock.ts';
import { WorkerError } from '../errors.ts';
import { callDynamo, conditionFailed, conditionalPut } from './dynamo.ts';

/** A claim this worker holds: the effect's key and the owner token only this claim attempt knows. */
export interface Claim {
  readonly key: string;
  readonly token: string;
}

/** `claimed`: go ahead; `done`: a previous attempt completed it; `busy`: another worker holds a live claim. */
export type ClaimResult = { state: 'claimed'; claim: Claim } | { state: 'done' } | { state: 'busy' };

/** `lost`: the record is no longer this claim's (its lease ran out and another worker took it over, or it is gone). */
export type CompleteResult = 'completed' | 'lost';

/**
 * Exactly-once bookkeeping for effects (deliver, forward, auto-reply) keyed by SES message id, recipient and
 * action: claimed before the effect, completed after it, abandoned when it did not happen — the AWS Powertools idempotency
 * pattern, so a redelivered message skips what already happened and a crashed claim can be taken over later. Every
 * claim carries a random owner token; complete, renew and abandon act only on a record that still holds it, so a
 * worker whose lease ran out can never overwrite the record of the worker that took over.
 */
export interface EffectLedger {
  readonly enabled: boolean;
  claim(key: string): Promise<ClaimResult>;
  complete(claim: Claim): Promise<CompleteResult>;
  /** Extends the lease of a claim still in progress; false when the claim is no longer ours. */
  renew(claim: Claim): Promise<boolean>;
  /** Gives a claim up because its effect did not happen: a later attempt may claim it again. */
  abandon(claim: Claim): Promise<void>;
}

/**
 * The ledger key of an effect. A forced replay (generation N > 0) gets keys of its own, so it does on purpose what
 * the original attempts already did; generation 0 is the mail as SES delivered it (and a replay without --force).
 */
export function effectKey(sesMessageId: string, recipient: string, action: string, generation = 0): string {
  const id = generation > 0 ? `${sesMessageId}#${generation}` : sesMessageId;
  return `${id}|${recipient.toLowerCase()}|${action}`;
}

/** Used when IDEMPOTENCY_TABLE=none: every claim succeeds, as in the original daemon. */
export const noLedger: EffectLedger = {
  enabled: false,
  claim: async (key) => ({ state: 'claimed', claim: { key, token: '' } }),
  complete: async () => 'completed',
  renew: async () => true,
  abandon: async () => undefined,
};

export interface DynamoLedgerOptions {
  table: string;
  clock: Clock;
  /** How long a completed record is kept (DynamoDB TTL attribute `expires_at`). Longer than SQS retention. */
  retentionSeconds?: number;
  /**
   * After this long without a renewal an unfinished claim is presumed dead (its worker crashed) and may be taken
   * over. The visibility heartbeat renews the claims of the message it keeps invisible.
   */
  leaseSeconds?: number;
  /** How long a complete waits for others to share its batch (0: one UpdateItem each, no batching). */
  completeLingerMs?: number;
}

/** BatchWriteItem takes 25 items. */
const COMPLETE_BATCH = 25;
const BATCH_MIN = 3;

/**
 * A batch read-then-write is two round trips where concurrent UpdateItems are one; it pays off only when the
 * completes of several messages share it (a busy domain), not for one message's recipients, whose mail would then
 * take one round trip more with ten recipients than with one.
 */
function worthBatching(claims: readonly Claim[]): boolean {
  if (claims.length < BATCH_MIN) return false;
  const messages = new Set(claims.map((c) => c.key.slice(0, c.key.indexOf('|'))));
  return messages.size >= 2;
}

const OWNED_IN_PROGRESS = '#s = :inprogress AND #o = :owner';

export function createDynamoLedger(ddb: DynamoDBDocumentClient, options: DynamoLedgerOptions): EffectLedger {
  const retention = options.retentionSeconds ?? 15 * 86_400;
  const lease = options.leaseSeconds ?? 120;
  const TableName = options.table;
  const nowSeconds = () => Math.floor(options.clock.now() / 1000);
  const owned = (claim: Claim) => ({
    ExpressionAttributeNames: { '#s': 'status', '#o': 'owner' },
    ExpressionAttributeValues: { ':inprogress': 'INPROGRESS', ':owner': claim.token },
  });

  /** An UpdateItem on a claim that is still ours and in progress; false when it no longer is. */
  async function updateOwned(
    claim: Claim,
    UpdateExpression: string,
    values: Record<string, unknown>,
  ): Promise<boolean> {
    const { ExpressionAttributeNames, ExpressionAttributeValues } = owned(claim);
    try {
      await callDynamo('UpdateItem', () =>
        ddb.send(
          new UpdateCommand({
            TableName,
            Key: { pk: claim.key },
            UpdateExpression,
            ConditionExpression: OWNED_IN_PROGRESS,
            ExpressionAttributeNames,
            ExpressionAttributeValues: { ...ExpressionAttributeValues, ...values },
          }),
        ),
      );
      return true;
    } catch (error) {
      if (conditionFailed(error)) return false;
      throw error;
    }
  }

  async function completeOne(claim: Claim): Promise<CompleteResult> {
    const now = nowSeconds();
    const done = await updateOwned(
      claim,
      'SET #s = :done, completed_at = :now, expires_at = :exp REMOVE in_progress_expiry',
      { ':done': 'COMPLETED', ':now': now, ':exp': now + retention },
    );
    return done ? 'completed' : 'lost';
  }

  /**
   * Completes of many messages in two calls instead of one each: a consistent BatchGetItem finds the claims still
   * ours, a BatchWriteItem marks those done. BatchWriteItem takes no condition, so ownership is read just before
   * the write; a takeover in between needs the lease (renewed by the heartbeat) to run out in those milliseconds,
   * and would then mean both workers did the effect, which the mailbox's duplicate check catches.
   */
  async function completeMany(claims: readonly Claim[]): Promise<CompleteResult[]> {
    const now = nowSeconds();
    const found = await batchRead(claims.map((c) => c.key));
    const ours = claims.filter((c) => {
      const item = found.get(c.key);
      return item?.status === 'INPROGRESS' && item.owner === c.token;
    });
    await batchWrite(
      ours.map((c) => ({
        pk: c.key,
        status: 'COMPLETED',
        completed_at: now,
        expires_at: now + retention,
      })),
    );
    const done = new Set(ours);
    return claims.map((c) => (done.has(c) ? 'completed' : 'lost'));
  }

  async function batchRead(keys: readonly string[]): Promise<Map<string, Record<string, unknown>>> {
    const found = new Map<string, Record<string, unknown>>();
    let request: Record<string, unknown>[] = keys.map((pk) => ({ pk }));
    for (let attempt = 0; request.length > 0; attempt++) {
      if (attempt > 0) await unprocessedPause(attempt, 'BatchGetItem');
      const response = await callDynamo('BatchGetItem', () =>
        ddb.send(
          new BatchGetCommand({
            RequestItems: {
              [TableName]: {
                Keys: request,
                ConsistentRead: true,
                ProjectionExpression: 'pk, #s, #o',
                ExpressionAttributeNames: { '#s': 'status', '#o': 'owner' },
              },
            },
          }),
        ),
      );
      for (const item of response.Responses?.[TableName] ?? []) found.set(String(item.pk), item);
      request = (response.UnprocessedKeys?.[TableName]?.Keys ?? []) as Record<string, unknown>[];
    }
    return found;
  }

  async function batchWrite(items: readonly Record<string, unknown>[]): Promise<void> {
    let request = items.map((Item) => ({ PutRequest: { Item } }));
    for (let attempt = 0; request.length > 0; attempt++) {
      if (attempt > 0) await unprocessedPause(attempt, 'BatchWriteItem');
      const response = await callDynamo('BatchWriteItem', () =>
        ddb.send(new BatchWriteCommand({ RequestItems: { [TableName]: request } })),
      );
      request = (response.UnprocessedItems?.[TableName] ?? []) as typeof request;
    }
  }

  /** DynamoDB hands back unprocessed keys when throttled: wait, and give up (temporarily) after a few rounds. */
  async function unprocessedPause(attempt: number, operation: string): Promise<void> {
    if (attempt > 5) {
      throw new WorkerError('DYNAMODB_ERROR', `${operation} left items unprocessed after 5 retries`, {
        temporary: true,
      });
    }
    await options.clock.sleep(50 * 2 ** (attempt - 1));
  }

  const completer = batcher<Claim, CompleteResult>(options.completeLingerMs ?? 20, COMPLETE_BATCH, (batch) =>
    worthBatching(batch) ? completeMany(batch) : Promise.all(batch.map(completeOne)),
  );

  return {
    enabled: true,
    async claim(key) {
      const now = nowSeconds();
      const token = randomUUID();
      const claimed = await conditionalPut(ddb, {
        TableName,
        Item: {
          pk: key,
          status: 'INPROGRESS',
          owner: token,
          in_progress_expiry: now + lease,
          expires_at: now + retention,
        },
        ConditionExpression:
          'attribute_not_exists(pk) OR expires_at < :now OR (#s = :inprogress AND in_progress_expiry < :now)',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: { ':now': now, ':inprogress': 'INPROGRESS' },
      });
      if (claimed) return { state: 'claimed', claim: { key, token } };
      const existing = await callDynamo('GetItem', () =>
        ddb.send(new GetCommand({ TableName, Key: { pk: key }, ConsistentRead: true })),
      );
      return existing.Item?.status === 'COMPLETED' ? { state: 'done' } : { state: 'busy' };
    },
    complete: (claim) => completer.complete(claim),
    renew: (claim) =>
      updateOwned(claim, 'SET in_progress_expiry = :expiry', { ':expiry': nowSeconds() + lease }),
    async abandon(claim) {
      await callDynamo('DeleteItem', () =>
        ddb.send(
          new DeleteCommand({
            TableName,
            Key: { pk: claim.key },
            ConditionExpression: OWNED_IN_PROGRESS,
            ...owned(claim),
          }),
        ),
      ).catch((error: unknown) => {
        // Not ours any more: whoever holds it now decides what happens to it.
        if (!conditionFailed(error)) throw error;
      });
    },
  };
}

/**
 * Collects calls for up to `lingerMs` (or until `max` are waiting) and hands them to `run` together; each caller
 * gets its own result, or the batch's error.
 */
function batcher<T, R>(
  lingerMs: number,
  max: number,
  run: (batch: T[]) => Promise<R[]>,
): { complete(item: T): Promise<R> } {
  let pending: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const batch = pending;
    pending = [];
    run(batch.map((p) => p.item)).then(
      (results) => batch.forEach((p, i) => p.resolve(results[i] as R)),
      (error: unknown) => batch.forEach((p) => p.reject(error)),
    );
  };
  return {
    complete(item) {
      return new Promise<R>((resolve, reject) => {
        pending.push({ item, resolve, reject });
        if (pending.length >= max || lingerMs === 0) flush();
        else timer ??= setTimeout(flush, lingerMs);
      });
    },
  };
}
