/**
 * A message's record in the idempotency ledger (one per SES message id, replay generation and domain), read
 * straight from the table: what tests check where a plain delivery keeps its verdict instead of the S3 object.
 */
import { GetCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { messageKey } from '../../src/aws/effect-ledger.ts';

export const LEDGER_TABLE = 'email-worker-idempotency';

export interface LedgerRecord {
  owner?: string;
  effects?: Record<string, string>;
  /** The message's final status as the attempt that finished it saw it. */
  verdict?: string;
  /** Epoch seconds. */
  verdict_at?: number;
}

export async function ledgerRecord(
  stack: { ddb: DynamoDBDocumentClient },
  sesMessageId: string,
  domain: string,
  generation = 0,
): Promise<LedgerRecord | undefined> {
  const { Item } = await stack.ddb.send(
    new GetCommand({
      TableName: LEDGER_TABLE,
      Key: { pk: messageKey(sesMessageId, domain, generation) },
      ConsistentRead: true,
    }),
  );
  return Item as LedgerRecord | undefined;
}
