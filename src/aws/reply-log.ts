import { DeleteCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { callDynamo, conditionFailed, conditionalPut } from './dynamo.ts';

/** The auto-replies sent (table OOO_STATE_TABLE): at most one per recipient and sender per interval. */
export interface ReplyLog {
  /**
   * Reserves the right to auto-reply from `recipient` to `sender` until `now + intervalMs`. A conditional write:
   * exactly one of several concurrent callers gets it, across threads and replicas.
   */
  reserve(recipient: string, sender: string, now: number, intervalMs: number): Promise<boolean>;
  /** Gives a reservation back when the reply could not be sent, so a later mail may try again. */
  cancel(recipient: string, sender: string, now: number): Promise<void>;
}

export function createDynamoReplyLog(ddb: DynamoDBDocumentClient, options: { table: string }): ReplyLog {
  const TableName = options.table;
  return {
    async reserve(recipient, sender, now, intervalMs) {
      const nowSeconds = Math.floor(now / 1000);
      return conditionalPut(ddb, {
        TableName,
        Item: {
          pk: replyKey(recipient, sender),
          recipient: recipient.toLowerCase(),
          sender: sender.toLowerCase(),
          replied_at: nowSeconds,
          // Also the table's TTL attribute, so DynamoDB removes expired reservations by itself.
          expires_at: Math.floor((now + intervalMs) / 1000),
        },
        ConditionExpression: 'attribute_not_exists(pk) OR expires_at <= :now',
        ExpressionAttributeValues: { ':now': nowSeconds },
      });
    },

    async cancel(recipient, sender, now) {
      await callDynamo('DeleteItem', () =>
        ddb.send(
          new DeleteCommand({
            TableName,
            Key: { pk: replyKey(recipient, sender) },
            ConditionExpression: 'replied_at = :at',
            ExpressionAttributeValues: { ':at': Math.floor(now / 1000) },
          }),
        ),
      ).catch((error: unknown) => {
        if (!conditionFailed(error)) throw error;
      });
    },
  };
}

function replyKey(recipient: string, sender: string): string {
  return `${recipient.toLowerCase()}|${sender.toLowerCase()}`;
}
