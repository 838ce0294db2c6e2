/**
 * Exactly once, through the real pipeline (startRig) against the emulators: a redelivered notification is recognised
 * by the S3 metadata without the ledger, replays follow the CLI's contract, the ledger's claims carry an owner and a
 * lease the visibility heartbeat renews, an SES send whose outcome is unknown is never repeated, and the per-message
 * log line reports what really happened. Faults come from the fault proxy in front of an emulator (a mock nowhere).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { SendMessageCommand, type MessageAttributeValue } from '@aws-sdk/client-sqs';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import type { PipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import { countBySeq, DDB_THROTTLING, rawMail, startFaultProxy, type FaultProxy } from '../harness/faults.ts';
import { startRig, type LogLine, type Rig } from '../harness/pipeline-rig.ts';
import { putMail, sesMessageId, type PutMailResult } from '../harness/ses-events.ts';

const SOURCE = 'sender@external.test';
/** A fault the SDK does not retry by itself, so every injected failure is one failed call of the worker. */
const SQS_DENIED = { status: 400, code: 'AccessDenied', message: 'injected by the test' };
const LEDGER = 'email-worker-idempotency';

let stack: TestStack;
before(async () => {
  stack = await startStack({ tables: true });
});
after(() => stack?.stop());

interface TestRig {
  rig: Rig;
  ddb?: FaultProxy;
  sqs?: FaultProxy;
}

/** A rig for `domain` on the file's stack with its own queue, optionally behind fault proxies. */
async function rigFor(
  t: TestContext,
  domain: string,
  options: { env?: Record<string, string>; visibilityTimeout?: number; proxies?: Array<'ddb' | 'sqs'> } = {},
): Promise<TestRig> {
  await createDomainQueue(stack.sqs, domain, { visibilityTimeout: options.visibilityTimeout ?? 3 });
  const ddb = options.proxies?.includes('ddb') ? await startFaultProxy(stack.endpoints.dynamodb) : undefined;
  const sqs = options.proxies?.includes('sqs') ? await startFaultProxy(stack.endpoints.sqs) : undefined;
  const rig = await startRig({
    stack,
    domains: [domain],
    env: {
      ...(ddb && { AWS_ENDPOINT_URL_DYNAMODB: ddb.endpoint }),
      ...(sqs && { AWS_ENDPOINT_URL_SQS: sqs.endpoint }),
      ...options.env,
    },
  });
  t.after(async () => {
    await rig.stop();
    await Promise.all([ddb?.stop(), sqs?.stop()]);
  });
  return { rig, ...(ddb && { ddb }), ...(sqs && { sqs }) };
}

function put(domain: string, seq: string, to: string, messageId = sesMessageId()): Promise<PutMailResult> {
  return putMail(stack, {
    domain,
    raw: rawMail(seq, to),
    recipients: [to],
    source: SOURCE,
    shape: 'sns-s3',
    messageId,
  });
}

/** Enqueues the same notification again, as SNS redelivering it would, or as the CLI's replay does. */
async function sendAgain(
  p: PutMailResult,
  attributes?: Record<string, MessageAttributeValue>,
): Promise<void> {
  await stack.sqs.send(
    new SendMessageCommand({ QueueUrl: p.queueUrl, MessageBody: p.body, MessageAttributes: attributes }),
  );
}

const replay = (generation?: string): Record<string, MessageAttributeValue> => ({
  'uw-replay': { DataType: 'String', StringValue: 'true' },
  ...(generation !== undefined && {
    'uw-replay-generation': { DataType: 'Number', StringValue: generation },
  }),
});

async function nthOutcome(rig: Rig, id: string, n: number, timeoutMs = 45_000): Promise<LogLine> {
  await waitUntil(() => rig.outcomes(id).length >= n, timeoutMs, `outcome #${n} of ${id}`, 50);
  return rig.outcomes(id)[n - 1] as LogLine;
}

async function drained(queueUrl: string): Promise<boolean> {
  const counts = await queueCounts(stack.sqs, queueUrl);
  return counts.visible === 0 && counts.inFlight === 0;
}

