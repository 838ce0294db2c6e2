import { randomUUID } from 'node:crypto';
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
  type WriteRequest,
} from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Clock } from '../clock.ts';
import { WorkerError } from '../errors.ts';
import { callDynamo, conditionFailed } from './dynamo.ts';

/**
 * What the ledger remembers of one effect of a message: `done`, or `sending` — an SES send was about to go out and
 * its end was never recorded, so it may have been sent (a later attempt never sends it again).
 */
export type EffectMark = 'done' | 'sending';

/** A message this worker holds: the record's key, the owner token only this attempt knows, and the record's facts. */
export interface Claim {
  readonly key: string;
  readonly token: string;
  /** Epoch seconds until which the lease is confirmed: written by the claim or the last renewal DynamoDB accepted. */
  leaseUntil: number;
  /** The record's TTL (epoch seconds), restated when the record is written whole. */
  readonly expiresAt: number;
  /** The record was created on a retry or a replay: its effects may have records of the ledger's first shape. */
  readonly legacy: boolean;
}

/** `claimed` with what the record says each effect came to; `busy`: another worker holds a live lease. */
export type ClaimResult =
  { state: 'claimed'; claim: Claim; marks: Map<string, EffectMark> } | { state: 'busy' };

/** `lost`: the record is no longer this claim's (its lease ran out and another worker took it over). */
export type CompleteResult = 'completed' | 'lost';

/**
 * The message's final status as the attempt that finished it saw it, kept in the record: for a mail whose S3
 * object carries no verdict (a plain delivery, see pipeline/audit.ts), this is where `replay`, `inject --wait` and
 * `dlq show` find it.
 */
export interface LedgerVerdict {
  status: string;
  /** Epoch seconds. */
  at: number;
}

/** What a record says to a reader outside the daemon: its verdict, and the recipients delivered. */
export interface RecordedMessage {
  verdict?: LedgerVerdict;
  delivered: string[];
}

/**
 * A record of the ledger's first shape, one per effect (`<message>|<recipient>|<action>`): `done` (COMPLETED),
 * `busy` (INPROGRESS, its lease live) or `lapsed` (INPROGRESS, its worker gone).
 */
export type LegacyState = 'done' | 'busy' | 'lapsed';

/**
 * Exactly-once bookkeeping, one record per message and domain: the lease of the worker processing it (a random
 * owner token and an expiry the heartbeat renews) and a mark per effect (delivery, forward, auto-reply) that
 * happened. A claim takes the lease and reads the marks in one conditional UpdateItem; every later write is
 * conditional on the owner token (or made while the lease is known to hold), so a worker whose lease ran out can
 * never overwrite the record of the worker that took over.
 */
export interface EffectLedger {
  readonly enabled: boolean;
  /** Takes the message's lease. `legacy`: a retry or replay, whose effects may be in records of the first shape. */
  claim(key: string, options: { legacy: boolean }): Promise<ClaimResult>;
  /** Writes `marks` now (before an SES send), renewing the lease; false when the claim is no longer ours. */
  mark(claim: Claim, marks: ReadonlyMap<string, EffectMark>): Promise<boolean>;
  /** The attempt's last write: the effect marks as they stand, the verdict when final, and the lease given up. */
  complete(
    claim: Claim,
    marks: ReadonlyMap<string, EffectMark>,
    verdict?: LedgerVerdict,
  ): Promise<CompleteResult>;
  /** Extends the lease; false when the claim is no longer ours. */
  renew(claim: Claim): Promise<boolean>;
  /** What records of the first shape say about these keys (absent keys have none). */
  legacy(keys: readonly string[]): Promise<Map<string, LegacyState>>;
  /** The records of these messages (keys from `messageKey`), for readers outside the daemon; absent: none. */
  read(keys: readonly string[]): Promise<Map<string, RecordedMessage>>;
}

/**
 * The key of a message's record. A forced replay (generation N > 0) gets a record of its own, so it does on purpose
 * what the original attempts already did; generation 0 is the mail as SES delivered it (and a replay without
 * --force). Each domain's recipients are another SQS message, so the domain is part of the key.
 */
export function messageKey(sesMessageId: string, domain: string, generation = 0): string {
  return `${messageId(sesMessageId, generation)}|${domain.toLowerCase()}`;
}

