import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { tableSpec } from '../../src/aws/resources.ts';
import { checkTable } from '../../src/aws/table-check.ts';
import { buildConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/log/logger.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { SharedTableGuard } from '../../src/daemon/shared-table-guard.ts';
import {
  createTables,
  startStack,
  TEST_CREDENTIALS,
  TEST_REGION,
  type TestStack,
} from '../harness/emulators.ts';

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

describe('SharedTableGuard: the domains of a thread share one round of table checks', () => {
  let stack: TestStack;
  before(async () => {
    stack = await startStack();
    await createTables(stack.dynamodb);
  });
  after(() => stack.stop());

  /** A document client over the stack's DynamoDB client that counts the control-plane calls it sends. */
  function countingClient(): { ddb: DynamoDBDocumentClient; calls: () => number } {
    let calls = 0;
    const client = new DynamoDBClient({
      region: TEST_REGION,
      endpoint: stack.endpoints.dynamodb,
      credentials: TEST_CREDENTIALS,
    });
    const ddb = DynamoDBDocumentClient.from(client);
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (/^Describe(Table|TimeToLive)/.test(String(context.commandName))) calls++;
        return next(args);
      },
      { step: 'initialize', name: 'countControlPlane' },
    );
    return { ddb, calls: () => calls };
  }

  function guardFor(ddb: DynamoDBDocumentClient, tables: Record<string, string> = {}) {
    const config = buildConfig({ DOMAINS: 'a.test', ...tables });
    const metrics = createPipelineMetrics();
    const guard = new SharedTableGuard({
      ddb,
      tables: config.tables,
      logger: createLogger({ level: 'silent', redactAddresses: false }),
      metrics,
    });
    return { guard, metrics };
  }

  async function failing(metrics: ReturnType<typeof createPipelineMetrics>, domain: string, check: string) {
    const all = await metrics.registry.getMetricsAsJSON();
    const gauge = all.find((m) => m.name === 'ses_worker_deployment_check_failed');
    return gauge?.values.find((v) => v.labels.domain === domain && v.labels.check === check)?.value;
  }

  it('twenty domains joining at once cost one round of checks, not twenty', async () => {
    const { ddb, calls } = countingClient();
    const { guard } = guardFor(ddb);
    const one = countingClient();
    const single = guardFor(one.ddb);
    await single.guard.join('x.test', () => undefined).check();
    const perRound = one.calls();
    assert.ok(perRound >= 5, `a round checks every table (${perRound} calls)`);

    const results: Array<readonly string[]> = [];
    const members = Array.from({ length: 20 }, (_, i) =>
      guard.join(`d${i}.test`, (problems) => results.push(problems)),
    );
    await Promise.all(members.map((m) => m.check()));
    assert.equal(calls(), perRound, 'one round for all twenty');
    assert.equal(results.length, 20, 'every domain got the result');
    assert.ok(results.every((r) => r.length === 0));
    for (const m of members) m.stop();
  });

  it('a missing table holds every domain of the thread, a late joiner included, with per-domain metrics', async () => {
    const { ddb } = countingClient();
    const { guard, metrics } = guardFor(ddb, { RULES_TABLE: 'no-such-rules-table' });
    const held = new Map<string, readonly string[]>();
    const a = guard.join('a.test', (p) => held.set('a.test', p));
    await a.check();
    const b = guard.join('b.test', (p) => held.set('b.test', p));
    await b.check();
    for (const domain of ['a.test', 'b.test']) {
      assert.match(held.get(domain)?.join() ?? '', /no-such-rules-table.*does not exist/, domain);
      assert.equal(await failing(metrics, domain, 'table:no-such-rules-table'), 1, domain);
      assert.equal(await failing(metrics, domain, 'table:email-worker-idempotency'), 0, domain);
    }
    a.stop();
    b.stop();
  });
});
