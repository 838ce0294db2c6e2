import {
  DeleteCommand,
  GetCommand,
  PutCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import type { Clock } from '../clock.ts';
import { WorkerError } from '../errors.ts';
import { callDynamo } from './tables.ts';

/** `claimed`: go ahead; `done`: a previous attempt completed it; `busy`: another worker holds a live claim. */
export type ClaimResult = 'claimed' | 'done' | 'busy';

/**
 * Exactly-once bookkeeping for effects (deliver, forward, auto-reply) keyed by SES message id, recipient and
 * action. Claimed before the effect, completed after it, released when it failed — the AWS Powertools idempotency
 * pattern, so a redelivered message skips what already happened and a crashed claim can be taken over later.
 */
export interface EffectLedger {
  readonly enabled: boolean;
  claim(key: string): Promise<ClaimResult>;
  complete(key: string): Promise<void>;
  release(key: string): Promise<void>;
}

/**
 * Records an effect that has happened. Once the mail server or SES accepted a mail, failing to write that down must
 * not make the effect look undone — a retry would then send it again — so the write is retried, and a final
 * failure is reported but does not undo the effect (the claim's lease then lets a later attempt take over).
 */
export async function completeAfterEffect(
  ledger: EffectLedger,
  key: string,
  sleep: (ms: number) => Promise<void>,
  onFailure: (error: unknown) => void,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await ledger.complete(key);
      return;
    } catch (error) {
      if (attempt >= 4) {
        onFailure(error);
        return;
      }
      await sleep(100 * 2 ** attempt);
    }
  }
}

export function effectKey(sesMessageId: string, recipient: string, action: string): string {
  return `${sesMessageId}|${recipient.toLowerCase()}|${action}`;
}

/** Used when IDEMPOTENCY_TABLE is empty: every claim succeeds, as in the original daemon. */
export const noLedger: EffectLedger = {
  enabled: false,
  claim: async () => 'claimed',
  complete: async () => undefined,
  release: async () => undefined,
};

export interface DynamoLedgerOptions {
  table: string;
  clock: Clock;
  /** How long a completed record is kept (DynamoDB TTL attribute `expires_at`). Longer than SQS retention. */
  retentionSeconds?: number;
  /** After this long an unfinished claim is presumed dead (its worker crashed) and may be taken over. */
  leaseSeconds?: number;
}

export function createDynamoLedger(ddb: DynamoDBDocumentClient, options: DynamoLedgerOptions): EffectLedger {
  const retention = options.retentionSeconds ?? 15 * 86_400;
  const lease = options.leaseSeconds ?? 120;
  const TableName = options.table;
  return {
    enabled: true,
    async claim(key) {
      const now = Math.floor(options.clock.now() / 1000);
      try {
        await callDynamo('PutItem', () =>
          ddb.send(
            new PutCommand({
              TableName,
              Item: {
                pk: key,
                status: 'INPROGRESS',
                in_progress_expiry: now + lease,
                expires_at: now + retention,
              },
              ConditionExpression:
                'attribute_not_exists(pk) OR expires_at < :now OR (#s = :inprogress AND in_progress_expiry < :now)',
              ExpressionAttributeNames: { '#s': 'status' },
              ExpressionAttributeValues: { ':now': now, ':inprogress': 'INPROGRESS' },
            }),
          ),
        );
        return 'claimed';
      } catch (error) {
        if (!(error instanceof WorkerError && error.awsCode === 'ConditionalCheckFailedException'))
          throw error;
        const existing = await callDynamo('GetItem', () =>
          ddb.send(new GetCommand({ TableName, Key: { pk: key }, ConsistentRead: true })),
        );
        return existing.Item?.status === 'COMPLETED' ? 'done' : 'busy';
      }
    },
    async complete(key) {
      const now = Math.floor(options.clock.now() / 1000);
      await callDynamo('UpdateItem', () =>
        ddb.send(
          new UpdateCommand({
            TableName,
            Key: { pk: key },
            UpdateExpression:
              'SET #s = :done, completed_at = :now, expires_at = :exp REMOVE in_progress_expiry',
            ExpressionAttributeNames: { '#s': 'status' },
            ExpressionAttributeValues: { ':done': 'COMPLETED', ':now': now, ':exp': now + retention },
          }),
        ),
      );
    },
    async release(key) {
      await callDynamo('DeleteItem', () =>
        ddb.send(
          new DeleteCommand({
            TableName,
            Key: { pk: key },
            ConditionExpression: '#s = :inprogress',
            ExpressionAttributeNames: { '#s': 'status' },
            ExpressionAttributeValues: { ':inprogress': 'INPROGRESS' },
          }),
        ),
      ).catch((error: unknown) => {
        if (!(error instanceof WorkerError && error.awsCode === 'ConditionalCheckFailedException'))
          throw error;
      });
    },
  };
}
