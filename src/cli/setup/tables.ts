/**
 * The DynamoDB tables: created with the key schema of src/aws/resources.ts (on-demand), waited for until ACTIVE
 * with progress shown, TTL enabled where the daemon writes expiries. A table with another key is reported, never
 * replaced.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  UpdateTimeToLiveCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';

import type { TableSpec } from '../../aws/resources.ts';
import { checkTable } from '../../aws/table-check.ts';
import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';

/** DescribeTable polls while a new table is CREATING (AWS takes seconds; emulators none). */
const TABLE_ACTIVE_SECONDS = 120;

/** The endpoints that lack UpdateTimeToLive (dynalite) answer this way. */
const UNSUPPORTED = new Set(['UnknownOperationException', 'InvalidAction', 'UnsupportedOperation']);

export async function ensureTable(context: SetupContext, spec: TableSpec, table: string): Promise<SetupItem> {
  context.progress.step(`table ${table}`);
  const client = context.clients.ddb as unknown as DynamoDBClient;
  const result = item('table', table);
  try {
    if (await tableExists(client, table)) {
      const check = await checkTable(client, spec, table);
      if (check.inconclusive !== undefined) return failed(result, check.inconclusive);
      if (!check.ok) {
        result.outcome = 'failed';
        result.details.push(...check.problems.map((p) => `not changed: ${p}`));
        return result;
      }
    } else {
      await client.send(
        new CreateTableCommand({
          TableName: table,
          AttributeDefinitions: [{ AttributeName: spec.partitionKey, AttributeType: 'S' }],
          KeySchema: [{ AttributeName: spec.partitionKey, KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      await waitUntilActive(context, client, table);
      result.outcome = 'created';
      result.details.push(`key ${spec.partitionKey} (S), on-demand capacity`);
    }
  } catch (error) {
    return failed(result, describeError(error));
  }
  if (spec.ttlAttribute) await ensureTtl(client, table, spec.ttlAttribute, result);
  return result;
}

async function tableExists(client: DynamoDBClient, table: string): Promise<boolean> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
    return true;
  } catch (error) {
    if (awsErrorName(error) === 'ResourceNotFoundException') return false;
    throw error;
  }
}

async function waitUntilActive(context: SetupContext, client: DynamoDBClient, table: string): Promise<void> {
  const started = Date.now();
  const wait = context.progress.waiting(`table ${table} to become ACTIVE`, TABLE_ACTIVE_SECONDS);
  for (;;) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: table }));
    const seconds = Math.round((Date.now() - started) / 1000);
    if (Table?.TableStatus === 'ACTIVE') {
      wait.end(`table ${table} is ACTIVE after ${seconds} s`);
      return;
    }
    if (seconds >= TABLE_ACTIVE_SECONDS) break;
    wait.tick(seconds);
    await sleep(1_000);
  }
  wait.end(`table ${table} is not ACTIVE after ${TABLE_ACTIVE_SECONDS} s`);
  throw new Error(
    `table ${table} did not become ACTIVE within ${TABLE_ACTIVE_SECONDS} s: see its status in the DynamoDB console, then run setup again`,
  );
}

async function ensureTtl(
  client: DynamoDBClient,
  table: string,
  attribute: string,
  result: SetupItem,
): Promise<void> {
  try {
    const { TimeToLiveDescription } = await client.send(new DescribeTimeToLiveCommand({ TableName: table }));
    const status = TimeToLiveDescription?.TimeToLiveStatus;
    const on = status === 'ENABLED' || status === 'ENABLING';
    if (on && TimeToLiveDescription?.AttributeName === attribute) return;
    if (on) {
      result.warnings.push(
        `TTL is on "${TimeToLiveDescription?.AttributeName}", not "${attribute}": expired items are never removed; ` +
          `switch it to "${attribute}" (a table has one TTL attribute)`,
      );
      return;
    }
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: table,
        TimeToLiveSpecification: { AttributeName: attribute, Enabled: true },
      }),
    );
    result.details.push(`TTL enabled on ${attribute}`);
    if (result.outcome === 'existed') result.outcome = 'updated';
  } catch (error) {
    const name = awsErrorName(error) ?? '';
    result.warnings.push(
      UNSUPPORTED.has(name)
        ? `TTL could not be enabled on this endpoint (${name}: it has no UpdateTimeToLive); on AWS, enable TTL on "${attribute}"`
        : `TTL on "${attribute}" could not be enabled: ${describeError(error)}`,
    );
  }
}