/** The SES message id with the replay generation, as every key of the message starts. */
export function messageId(sesMessageId: string, generation = 0): string {
  return generation > 0 ? `${sesMessageId}#${generation}` : sesMessageId;
}

/** An effect's name inside its message's record: `<recipient>|deliver`, `<recipient>|forward:<target>`, … */
export function effectName(recipient: string, action: string): string {
  return `${recipient.toLowerCase()}|${action}`;
}

/** The key the ledger's first shape gave the same effect: one record per effect. */
export function legacyKey(sesMessageId: string, name: string, generation = 0): string {
  return `${messageId(sesMessageId, generation)}|${name}`;
}

/** Used when IDEMPOTENCY_TABLE=none: every claim succeeds and nothing is remembered, as in the original daemon. */
export const noLedger: EffectLedger = {
  enabled: false,
  claim: async (key) => ({
    state: 'claimed',
    claim: { key, token: '', leaseUntil: Number.MAX_SAFE_INTEGER, expiresAt: 0, legacy: false },
    marks: new Map(),
  }),
  mark: async () => true,
  complete: async () => 'completed',
  renew: async () => true,
  legacy: async () => new Map(),
  read: async () => new Map(),
};

export interface DynamoLedgerOptions {
  table: string;
  clock: Clock;
  /** How long a record is kept after its last claim (DynamoDB TTL attribute `expires_at`). Longer than SQS retention. */
  retentionSeconds?: number;
  /**
   * After this long without a renewal a lease is presumed dead (its worker crashed) and may be taken over. The
   * visibility heartbeat renews the lease of the message it keeps invisible.
   */
  leaseSeconds?: number;
  /** How long a complete waits for others to share its BatchWriteItem (0: each goes out at once). */
  completeLingerMs?: number;
}

/** BatchWriteItem takes 25 items. */
const COMPLETE_BATCH = 25;

/** How long a record is kept after its last claim: longer than SQS keeps a message (14 days). */
export const LEDGER_RETENTION_SECONDS = 15 * 86_400;