const copies = (rig: Rig, seq: string) => countBySeq(rig.mailbox.messages).get(seq) ?? 0;

/** The delivery id the copy carries (its first header line). */
function deliveryIdOf(raw: Buffer): string {
  const id = /^X-SES-Worker-Delivery-Id: (\S+)\r\n/.exec(raw.toString('latin1', 0, 200))?.[1];
  assert.ok(id, 'the copy starts with X-SES-Worker-Delivery-Id');
  return id;
}

async function metric(
  metrics: PipelineMetrics,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const values = (await metrics.registry.getSingleMetric(name)?.get())?.values ?? [];
  return values
    .filter((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value))
    .reduce((sum, v) => sum + v.value, 0);
}

describe('exactly once', { concurrency: true }, () => {
  it('a redelivered notification of a processed mail is deleted without delivering again, even without the ledger', async (t) => {
    const domain = 'dup.test';
    const to = `user@${domain}`;
    const { rig } = await rigFor(t, domain, { env: { IDEMPOTENCY_TABLE: 'none' } });
    const p = await put(domain, 'dup-1', to);
    assert.equal((await nthOutcome(rig, p.messageId, 1)).status, 'delivered');
    await sendAgain(p);
    const again = await nthOutcome(rig, p.messageId, 2);
    assert.equal(again.status, 'duplicate');
    assert.equal(again.disposition, 'delete');
    assert.match(String(again.reason), /already processed \(S3 metadata status=delivered\)/);
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    assert.equal(copies(rig, 'dup-1'), 1);
    assert.equal(await metric(rig.metrics, 'ses_worker_emails_processed_total', { outcome: 'duplicate' }), 1);
  });

  it('replays: uw-replay skips the shortcut and the ledger skips what was done; --force (a generation) delivers again, once', async (t) => {
    const domain = 'replay.test';
    const to = `user@${domain}`;
    const { rig } = await rigFor(t, domain);
    const p = await put(domain, 'replay-1', to);
    assert.equal((await nthOutcome(rig, p.messageId, 1)).status, 'delivered');
    const firstId = deliveryIdOf(rig.mailbox.messages[0]?.raw ?? Buffer.alloc(0));

    await sendAgain(p, replay());
    const plain = await nthOutcome(rig, p.messageId, 2);
    assert.equal(plain.status, 'delivered', 'not taken as a duplicate');
    assert.equal(plain.recipients?.[0]?.detail, 'delivered by an earlier attempt');
    assert.equal(copies(rig, 'replay-1'), 1);

    await sendAgain(p, replay('1'));
    const forced = await nthOutcome(rig, p.messageId, 3);
    assert.equal(forced.status, 'delivered');
    await waitUntil(() => copies(rig, 'replay-1') === 2, 5_000, 'the forced copy');
    const forcedId = deliveryIdOf(rig.mailbox.messages[1]?.raw ?? Buffer.alloc(0));
    assert.notEqual(forcedId, firstId, 'a forced replay is a new delivery at the mailbox too');
    const item = await stack.ddb.send(
      new GetCommand({ TableName: LEDGER, Key: { pk: `${p.messageId}#1|${to}|deliver` } }),
    );
    assert.equal(item.Item?.status, 'COMPLETED');

    await sendAgain(p, replay('1'));
    await sendAgain(p, replay('not-a-number'));
    await nthOutcome(rig, p.messageId, 5);
    assert.ok(rig.logs.some((l) => l.msg.startsWith('replay generation is not an integer >= 1')));
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    assert.equal(copies(rig, 'replay-1'), 2, 'the same generation again, or a bad one, delivers nothing new');
  });

  it('an SES send whose outcome is unknown (500) is recorded failed and completed in the ledger: never sent again', async (t) => {
    const domain = 'sesunknown.test';
    const to = `fwd@${domain}`;
    const target = 'far-away@external.test';
    const { rig } = await rigFor(t, domain);
    await stack.ddb.send(
      new PutCommand({ TableName: 'email-rules', Item: { email_address: to, forwards: [target] } }),
    );
    const attemptsBefore = stack.ses.sendAttempts;
    stack.ses.failNext(1, { status: 500, code: 'InternalFailure' });
    const p = await put(domain, 'ses-500', to);
    const first = await nthOutcome(rig, p.messageId, 1);
    assert.equal(stack.ses.sendAttempts - attemptsBefore, 1, 'SendEmail tried once: no SDK or app retry');
    assert.equal(first.disposition, 'delete', 'final: the forward may have gone out');
    assert.equal(first.effects?.[0]?.status, 'failed');
    assert.match(String(first.effects?.[0]?.reason), /SES_OUTCOME_UNKNOWN: .*not resent/);
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket: p.bucket, Key: p.key }));
    assert.equal(head.Metadata?.failed_effects, `forward:${target}`);
    const item = await stack.ddb.send(
      new GetCommand({ TableName: LEDGER, Key: { pk: `${p.messageId}|${to}|forward:${target}` } }),
    );
    assert.equal(item.Item?.status, 'COMPLETED', 'so no retry resends it');

    await sendAgain(p, replay());
    const replayed = await nthOutcome(rig, p.messageId, 2);
    assert.equal(replayed.effects?.[0]?.status, 'done-before');
    assert.equal(stack.ses.sendAttempts - attemptsBefore, 1, 'the replay sent nothing');
  });

  it('the heartbeat renews the claim of a slow delivery: a duplicate notification meets a live claim, not an expired one', async (t) => {
    const domain = 'lease-renew.test';
    const to = `user@${domain}`;
    // Visibility 3 s: the lease is max(5, 3) = 5 s, the heartbeat beats every second. DATA takes 9 s.
    const { rig: slow } = await rigFor(t, domain);
    const other = await startRig({ stack, domains: [domain] });
    t.after(() => other.stop());
    slow.mailbox.setDataDelay(9_000);
    other.mailbox.setDataDelay(9_000);
    const p = await put(domain, 'lease', to);
    const sinks = () => copies(slow, 'lease') + copies(other, 'lease');
    // Whichever rig took the notification holds the claim while its sink sits in DATA.
    await waitUntil(
      () => slow.mailbox.openConnections + other.mailbox.openConnections > 0,
      10_000,
      'DATA',
      20,
    );
    const dataStarted = Date.now();
    // Past the 5 s lease: without renewal the claim would have expired and the duplicate would deliver again.
    await new Promise((resolve) => setTimeout(resolve, 6_500));
    await sendAgain(p);
    const sentAfterMs = Date.now() - dataStarted;
    await waitUntil(() => sinks() > 0, 15_000, 'the slow delivery', 50);
    await waitUntil(() => drained(p.queueUrl), 30_000, 'queue drained', 100);
    const outcomes = [...slow.outcomes(p.messageId), ...other.outcomes(p.messageId)];
    const busy = outcomes.find((l) => l.recipients?.[0]?.detail === 'being delivered by another worker');
    t.diagnostic(
      `duplicate sent ${sentAfterMs} ms after DATA began (lease 5 s); outcomes ` +
        JSON.stringify(outcomes.map((l) => [l.status, l.recipients?.[0]?.detail])),
    );
    assert.ok(busy, 'the duplicate found the claim live (renewed past its 5 s lease)');
    assert.equal(sinks(), 1);
  });

  it('a complete whose claim was taken over is logged at error and counted, never silently accepted', async (t) => {
    const domain = 'takeover.test';
    const to = `user@${domain}`;
    const { rig } = await rigFor(t, domain);
    rig.mailbox.setDataDelay(2_500);
    const id = sesMessageId();
    const p = await put(domain, 'takeover', to, id);
    await waitUntil(() => rig.mailbox.openConnections > 0, 10_000, 'DATA', 20);
    // What another worker taking the claim over leaves: the same key, another owner.
    const now = Math.floor(Date.now() / 1000);
    await stack.ddb.send(
      new PutCommand({
        TableName: LEDGER,
        Item: {
          pk: `${id}|${to}|deliver`,
          status: 'INPROGRESS',
          owner: 'someone-else',
          in_progress_expiry: now + 60,
          expires_at: now + 86_400,
        },
      }),
    );
    const outcome = await nthOutcome(rig, id, 1);
    assert.equal(outcome.recipients?.[0]?.state, 'delivered', 'the mail server did accept it');
    assert.ok(rig.logs.some((l) => l.level === 'error' && /no longer ours/.test(l.msg)));
    assert.ok((await metric(rig.metrics, 'ses_worker_ledger_errors_total', { operation: 'complete' })) >= 1);
    const item = await stack.ddb.send(
      new GetCommand({ TableName: LEDGER, Key: { pk: `${id}|${to}|deliver` } }),
    );
    assert.equal(item.Item?.owner, 'someone-else', "the other worker's record was not overwritten");
    assert.equal(item.Item?.status, 'INPROGRESS');
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
  });

  it('after a late fault (a throttled claim for a forward), the log line shows the recipient delivered', async (t) => {
    const domain = 'late.test';
    const to = `fwd@${domain}`;
    const target = `carol@${domain}`;
    const { rig, ddb } = await rigFor(t, domain, { proxies: ['ddb'] });
    assert.ok(ddb);
    await stack.ddb.send(
      new PutCommand({ TableName: 'email-rules', Item: { email_address: to, forwards: [target] } }),
    );
    const id = sesMessageId();
    const rule = ddb.fail(
      (r) => r.operation === 'PutItem' && (r.body ?? '').includes(`${id}|${to}|forward:`),
      DDB_THROTTLING,
    );
    const p = await put(domain, 'late', to, id);
    const first = await nthOutcome(rig, id, 1);
    assert.ok(rule.hits > 0, 'the claim was throttled');
    ddb.clear(rule);
    assert.equal(first.disposition, 'retry');
    assert.deepEqual(
      first.recipients?.map((r) => [r.recipient, r.state]),
      [[to, 'delivered']],
    );
    assert.equal(first.effects?.[0]?.status, 'deferred');
    assert.match(String(first.effects?.[0]?.reason), /PutItem/);
    const second = await nthOutcome(rig, id, 2);
    assert.equal(second.recipients?.[0]?.detail, 'delivered by an earlier attempt');
    assert.equal(second.effects?.[0]?.status, 'sent');
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    assert.equal(copies(rig, 'late'), 1);
    assert.equal(countBySeq(rig.internal.messages).get('late'), 1, 'one forward');
  });

  it('failed heartbeats and failed deletes are counted; the undeleted message is recognised and not delivered again', async (t) => {
    const domain = 'sqsfault.test';
    const to = `user@${domain}`;
    const { rig, sqs } = await rigFor(t, domain, { proxies: ['sqs'] });
    assert.ok(sqs);
    // Long enough for a heartbeat (every second) to fail, short enough to finish within the 3 s visibility on a
    // loaded machine: the second receive must come after the audit, as a lost delete's would.
    rig.mailbox.setDataDelay(1_500);
    const beats = sqs.fail(
      (r) => r.operation === 'ChangeMessageVisibility' && /"VisibilityTimeout":3[,}]/.test(r.body ?? ''),
      SQS_DENIED,
    );
    const deletes = sqs.fail('DeleteMessageBatch', SQS_DENIED, 1);
    const p = await put(domain, 'sqsfault', to);
    await nthOutcome(rig, p.messageId, 1);
    await waitUntil(() => deletes.hits > 0, 5_000, 'the failed delete');
    assert.ok(beats.hits > 0, 'heartbeats failed');
    sqs.clear(beats);
    rig.mailbox.setDataDelay(0);
    assert.equal(
      await metric(rig.metrics, 'ses_worker_visibility_heartbeat_failures_total', { domain }),
      beats.hits,
    );
    await waitUntil(
      async () => (await metric(rig.metrics, 'ses_worker_sqs_delete_failures_total', { domain })) === 1,
      5_000,
      'the delete failure counted',
    );
    const again = await nthOutcome(rig, p.messageId, 2);
    assert.equal(again.status, 'duplicate');
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    assert.equal(copies(rig, 'sqsfault'), 1);
  });
});
