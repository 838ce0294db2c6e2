import {
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Config } from '../config/config.ts';
import { awsErrorName, errorMessage, isTemporaryAwsError } from '../errors.ts';
import type { TableSpec } from './resources.ts';

/** The configured name of a table; undefined for the idempotency table when the ledger is switched off. */
export function configuredTableName(config: Config, spec: TableSpec): string | undefined {
  const name = config.tables[spec.role];
  return name === '' ? undefined : name;
}

export interface TableCheckResult {
  table: string;
  role: TableSpec['role'];
  /** False when the daemon cannot work with the table as it is (missing, wrong key, not active). */
  ok: boolean;
  /** What makes it unusable, each with the fix; empty when ok. */
  problems: string[];
  /** What works but is not as intended (TTL off), each with the fix. */
  warnings: string[];
  /** The check itself could not run (throttled, network): neither a pass nor a verdict on the table. */
  inconclusive?: string;
}

/**
 * DescribeTable (+ DescribeTimeToLive where the daemon writes an expiry): the table exists, is ACTIVE, and its key
 * schema is exactly the single string partition key the daemon reads and writes. Shared by the daemon's start-up
 * check and `unified-worker doctor`.
 */
export async function checkTable(
  ddb: DynamoDBClient | DynamoDBDocumentClient,
  spec: TableSpec,
  table: string,
  signal?: AbortSignal,
): Promise<TableCheckResult> {
  // The document client passes control-plane commands through to the client it wraps.
  const client = ddb as DynamoDBClient;
  const result: TableCheckResult = { table, role: spec.role, ok: true, problems: [], warnings: [] };
  const expected = `a single partition key "${spec.partitionKey}" of type S`;
  try {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: table }), {
      abortSignal: signal,
    });
    const keys = Table?.KeySchema ?? [];
    const hash = keys.find((k) => k.KeyType === 'HASH');
    const type = Table?.AttributeDefinitions?.find((a) => a.AttributeName === hash?.AttributeName);
    if (keys.length !== 1 || hash?.AttributeName !== spec.partitionKey || type?.AttributeType !== 'S') {
      const found = keys.map((k) => `${k.AttributeName} (${k.KeyType})`).join(', ') || 'none';
      result.problems.push(
        `key schema is ${found}; the daemon needs ${expected}: recreate the table (unified-worker setup)`,
      );
    }
    if (Table?.TableStatus !== undefined && !['ACTIVE', 'UPDATING'].includes(Table.TableStatus)) {
      result.problems.push(`table status is ${Table.TableStatus}, not ACTIVE`);
    }
  } catch (error) {
    const name = awsErrorName(error);
    if (name === 'ResourceNotFoundException') {
      result.problems.push(`table does not exist: create it with ${expected} (unified-worker setup)`);
    } else if (name === 'AccessDeniedException' || !isTemporaryAwsError(error)) {
      result.problems.push(
        `DescribeTable failed (${name ?? 'error'}): grant dynamodb:DescribeTable on the table (${errorMessage(error)})`,
      );
    } else {
      result.inconclusive = `DescribeTable failed: ${errorMessage(error)}`;
    }
  }
  if (result.problems.length === 0 && result.inconclusive === undefined && spec.ttlAttribute) {
    await checkTtl(client, spec.ttlAttribute, table, result, signal);
  }
  result.ok = result.problems.length === 0;
  return result;
}

async function checkTtl(
  client: DynamoDBClient,
  attribute: string,
  table: string,
  result: TableCheckResult,
  signal: AbortSignal | undefined,
): Promise<void> {
  try {
    const { TimeToLiveDescription } = await client.send(new DescribeTimeToLiveCommand({ TableName: table }), {
      abortSignal: signal,
    });
    const status = TimeToLiveDescription?.TimeToLiveStatus;
    const on = status === 'ENABLED' || status === 'ENABLING';
    if (!on || TimeToLiveDescription?.AttributeName !== attribute) {
      result.warnings.push(
        `TTL is ${status ?? 'unknown'}${TimeToLiveDescription?.AttributeName ? ` on ${TimeToLiveDescription.AttributeName}` : ''}: ` +
          `enable TTL on "${attribute}" or expired items are never removed (unified-worker setup)`,
      );
    }
  } catch (error) {
    result.warnings.push(`TTL could not be checked (${errorMessage(error)})`);
  }
}
