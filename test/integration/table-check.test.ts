import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateTableCommand } from '@aws-sdk/client-dynamodb';
import { tableSpec } from '../../src/aws/resources.ts';
import { checkTable } from '../../src/aws/table-check.ts';
import { createTables, startStack, type TestStack } from '../harness/emulators.ts';

describe('checkTable against dynalite', () => {
  let stack: TestStack;
  before(async () => {
    stack = await startStack();
    await createTables(stack.dynamodb);
    await stack.dynamodb.send(
      new CreateTableCommand({
        TableName: 'wrong-key',
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  });
  after(() => stack.stop());

  it('passes a table created with the daemon key schema, warning that TTL is off (dynalite has none)', async () => {
    const result = await checkTable(stack.dynamodb, tableSpec('idempotency'), 'email-worker-idempotency');
    assert.equal(result.ok, true);
    assert.deepEqual(result.problems, []);
    assert.match(result.warnings.join('\n'), /enable TTL on "expires_at"/);
  });

  it('fails a table keyed on another attribute and names the key the daemon needs', async () => {
    const result = await checkTable(stack.dynamodb, tableSpec('idempotency'), 'wrong-key');
    assert.equal(result.ok, false);
    assert.match(
      result.problems.join('\n'),
      /key schema is id \(HASH\); the daemon needs a single partition key "pk"/,
    );
  });

  it('fails a missing table', async () => {
    const result = await checkTable(stack.dynamodb, tableSpec('rules'), 'no-such-table');
    assert.equal(result.ok, false);
    assert.match(result.problems.join('\n'), /does not exist/);
  });

  it('does not check TTL of a table the daemon only reads', async () => {
    const result = await checkTable(stack.dynamodb, tableSpec('rules'), 'email-rules');
    assert.deepEqual(result, { table: 'email-rules', role: 'rules', ok: true, problems: [], warnings: [] });
  });
});
