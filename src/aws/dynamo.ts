import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { BatchGetCommand, PutCommand, type PutCommandInput } from '@aws-sdk/lib-dynamodb';
import { backoffMs, type Clock } from '../clock.ts';
import { WorkerError, awsError, awsErrorName, isTemporaryAwsError } from '../errors.ts';

/** BatchGetItem takes 100 keys in total across tables. */
export const BATCH_GET_MAX_KEYS = 100;

export type KeysByTable = Record<string, { Keys: Record<string, unknown>[] }>;
export type ItemsByTable = Record<string, Record<string, unknown>[]>;

/** One DynamoDB call, its failure as a WorkerError: a failed condition is an answer (permanent), not a fault. */
export async function callDynamo<T>(operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    const conditionFailed = awsErrorName(error) === 'ConditionalCheckFailedException';
    throw awsError('DYNAMODB_ERROR', operation, error, !conditionFailed && isTemporaryAwsError(error));
  }
}

/** True for the error of a write whose condition did not hold. */
export function conditionFailed(error: unknown): boolean {
  return error instanceof WorkerError && error.awsCode === 'ConditionalCheckFailedException';
}

/** A PutItem with a condition: true when written, false when the condition did not hold. */
export async function conditionalPut(ddb: DynamoDBDocumentClient, input: PutCommandInput): Promise<boolean> {
  try {
    await callDynamo('PutItem', () => ddb.send(new PutCommand(input)));
    return true;
  } catch (error) {
    if (conditionFailed(error)) return false;
    throw error;
  }
}

/** One BatchGetItem, plus retries of UnprocessedKeys with backoff (bounded: then temporary). */
export async function batchGet(
  ddb: DynamoDBDocumentClient,
  clock: Clock,
  request: KeysByTable,
): Promise<ItemsByTable> {
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

/** The strings of a list or string set attribute; anything else is dropped. */
export function stringList(value: unknown): string[] {
  if (value instanceof Set) value = [...value];
  if (!Array.isArray(value)) return [];
  return value.filter((v): v is string => typeof v === 'string' && v !== '');
}
