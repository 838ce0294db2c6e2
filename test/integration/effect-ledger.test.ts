/**
 * The DynamoDB ledger against dynalite, through a counting proxy: one record per message, claimed with its marks in
 * one UpdateItem, completed in one batch for many messages while their leases hold (one conditional UpdateItem
 * otherwise), and what every write says when another worker took the message over. Time is a test clock, so a
 * lease runs out without waiting for it.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import {
  createDynamoLedger,
  effectName,
  legacyKey,
  messageKey,
  type Claim,
  type ClaimResult,
  type EffectLedger,
  type EffectMark,
} from '../../src/aws/effect-ledger.ts';
import type { Clock } from '../../src/clock.ts';
import { clientConfig, startStack, type TestStack } from '../harness/emulators.ts';
import { startFaultProxy, type FaultProxy } from '../harness/faults.ts';

const TABLE = 'email-worker-idempotency';

/** Real sleeps (the batch linger), a "now" the test moves. */
class TestClock implements Clock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
}

describe('DynamoDB effect ledger: one record per message', () => {
  let stack: TestStack;
  let proxy: FaultProxy;
  let agent: http.Agent;
  let ddb: DynamoDBDocumentClient;
  const clock = new TestClock();
  /** Lease 60 s: completes are batched (30 s of margin). */
  let ledger: EffectLedger;
  /** Lease 5 s: under the 10 s margin, so every complete is a conditional UpdateItem. */
  let shortLease: EffectLedger;
  let counter = 0;

  before(async () => {
    stack = await startStack({ tables: true });
    proxy = await startFaultProxy(stack.endpoints.dynamodb);
    agent = new http.Agent({ keepAlive: true });
    ddb = DynamoDBDocumentClient.from(new DynamoDBClient(clientConfig(proxy.endpoint, agent)));
    ledger = createDynamoLedger(ddb, { table: TABLE, clock, leaseSeconds: 60 });
    shortLease = createDynamoLedger(ddb, { table: TABLE, clock, leaseSeconds: 5 });
  });
  after(async () => {
    ddb.destroy();
    agent.destroy();
    await proxy.stop();
    await stack.stop();
  });

  const freshKey = () => messageKey(`ses-${++counter}`, 'example.com');
  const record = async (key: string) =>
    (await stack.ddb.send(new GetCommand({ TableName: TABLE, Key: { pk: key }, ConsistentRead: true }))).Item;
  const calls = (since: number) => proxy.requests.slice(since).map((r) => r.operation);

  async function claimed(l: EffectLedger, key: string, legacy = false) {
    const result: ClaimResult = await l.claim(key, { legacy });
    assert.equal(result.state, 'claimed');
    if (result.state !== 'claimed') throw new Error('not claimed');
    return result;
  }

  /** Another worker's takeover, as the table shows it: the record now carries someone else's owner token. */
  async function takeOver(key: string): Promise<void> {
    await stack.ddb.send(
      new UpdateCommand({
        TableName: TABLE,
        Key: { pk: key },
        UpdateExpression: 'SET #o = :other',
        ExpressionAttributeNames: { '#o': 'owner' },
        ExpressionAttributeValues: { ':other': 'another-worker' },
      }),
    );
  }

  it('a claim is one UpdateItem: it creates the record with the lease and an empty set of marks', async () => {
    const key = freshKey();
    const before = proxy.requests.length;
    const { claim, marks } = await claimed(ledger, key);
    assert.deepEqual(calls(before), ['UpdateItem']);
    assert.equal(marks.size, 0);
    assert.equal(claim.legacy, false);
    const item = await record(key);
    assert.equal(item?.owner, claim.token);
    assert.equal(item?.lease_until, claim.leaseUntil);
    assert.deepEqual(item?.effects, {});
    assert.ok(Number(item?.expires_at) > Date.now() / 1000 + 14 * 86_400, 'kept longer than SQS retention');
  });

  it('a message whose lease is live is busy for everyone else; once completed, the next claim reads its marks', async () => {
    const key = freshKey();
    const first = await claimed(ledger, key);
    assert.deepEqual(await ledger.claim(key, { legacy: false }), { state: 'busy' });
    const marks = new Map<string, EffectMark>([
      [effectName('a@example.com', 'deliver'), 'done'],
      [effectName('a@example.com', 'forward:x@far.test'), 'done'],
    ]);
    assert.equal(await shortLease.complete(first.claim, marks), 'completed');
    const item = await record(key);
    assert.equal(item?.owner, undefined, 'the lease was given back');
    const second = await claimed(ledger, key);
    assert.deepEqual([...second.marks], [...marks]);
  });

  it('completes of many messages go out as one BatchWriteItem, without reading the records first', async () => {
    const claims: Claim[] = [];
    for (let i = 0; i < 20; i++) claims.push((await claimed(ledger, freshKey())).claim);
    const before = proxy.requests.length;
    const done = new Map<string, EffectMark>([[effectName('u@example.com', 'deliver'), 'done']]);
    const results = await Promise.all(claims.map((c) => ledger.complete(c, done)));
    assert.deepEqual(results, Array(20).fill('completed'));
    assert.deepEqual(calls(before), ['BatchWriteItem'], 'one call for twenty messages');
    for (const c of claims) {
      const item = await record(c.key);
      assert.equal(item?.owner, undefined);
      assert.deepEqual(item?.effects, { 'u@example.com|deliver': 'done' });
      assert.equal(item?.expires_at, c.expiresAt);
    }
  });

  it('with less lease left than the margin, a complete is one UpdateItem conditional on the owner: lost after a takeover', async () => {
    const mine = await claimed(shortLease, freshKey());
    const taken = await claimed(shortLease, freshKey());
    await takeOver(taken.claim.key);
    const before = proxy.requests.length;
    const done = new Map<string, EffectMark>([['x@example.com|deliver', 'done']]);
    assert.equal(await shortLease.complete(mine.claim, done), 'completed');
    assert.equal(await shortLease.complete(taken.claim, done), 'lost');
    assert.deepEqual(calls(before), ['UpdateItem', 'UpdateItem']);
    assert.deepEqual((await record(mine.claim.key))?.effects, { 'x@example.com|deliver': 'done' });
    const other = await record(taken.claim.key);
    assert.equal(other?.owner, 'another-worker', "the other worker's record was not overwritten");
    assert.deepEqual(other?.effects, {});
  });

  it('mark writes only while the lease is ours, and renews it; renew is refused after a takeover', async () => {
    const { claim } = await claimed(shortLease, freshKey());
    clock.offsetMs += 2_000;
    const sending = effectName('a@example.com', 'forward:x@far.test');
    const marks = new Map<string, EffectMark>([
      [effectName('a@example.com', 'deliver'), 'done'],
      [sending, 'sending'],
    ]);
    assert.equal(await shortLease.mark(claim, marks), true);
    const item = await record(claim.key);
    assert.deepEqual(item?.effects, { 'a@example.com|deliver': 'done', [sending]: 'sending' });
    assert.equal(item?.lease_until, claim.leaseUntil, 'the lease moved with the mark');
    assert.ok(claim.leaseUntil >= Math.floor(clock.now() / 1000) + 5);
    assert.equal(await shortLease.renew(claim), true);

    await takeOver(claim.key);
    assert.equal(await shortLease.renew(claim), false);
    assert.equal(await shortLease.mark(claim, new Map([[sending, 'done']])), false);
    assert.equal((await record(claim.key))?.effects?.[sending], 'sending', 'untouched');
  });

  it('a lapsed lease is taken over with the marks the dead worker left (a "sending" mark stays)', async () => {
    const key = freshKey();
    const dead = await claimed(shortLease, key);
    const sending = effectName('a@example.com', 'forward:x@far.test');
    assert.equal(await shortLease.mark(dead.claim, new Map([[sending, 'sending']])), true);
    assert.deepEqual(await shortLease.claim(key, { legacy: false }), { state: 'busy' });
    clock.offsetMs += 6_000;
    const next = await claimed(shortLease, key);
    assert.notEqual(next.claim.token, dead.claim.token);
    assert.equal(next.marks.get(sending), 'sending');
    assert.equal(await shortLease.complete(dead.claim, new Map([[sending, 'done']])), 'lost');
  });

  it('the legacy flag is set when the record is created on a retry and kept by every later claim', async () => {
    const key = freshKey();
    const first = await claimed(shortLease, key, true);
    assert.equal(first.claim.legacy, true);
    await shortLease.complete(first.claim, new Map());
    const later = await claimed(shortLease, key, false);
    assert.equal(later.claim.legacy, true);
    const plain = await claimed(shortLease, freshKey(), false);
    assert.equal(plain.claim.legacy, false);
  });

  it('reads records of the first shape: COMPLETED is done, INPROGRESS live is busy, lapsed is lapsed', async () => {
    const id = `ses-legacy-${++counter}`;
    const now = Math.floor(clock.now() / 1000);
    const old = (name: string, item: Record<string, unknown>) =>
      stack.ddb.send(new PutCommand({ TableName: TABLE, Item: { pk: legacyKey(id, name), ...item } }));
    await old('a@example.com|deliver', { status: 'COMPLETED', expires_at: now + 86_400 });
    await old('b@example.com|deliver', {
      status: 'INPROGRESS',
      owner: 'old',
      in_progress_expiry: now + 60,
      expires_at: now + 86_400,
    });
    await old('a@example.com|forward:x@far.test', {
      status: 'INPROGRESS',
      owner: 'old',
      in_progress_expiry: now - 5,
      expires_at: now + 86_400,
    });
    await old('c@example.com|deliver', { status: 'COMPLETED', expires_at: now - 10 });
    const names = [
      'a@example.com|deliver',
      'b@example.com|deliver',
      'a@example.com|forward:x@far.test',
      'c@example.com|deliver',
      'd@example.com|deliver',
    ];
    const states = await ledger.legacy(names.map((n) => legacyKey(id, n)));
    assert.deepEqual(
      names.map((n) => states.get(legacyKey(id, n)) ?? 'none'),
      ['done', 'busy', 'lapsed', 'none', 'none'],
      'an expired record (TTL not yet applied) counts as gone',
    );
  });

  it('a throttled batch write fails every complete in it (temporarily); they complete when it clears', async () => {
    const claims: Claim[] = [];
    for (let i = 0; i < 5; i++) claims.push((await claimed(ledger, freshKey())).claim);
    const rule = proxy.fail('BatchWriteItem', {
      status: 400,
      code: 'ProvisionedThroughputExceededException',
    });
    const done = new Map<string, EffectMark>([['u@example.com|deliver', 'done']]);
    await assert.rejects(
      Promise.all(claims.map((c) => ledger.complete(c, done))),
      (error: Error & { temporary?: boolean }) => error.temporary === true,
    );
    assert.ok(rule.hits > 0, 'the throttle fired');
    proxy.clear(rule);
    assert.deepEqual(
      await Promise.all(claims.map((c) => ledger.complete(c, done))),
      Array(5).fill('completed'),
    );
    for (const c of claims) assert.equal((await record(c.key))?.owner, undefined);
  });
});