export function createDynamoLedger(ddb: DynamoDBDocumentClient, options: DynamoLedgerOptions): EffectLedger {
  const client = lowLevel(ddb);
  const retention = options.retentionSeconds ?? LEDGER_RETENTION_SECONDS;
  const lease = options.leaseSeconds ?? 120;
  // A record written whole by BatchWriteItem (no condition) must still be ours when the write lands: only while this
  // much of the lease is left, far more than a write takes. Nobody can take a lease over before it runs out.
  const batchMargin = Math.max(10, Math.ceil(lease / 2));
  const TableName = options.table;
  const nowSeconds = () => Math.floor(options.clock.now() / 1000);

  /** An UpdateItem on a record whose lease is still this claim's; false when it no longer is. */
  async function updateOwned(
    claim: Claim,
    UpdateExpression: string,
    names: Record<string, string>,
    values: Record<string, AttributeValue>,
  ): Promise<boolean> {
    try {
      await callDynamo('UpdateItem', () =>
        client.send(
          new UpdateItemCommand({
            TableName,
            Key: { pk: { S: claim.key } },
            UpdateExpression,
            ConditionExpression: '#o = :owner',
            ExpressionAttributeNames: { '#o': 'owner', ...names },
            ExpressionAttributeValues: { ':owner': { S: claim.token }, ...values },
          }),
        ),
      );
      return true;
    } catch (error) {
      if (conditionFailed(error)) return false;
      throw error;
    }
  }

  async function claim(key: string, { legacy }: { legacy: boolean }): Promise<ClaimResult> {
    const now = nowSeconds();
    const token = randomUUID();
    const expiresAt = now + retention;
    try {
      const { Attributes = {} } = await callDynamo('UpdateItem', () =>
        client.send(
          new UpdateItemCommand({
            TableName,
            Key: { pk: { S: key } },
            UpdateExpression:
              'SET #o = :token, lease_until = :lease, expires_at = :exp, ' +
              'effects = if_not_exists(effects, :none), legacy = if_not_exists(legacy, :legacy)',
            ConditionExpression: 'attribute_not_exists(pk) OR attribute_not_exists(#o) OR lease_until < :now',
            ExpressionAttributeNames: { '#o': 'owner' },
            ExpressionAttributeValues: {
              ':token': { S: token },
              ':lease': { N: String(now + lease) },
              ':exp': { N: String(expiresAt) },
              ':none': { M: {} },
              ':legacy': { BOOL: legacy },
              ':now': { N: String(now) },
            },
            ReturnValues: 'ALL_NEW',
          }),
        ),
      );
      return {
        state: 'claimed',
        claim: { key, token, leaseUntil: now + lease, expiresAt, legacy: Attributes.legacy?.BOOL === true },
        marks: marksOf(Attributes.effects),
      };
    } catch (error) {
      if (conditionFailed(error)) return { state: 'busy' };
      throw error;
    }
  }

  /**
   * The attempt's last write, batched with other messages' (one BatchWriteItem for up to 25) while the lease is known
   * to hold: the record is then written whole, with no owner. Otherwise one UpdateItem conditional on the owner.
   */
  async function complete(
    c: Claim,
    marks: ReadonlyMap<string, EffectMark>,
    verdict?: LedgerVerdict,
  ): Promise<CompleteResult> {
    const verdictItem: Record<string, AttributeValue> = verdict
      ? { verdict: { S: verdict.status }, verdict_at: { N: String(verdict.at) } }
      : {};
    if (lingerMs > 0 && c.leaseUntil - nowSeconds() >= batchMargin) {
      await completer.add({
        pk: { S: c.key },
        effects: marksValue(marks),
        expires_at: { N: String(c.expiresAt) },
        legacy: { BOOL: c.legacy },
        ...verdictItem,
      });
      return 'completed';
    }
    const verdictSet = verdict ? ', verdict = :verdict, verdict_at = :verdictAt' : '';
    const done = await updateOwned(
      c,
      `SET effects = :effects${verdictSet} REMOVE #o, lease_until`,
      {},
      {
        ':effects': marksValue(marks),
        ...(verdict && { ':verdict': { S: verdict.status }, ':verdictAt': { N: String(verdict.at) } }),
      },
    );
    return done ? 'completed' : 'lost';
  }

  async function mark(c: Claim, marks: ReadonlyMap<string, EffectMark>): Promise<boolean> {
    const names: Record<string, string> = {};
    const values: Record<string, AttributeValue> = {};
    const sets = [...marks].map(([name, value], i) => {
      names[`#e${i}`] = name;
      values[`:e${i}`] = { S: value };
      return `effects.#e${i} = :e${i}`;
    });
    const leaseUntil = nowSeconds() + lease;
    values[':lease'] = { N: String(leaseUntil) };
    const written = await updateOwned(
      c,
      `SET ${[...sets, 'lease_until = :lease'].join(', ')}`,
      names,
      values,
    );
    if (written) c.leaseUntil = leaseUntil;
    return written;
  }

  async function renew(c: Claim): Promise<boolean> {
    const leaseUntil = nowSeconds() + lease;
    const renewed = await updateOwned(
      c,
      'SET lease_until = :lease',
      {},
      { ':lease': { N: String(leaseUntil) } },
    );
    if (renewed) c.leaseUntil = leaseUntil;
    return renewed;
  }

  async function legacyStates(keys: readonly string[]): Promise<Map<string, LegacyState>> {
    const now = nowSeconds();
    const states = new Map<string, LegacyState>();
    for (const [key, item] of await batchRead(keys)) {
      const expiresAt = Number(item.expires_at?.N ?? Number.NaN);
      if (expiresAt < now) continue;
      const status = item.status?.S;
      if (status === 'COMPLETED') states.set(key, 'done');
      else if (status === 'INPROGRESS') {
        const live = Number(item.in_progress_expiry?.N ?? Number.NaN) >= now;
        states.set(key, live ? 'busy' : 'lapsed');
      }
    }
    return states;
  }

  async function batchRead(keys: readonly string[]): Promise<Map<string, Record<string, AttributeValue>>> {
    const found = new Map<string, Record<string, AttributeValue>>();
    for (let start = 0; start < keys.length; start += 100) {
      let request = keys.slice(start, start + 100).map((pk) => ({ pk: { S: pk } }));
      for (let attempt = 0; request.length > 0; attempt++) {
        if (attempt > 0) await unprocessedPause(attempt, 'BatchGetItem');
        const response = await callDynamo('BatchGetItem', () =>
          client.send(
            new BatchGetItemCommand({
              RequestItems: { [TableName]: { Keys: request, ConsistentRead: true } },
            }),
          ),
        );
        for (const item of response.Responses?.[TableName] ?? []) found.set(item.pk?.S ?? '', item);
        request = (response.UnprocessedKeys?.[TableName]?.Keys ?? []) as typeof request;
      }
    }
    return found;
  }

  async function batchWrite(items: readonly Record<string, AttributeValue>[]): Promise<void> {
    let request: WriteRequest[] = items.map((Item) => ({ PutRequest: { Item } }));
    for (let attempt = 0; request.length > 0; attempt++) {
      if (attempt > 0) await unprocessedPause(attempt, 'BatchWriteItem');
      const response = await callDynamo('BatchWriteItem', () =>
        client.send(new BatchWriteItemCommand({ RequestItems: { [TableName]: request } })),
      );
      request = response.UnprocessedItems?.[TableName] ?? [];
    }
  }

  /** DynamoDB hands back unprocessed items when throttled: wait, and give up (temporarily) after a few rounds. */
  async function unprocessedPause(attempt: number, operation: string): Promise<void> {
    if (attempt > 5) {
      throw new WorkerError('DYNAMODB_ERROR', `${operation} left items unprocessed after 5 retries`, {
        temporary: true,
      });
    }
    await options.clock.sleep(50 * 2 ** (attempt - 1));
  }

  const lingerMs = options.completeLingerMs ?? 20;
  const completer = batcher<Record<string, AttributeValue>>(lingerMs, COMPLETE_BATCH, batchWrite);

  async function read(keys: readonly string[]): Promise<Map<string, RecordedMessage>> {
    const records = new Map<string, RecordedMessage>();
    for (const [key, item] of await batchRead(keys)) {
      const at = Number(item.verdict_at?.N ?? Number.NaN);
      const status = item.verdict?.S;
      const delivered = [...marksOf(item.effects)]
        .filter(([name, mark]) => mark === 'done' && name.endsWith('|deliver'))
        .map(([name]) => name.slice(0, -'|deliver'.length));
      records.set(key, {
        ...(status !== undefined && Number.isFinite(at) && { verdict: { status, at } }),
        delivered,
      });
    }
    return records;
  }

  return { enabled: true, claim, mark, complete, renew, legacy: legacyStates, read };
}

