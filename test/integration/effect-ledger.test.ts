/**
 * The DynamoDB ledger against dynalite, through a counting proxy: claims, completes one by one and in batches, and
 * what a complete says when another worker took the claim over.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { createDynamoLedger, type Claim, type EffectLedger } from '../../src/aws/effect-ledger.ts';
import { systemClock } from '../../src/clock.ts';
import { clientConfig, startStack, type TestStack } from '../harness/emulators.ts';
import { startFaultProxy, type FaultProxy } from '../harness/faults.ts';

const TABLE = 'email-worker-idempotency';

describe('DynamoDB effect ledger', () => {
  let stack: TestStack;
  let proxy: FaultProxy;
  let agent: http.Agent;
  let ddb: DynamoDBDocumentClient;
  let ledger: EffectLedger;
  let keyCounter = 0;

  before(async () => {
    stack = await startStack({ tables: true });
    proxy = await startFaultProxy(stack.endpoints.dynamodb);
    agent = new http.Agent({ keepAlive: true });
    ddb = DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig(proxy.endpoint, agent)));
    ledger = createDynamoLedger(ddb, { table: TABLE, clock: systemClock, leaseSeconds: 60 });
  });
  after(async () => {
    ddb.destroy();
    agent.destroy();
    await proxy.stop();
    await stack.stop();
  });

  /** Claims of `count` different messages, or of one message's `count` recipients. */
  async function claimFresh(count: number, sameMessage = false): Promise<Claim[]> {
    const claims: Claim[] = [];
    const message = ++keyCounter;
    for (let i = 0; i < count; i++) {
      const key = sameMessage
        ? `ses-${message}|user${i}@example.com|deliver`
        : `ses-${++keyCounter}|user@example.com|deliver`;
      const result = await ledger.claim(key);
      assert.equal(result.state, 'claimed');
      if (result.state === 'claimed') claims.push(result.claim);
    }
    return claims;
  }

  async function statusOf(key: string): Promise<unknown> {
    const { Item } = await stack.ddb.send(new GetCommand({ TableName: TABLE, Key: { pk: key } }));
    return Item?.status;
  }

  /** Another worker's takeover, as it looks in the table: the record now carries someone else's owner token. */
  async function takeOver(claim: Claim): Promise<void> {
    await stack.ddb.send(
      new UpdateCommand({
        TableName: TABLE,
        Key: { pk: claim.key },
        UpdateExpression: 'SET #o = :other',
        ExpressionAttributeNames: { '#o': 'owner' },
        ExpressionAttributeValues: { ':other': 'another-worker' },
      }),
    );
  }

  it('completes many claims of different messages in one BatchGetItem and one BatchWriteItem', async () => {
    const claims = await claimFresh(20);
    await takeOver(claims[7]!);
    const before = proxy.requests.length;
    const results = await Promise.all(claims.map((c) => ledger.complete(c)));
    const calls = proxy.requests.slice(before).map((r) => r.operation);

    assert.deepEqual(calls.sort(), ['BatchGetItem', 'BatchWriteItem'], 'two calls for twenty completes');
    assert.equal(results.filter((r) => r === 'completed').length, 19);
    assert.equal(results[7], 'lost', 'the claim another worker took over is reported lost');
    for (const [i, claim] of claims.entries()) {
      assert.equal(await statusOf(claim.key), i === 7 ? 'INPROGRESS' : 'COMPLETED', claim.key);
    }
  });

  it('completes the recipients of one message with concurrent UpdateItems: one round trip, not two', async () => {
    const claims = await claimFresh(10, true);
    const before = proxy.requests.length;
    const results = await Promise.all(claims.map((c) => ledger.complete(c)));
    assert.deepEqual(results, Array(10).fill('completed'));
    assert.deepEqual(
      proxy.requests.slice(before).map((r) => r.operation),
      Array(10).fill('UpdateItem'),
    );
  });

  it('completes a lone claim with one conditional UpdateItem', async () => {
    const [claim] = await claimFresh(1);
    const before = proxy.requests.length;
    assert.equal(await ledger.complete(claim!), 'completed');
    assert.deepEqual(
      proxy.requests.slice(before).map((r) => r.operation),
      ['UpdateItem'],
    );
    assert.equal(await statusOf(claim!.key), 'COMPLETED');
    const again = await ledger.claim(claim!.key);
    assert.equal(again.state, 'done', 'a completed effect is not claimed again');
  });

  it('reports a lone claim taken over as lost and leaves the other worker’s record alone', async () => {
    const [claim] = await claimFresh(1);
    await takeOver(claim!);
    assert.equal(await ledger.complete(claim!), 'lost');
    assert.equal(await statusOf(claim!.key), 'INPROGRESS');
  });

  it('retries a throttled batch write for every claim in it', async () => {
    const claims = await claimFresh(5);
    const rule = proxy.fail('BatchWriteItem', {
      status: 400,
      code: 'ProvisionedThroughputExceededException',
    });
    await assert.rejects(
      Promise.all(claims.map((c) => ledger.complete(c))),
      (error: Error & { temporary?: boolean }) => error.temporary === true,
    );
    assert.ok(rule.hits > 0, 'the throttle fired');
    proxy.clear(rule);
    const results = await Promise.all(claims.map((c) => ledger.complete(c)));
    assert.deepEqual(results, Array(5).fill('completed'));
  });
});
