/**
 * A message's record in the idempotency ledger (one per SES message id, replay generation and domain), read
 * straight from the table: its lease and the mark of each effect.
 */
import { GetCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { messageKey } from '../../src/aws/effect-ledger.ts';

export const LEDGER_TABLE = 'email-worker-idempotency';

export interface LedgerRecord {
  owner?: string;
  effects?: Record<string, string>;
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