/**
 * The client under the document client. A document client is the base client's configuration and middleware
 * stack, with marshalling added to each of its own commands; the ledger's few attributes are written by hand, and
 * skipping that marshalling is a quarter of a ledger call's CPU (BENCHMARKS.md).
 */
function lowLevel(ddb: DynamoDBDocumentClient): DynamoDBClient {
  return ddb as unknown as DynamoDBClient;
}

function marksOf(value: AttributeValue | undefined): Map<string, EffectMark> {
  const marks = new Map<string, EffectMark>();
  for (const [name, mark] of Object.entries(value?.M ?? {}))
    if (mark.S === 'done' || mark.S === 'sending') marks.set(name, mark.S);
  return marks;
}

function marksValue(marks: ReadonlyMap<string, EffectMark>): AttributeValue {
  const entries: Record<string, AttributeValue> = {};
  for (const [name, mark] of marks) entries[name] = { S: mark };
  return { M: entries };
}

/**
 * Collects items for up to `lingerMs` (or until `max` are waiting) and writes them together; each caller learns
 * whether its batch was written.
 */
function batcher<T>(
  lingerMs: number,
  max: number,
  write: (batch: T[]) => Promise<void>,
): { add(item: T): Promise<void> } {
  let pending: Array<{ item: T; resolve: () => void; reject: (e: unknown) => void }> = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const batch = pending;
    pending = [];
    write(batch.map((p) => p.item)).then(
      () => batch.forEach((p) => p.resolve()),
      (error: unknown) => batch.forEach((p) => p.reject(error)),
    );
  };
  return {
    add(item) {
      return new Promise<void>((resolve, reject) => {
        pending.push({ item, resolve, reject });
        if (pending.length >= max) flush();
        else timer ??= setTimeout(flush, lingerMs);
      });
    },
  };
}
