import {
  BatchGetCommand,
  DeleteCommand,
  PutCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import { backoffMs, type Clock } from '../clock.ts';
import { WorkerError, awsError, awsErrorName, isTemporaryAwsError } from '../errors.ts';
import { MAIL_LIMITS, type MailLimit } from '../mail/mail-limits.ts';

/** A recipient's rules (table `email-rules`). */
export interface RecipientRule {
  oooActive: boolean;
  oooMessage: string;
  oooContentType: 'text' | 'html';
  forwards: string[];
}

export interface RecipientSettings {
  rule?: RecipientRule;
  blockedPatterns: string[];
  /** Bounds the recipient's items went past (the data was cut to them); absent when none. */
  limits?: MailLimit[];
}

/** A record of mail we sent out through SES (table `ses-outbound-messages`). */
export interface OutboundRecord {
  messageId: string;
  originalSource?: string;
  bouncedRecipients: string[];
}

export interface TableNames {
  rules: string;
  blocklist: string;
  outbound: string;
  oooState: string;
}

export interface RulesStore {
  /** Rules and blocklists of all recipients in one BatchGetItem (two tables, one call; unprocessed keys retried). */
  settingsFor(recipients: readonly string[]): Promise<Map<string, RecipientSettings>>;
  /**
   * The record of the first candidate id that has one: one BatchGetItem over all candidates (at most 100) per
   * attempt, retried briefly because the record may lag the bounce.
   */
  findOutbound(
    candidates: readonly string[],
    options?: { attempts?: number },
  ): Promise<OutboundRecord | undefined>;
  /**
   * Claims the right to auto-reply from `recipient` to `sender` until `now + intervalMs`. Conditional write: exactly
   * one of several concurrent claimers wins, across threads and replicas.
   */
  claimAutoReply(recipient: string, sender: string, now: number, intervalMs: number): Promise<boolean>;
  /** Gives a claim back when the reply could not be sent, so a later mail may try again. */
  releaseAutoReply(recipient: string, sender: string, now: number): Promise<void>;
}

export interface DynamoRulesStoreOptions {
  tables: TableNames;
  clock: Clock;
  /** Per-thread cache lifetime for rules/blocklists; 0 disables. */
  cacheSeconds: number;
  /** Told when a recipient's item is read over a bound (MAIL_LIMITS) and cut to it, for the log. */
  onLimit?: (recipient: string, limit: MailLimit) => void;
}

type KeysByTable = Record<string, { Keys: Record<string, unknown>[] }>;
type ItemsByTable = Record<string, Record<string, unknown>[]>;

/** BatchGetItem takes 100 keys in total across tables. */
const BATCH_GET_MAX_KEYS = 100;
/** DynamoDB refuses a partition key over 2048 bytes (and the whole batch with it); ids longer are no SES ids. */
const MAX_KEY_BYTES = 1024;

export function createDynamoRulesStore(
  ddb: DynamoDBDocumentClient,
  options: DynamoRulesStoreOptions,
): RulesStore {
  const { tables, clock } = options;
  const cache = new Map<string, { at: number; settings: RecipientSettings }>();
  const cacheMs = options.cacheSeconds * 1000;

  /** One BatchGetItem, plus retries of UnprocessedKeys with backoff (bounded: then temporary). */
  async function batchGet(request: KeysByTable): Promise<ItemsByTable> {
    const items: ItemsByTable = {};
    let pending: KeysByTable | undefined = request;
    for (let attempt = 0; pending && Object.keys(pending).length > 0; attempt++) {
      if (attempt > 0) {
        if (attempt > 5) {
          throw new WorkerError('DYNAMODB_ERROR', 'BatchGetItem left keys unprocessed after 5 retries', {
            temporary: true,
          });
        }
        await clock.sleep(backoffMs(attempt - 1, 50, 2_000));
      }
      const response = await callDynamo('BatchGetItem', () =>
        ddb.send(new BatchGetCommand({ RequestItems: pending as never })),
      );
      for (const [table, found] of Object.entries(response.Responses ?? {}))
        (items[table] ??= []).push(...(found as Record<string, unknown>[]));
      pending = response.UnprocessedKeys as KeysByTable | undefined;
    }
    return items;
  }

  function noteCut(recipient: string, entry: RecipientSettings, limit: MailLimit): void {
    (entry.limits ??= []).push(limit);
    options.onLimit?.(recipient, limit);
  }

  async function batchRead(recipients: readonly string[]): Promise<Map<string, RecipientSettings>> {
    const result = new Map<string, RecipientSettings>();
    for (const r of recipients) result.set(r, { blockedPatterns: [] });
    // 50 recipients × 2 tables per call.
    for (let i = 0; i < recipients.length; i += BATCH_GET_MAX_KEYS / 2) {
      const keys = recipients.slice(i, i + BATCH_GET_MAX_KEYS / 2).map((r) => ({ email_address: r }));
      const items = await batchGet({ [tables.rules]: { Keys: keys }, [tables.blocklist]: { Keys: keys } });
      for (const item of items[tables.rules] ?? []) {
        const key = String(item.email_address ?? '').toLowerCase();
        const entry = result.get(key);
        if (entry) entry.rule = toRule(item, (limit) => noteCut(key, entry, limit));
      }
      for (const item of items[tables.blocklist] ?? []) {
        const key = String(item.email_address ?? '').toLowerCase();
        const entry = result.get(key);
        if (!entry) continue;
        entry.blockedPatterns = bounded(stringList(item.blocked_patterns), MAIL_LIMITS.blockedPatterns, () =>
          noteCut(key, entry, 'blocked-patterns'),
        );
      }
    }
    return result;
  }

  return {
    async settingsFor(recipients) {
      const unique = [...new Set(recipients.map((r) => r.toLowerCase()))];
      const now = clock.now();
      const result = new Map<string, RecipientSettings>();
      const missing: string[] = [];
      for (const r of unique) {
        const hit = cacheMs > 0 ? cache.get(r) : undefined;
        if (hit && now - hit.at < cacheMs) result.set(r, hit.settings);
        else missing.push(r);
      }
      if (missing.length > 0) {
        const fresh = await batchRead(missing);
        for (const [r, settings] of fresh) {
          result.set(r, settings);
          if (cacheMs > 0) cache.set(r, { at: now, settings });
        }
        if (cache.size > 10_000) {
          for (const [key, value] of cache) if (now - value.at >= cacheMs) cache.delete(key);
        }
      }
      return result;
    },

    async findOutbound(candidates, lookupOptions = {}) {
      const keys = [...new Set(candidates)]
        .filter((id) => id !== '' && Buffer.byteLength(id, 'utf8') <= MAX_KEY_BYTES)
        .slice(0, BATCH_GET_MAX_KEYS);
      if (keys.length === 0) return undefined;
      const attempts = lookupOptions.attempts ?? 3;
      for (let attempt = 0; attempt < attempts; attempt++) {
        if (attempt > 0) await clock.sleep(backoffMs(attempt - 1, 250, 2_000));
        const items = await batchGet({ [tables.outbound]: { Keys: keys.map((id) => ({ MessageId: id })) } });
        const found = new Map((items[tables.outbound] ?? []).map((item) => [String(item.MessageId), item]));
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

    async claimAutoReply(recipient, sender, now, intervalMs) {
      const nowSeconds = Math.floor(now / 1000);
      try {
        await callDynamo('PutItem', () =>
          ddb.send(
            new PutCommand({
              TableName: tables.oooState,
              Item: {
                pk: oooKey(recipient, sender),
                recipient: recipient.toLowerCase(),
                sender: sender.toLowerCase(),
                replied_at: nowSeconds,
                // Also the table's TTL attribute, so DynamoDB removes expired claims by itself.
                expires_at: Math.floor((now + intervalMs) / 1000),
              },
              ConditionExpression: 'attribute_not_exists(pk) OR expires_at <= :now',
              ExpressionAttributeValues: { ':now': nowSeconds },
            }),
          ),
        );
        return true;
      } catch (error) {
        if (error instanceof WorkerError && error.awsCode === 'ConditionalCheckFailedException') return false;
        throw error;
      }
    },

    async releaseAutoReply(recipient, sender, now) {
      await callDynamo('DeleteItem', () =>
        ddb.send(
          new DeleteCommand({
            TableName: tables.oooState,
            Key: { pk: oooKey(recipient, sender) },
            ConditionExpression: 'replied_at = :at',
            ExpressionAttributeValues: { ':at': Math.floor(now / 1000) },
          }),
        ),
      ).catch((error: unknown) => {
        if (!(error instanceof WorkerError && error.awsCode === 'ConditionalCheckFailedException'))
          throw error;
      });
    },
  };
}

function oooKey(recipient: string, sender: string): string {
  return `${recipient.toLowerCase()}|${sender.toLowerCase()}`;
}

/** A rules item, each mail-facing size cut to its bound (an item may be 400 KB of whatever a UI wrote). */
function toRule(item: Record<string, unknown>, onLimit: (limit: MailLimit) => void): RecipientRule {
  const message = typeof item.ooo_message === 'string' ? item.ooo_message : '';
  const forwards = [
    ...new Set(
      stringList(item.forwards)
        .map((f) => f.trim().toLowerCase())
        .filter((f) => f.includes('@')),
    ),
  ];
  return {
    oooActive: item.ooo_active === true,
    oooMessage: boundedText(message, MAIL_LIMITS.oooMessageChars, () => onLimit('ooo-message')),
    oooContentType: item.ooo_content_type === 'html' ? 'html' : 'text',
    forwards: bounded(forwards, MAIL_LIMITS.forwards, () => onLimit('forwards')),
  };
}

function bounded<T>(list: T[], max: number, onCut: () => void): T[] {
  if (list.length <= max) return list;
  onCut();
  return list.slice(0, max);
}

/** Cut on a code point boundary, so a surrogate pair is never split. */
function boundedText(text: string, maxChars: number, onCut: () => void): string {
  if (text.length <= maxChars) return text;
  onCut();
  const end = /[\uD800-\uDBFF]/.test(text[maxChars - 1] ?? '') ? maxChars - 1 : maxChars;
  return text.slice(0, end);
}

function stringList(value: unknown): string[] {
  if (value instanceof Set) value = [...value];
  if (!Array.isArray(value)) return [];
  return value.filter((v): v is string => typeof v === 'string' && v !== '');
}

export async function callDynamo<T>(operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    // A failed condition is an answer, not a fault: retrying the same write cannot change it.
    const conditionFailed = awsErrorName(error) === 'ConditionalCheckFailedException';
    throw awsError('DYNAMODB_ERROR', operation, error, !conditionFailed && isTemporaryAwsError(error));
  }
}
