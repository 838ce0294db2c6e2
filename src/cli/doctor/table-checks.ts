/** Every table the daemon uses: it exists with the key the daemon reads and writes, and TTL where it writes expiries. */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';

import { TABLES, type TableSpec } from '../../aws/resources.ts';
import { checkTable, configuredTableName } from '../../aws/table-check.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import { awsFailure, call, reachFix, type DoctorContext } from './context.ts';

export function tableChecks(context: DoctorContext): Promise<CheckResult[]> {
  return Promise.all(TABLES.map((spec) => tableCheck(context, spec)));
}

async function tableCheck(context: DoctorContext, spec: TableSpec): Promise<CheckResult> {
  const table = configuredTableName(context.config, spec);
  if (table === undefined) {
    return warn(
      `table (${spec.setting})`,
      'switched off: a retried message may deliver again to recipients that already got it',
      `set ${spec.setting} (and run unified-worker setup to create it)`,
    );
  }
  const check = `table ${table}`;
  const client = context.clients.ddb as unknown as DynamoDBClient;
  let result: Awaited<ReturnType<typeof checkTable>>;
  try {
    result = await call(context, `DynamoDB DescribeTable ${table}`, (signal) =>
      checkTable(client, spec, table, signal),
    );
  } catch (error) {
    return awsFailure(context, {
      check,
      service: 'DynamoDB',
      operation: 'DescribeTable',
      permission: 'dynamodb:DescribeTable',
      error,
    });
  }
  if (result.inconclusive !== undefined) {
    return fail(check, `not checked: ${result.inconclusive}`, reachFix(context, 'DynamoDB'));
  }
  if (!result.ok) return { check, status: 'fail', ...splitRemedy(result.problems) };
  if (result.warnings.length > 0) return { check, status: 'warn', ...splitRemedy(result.warnings) };
  return ok(
    check,
    `key ${spec.partitionKey}${spec.ttlAttribute ? `, TTL on ${spec.ttlAttribute}` : ''} (${spec.purpose})`,
  );
}

/** checkTable's messages end with the remedy after their last colon: the finding goes on the check line, the remedy on the fix line. */
function splitRemedy(messages: readonly string[]): { detail: string; fix: string } {
  const cut = (m: string) => m.lastIndexOf(': ');
  return {
    detail: messages.map((m) => (cut(m) > 0 ? m.slice(0, cut(m)) : m)).join('; '),
    fix: messages.map((m) => (cut(m) > 0 ? m.slice(cut(m) + 2) : 'see the message')).join('; '),
  };
}
