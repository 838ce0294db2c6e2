/**
 * Exactly once, through the real pipeline (startRig) against the emulators: a redelivered notification is recognised
 * by the S3 metadata without the ledger, replays follow the CLI's contract, the ledger's claims carry an owner and a
 * lease the visibility heartbeat renews, an SES send whose outcome is unknown is never repeated, and the per-message
 * log line reports what really happened. Faults come from the fault proxy in front of an emulator (a mock nowhere).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import {
  ChangeMessageVisibilityCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type MessageAttributeValue,
} from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { effectName, legacyKey, messageKey } from '../../src/aws/effect-ledger.ts';
import type { PipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import { countBySeq, DDB_THROTTLING, rawMail, startFaultProxy, type FaultProxy } from '../harness/faults.ts';
import { ledgerRecord } from '../harness/ledger-record.ts';
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
    const forcedRecord = await ledgerRecord(stack, p.messageId, domain, 1);
    assert.equal(forcedRecord?.effects?.[effectName(to, 'deliver')], 'done', 'a record of its own');

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
    const record = await ledgerRecord(stack, p.messageId, domain);
    assert.equal(record?.effects?.[effectName(to, `forward:${target}`)], 'done', 'so no retry resends it');

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
    // What another worker taking the message over leaves: the same record, another owner and lease.
    const now = Math.floor(Date.now() / 1000);
    await stack.ddb.send(
      new PutCommand({
        TableName: LEDGER,
        Item: {
          pk: messageKey(id, domain),
          owner: 'someone-else',
          lease_until: now + 60,
          expires_at: now + 86_400,
          effects: {},
          legacy: false,
        },
      }),
    );
    const outcome = await nthOutcome(rig, id, 1);
    assert.equal(outcome.recipients?.[0]?.state, 'delivered', 'the mail server did accept it');
    assert.ok(rig.logs.some((l) => l.level === 'error' && /no longer ours/.test(l.msg)));
    assert.ok((await metric(rig.metrics, 'ses_worker_ledger_errors_total', { operation: 'complete' })) >= 1);
    const record = await ledgerRecord(stack, id, domain);
    assert.equal(record?.owner, 'someone-else', "the other worker's record was not overwritten");
    assert.deepEqual(record?.effects, {});
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
  });

  it('after a late fault (the ledger cannot mark an SES send as starting), the forward waits unsent and the log line shows the recipient delivered', async (t) => {
    const domain = 'late.test';
    const to = `fwd@${domain}`;
    const target = 'carol@external.test';
    const { rig, ddb } = await rigFor(t, domain, { proxies: ['ddb'] });
    assert.ok(ddb);
    await stack.ddb.send(
      new PutCommand({ TableName: 'email-rules', Item: { email_address: to, forwards: [target] } }),
    );
    const id = sesMessageId();
    const sendsBefore = stack.ses.sent.filter((m) => m.destinations.includes(target)).length;
    // The mark before an SES send: an UpdateItem of this message's record that writes a "sending" mark.
    const rule = ddb.fail(
      (r) =>
        r.operation === 'UpdateItem' && (r.body ?? '').includes(id) && (r.body ?? '').includes('"sending"'),
      DDB_THROTTLING,
    );
    const p = await put(domain, 'late', to, id);
    const first = await nthOutcome(rig, id, 1);
    assert.ok(rule.hits > 0, 'the mark was throttled');
    ddb.clear(rule);
    assert.equal(first.disposition, 'retry');
    assert.deepEqual(
      first.recipients?.map((r) => [r.recipient, r.state]),
      [[to, 'delivered']],
    );
    assert.equal(first.effects?.[0]?.status, 'deferred');
    assert.match(String(first.effects?.[0]?.reason), /not sent: the ledger could not record the send/);
    assert.equal(
      stack.ses.sent.filter((m) => m.destinations.includes(target)).length,
      sendsBefore,
      'nothing sent',
    );
    const second = await nthOutcome(rig, id, 2);
    assert.equal(second.recipients?.[0]?.detail, 'delivered by an earlier attempt');
    assert.equal(second.effects?.[0]?.status, 'sent');
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    assert.equal(copies(rig, 'late'), 1);
    assert.equal(
      stack.ses.sent.filter((m) => m.destinations.includes(target)).length,
      sendsBefore + 1,
      'one forward',
    );
  });

  it("the ledger's last write failing, with a second recipient deferred: the forward and auto-reply SES accepted are not sent again", async (t) => {
    const domain = 'sendonce.test';
    const alice = `alice@${domain}`;
    const bob = `bob@${domain}`;
    const target = 'far@sendonce-external.test';
    const { rig, ddb } = await rigFor(t, domain, { proxies: ['ddb'] });
    assert.ok(ddb);
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: alice, forwards: [target], ooo_active: true, ooo_message: 'Away.' },
      }),
    );
    const id = sesMessageId();
    // The attempt's last write (visibility 3 s: lease 5 s, so one UpdateItem that gives the lease back) fails every
    // time: after five tries the lease is no longer renewed and runs out long before the retry 30 s later.
    const complete = ddb.fail(
      (r) => r.operation === 'UpdateItem' && (r.body ?? '').includes(id) && (r.body ?? '').includes('REMOVE'),
      DDB_THROTTLING,
    );
    rig.mailbox.setRcptReply(bob, { code: 451, message: '4.2.1 Mailbox busy, try again' });
    const sentTo = (address: string) => stack.ses.sent.filter((m) => m.destinations.includes(address)).length;
    const p = await putMail(stack, {
      domain,
      raw: rawMail('sendonce', alice),
      recipients: [alice, bob],
      source: SOURCE,
      shape: 'sns-s3',
      messageId: id,
    });
    const first = await nthOutcome(rig, id, 1);
    // Five tries, each with the SDK's own retries of a throttle.
    assert.ok(complete.hits >= 5, `the last write failed ${complete.hits} times`);
    ddb.clear(complete);
    rig.mailbox.setRcptReply(bob, undefined);
    assert.equal(first.disposition, 'retry');
    assert.deepEqual(
      first.recipients?.map((r) => [r.recipient, r.state]),
      [
        [alice, 'delivered'],
        [bob, 'deferred'],
      ],
    );
    assert.deepEqual(first.effects?.map((e) => [e.kind, e.status]).sort(), [
      ['autoreply', 'sent'],
      ['forward', 'sent'],
    ]);
    assert.equal(sentTo(target), 1);
    assert.equal(sentTo(SOURCE), 1);
    const record = await ledgerRecord(stack, id, domain);
    assert.equal(
      record?.effects?.[effectName(alice, `forward:${target}`)],
      'sending',
      'marked before the send',
    );

    const second = await nthOutcome(rig, id, 2);
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    t.diagnostic(
      `second receive: ${JSON.stringify(second.effects?.map((e) => [e.kind, e.status, e.reason]))}`,
    );
    assert.equal(second.status, 'delivered');
    assert.deepEqual(
      second.recipients?.map((r) => [r.recipient, r.state, r.detail ?? '']),
      [
        [alice, 'delivered', 'delivered by an earlier attempt'],
        [bob, 'delivered', second.recipients?.[1]?.detail ?? ''],
      ],
    );
    for (const effect of second.effects ?? []) {
      assert.equal(effect.status, 'failed', `${effect.kind}: maybe sent, recorded failed`);
      assert.match(String(effect.reason), /SES_OUTCOME_UNKNOWN: .*not resent/);
    }
    assert.equal(sentTo(target), 1, 'the forward SES accepted was sent again');
    assert.equal(sentTo(SOURCE), 1, 'the auto-reply SES accepted was sent again');
    const delivered = (address: string) => rig.mailbox.messages.filter((m) => m.to.includes(address)).length;
    assert.equal(delivered(alice), 1);
    assert.equal(delivered(bob), 1);
  });

  it('upgrading mid-flight: a message an old worker began (records of the first shape) repeats nothing it did, and a lapsed SES send counts as maybe sent', async (t) => {
    const domain = 'upgrade.test';
    const alice = `alice@${domain}`;
    const bob = `bob@${domain}`;
    const lapsed = 'lapsed@upgrade-external.test';
    const done = 'done@upgrade-external.test';
    const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3 });
    await stack.ddb.send(
      new PutCommand({ TableName: 'email-rules', Item: { email_address: alice, forwards: [lapsed, done] } }),
    );
    const now = Math.floor(Date.now() / 1000);
    const old = (id: string, name: string, item: Record<string, unknown>) =>
      stack.ddb.send(
        new PutCommand({
          TableName: LEDGER,
          Item: { pk: legacyKey(id, name), expires_at: now + 86_400, ...item },
        }),
      );
    const completed = { status: 'COMPLETED', completed_at: now - 60 };
    const crashed = { status: 'INPROGRESS', owner: 'old-worker', in_progress_expiry: now - 30 };

    // In flight: the old worker delivered to alice and sent one forward, claimed the other and died; bob is owed.
    const inFlight = sesMessageId();
    await old(inFlight, effectName(alice, 'deliver'), completed);
    await old(inFlight, effectName(alice, `forward:${done}`), completed);
    await old(inFlight, effectName(alice, `forward:${lapsed}`), crashed);
    await putMail(stack, {
      domain,
      raw: rawMail('upgrade', alice),
      recipients: [alice, bob],
      source: SOURCE,
      shape: 'sns-s3',
      messageId: inFlight,
      queueUrl,
    });
    // The old worker's receive: the new one gets the message with ApproximateReceiveCount 2.
    const { Messages = [] } = await stack.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 2 }),
    );
    assert.equal(Messages.length, 1);
    await stack.sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: queueUrl,
        ReceiptHandle: Messages[0]?.ReceiptHandle,
        VisibilityTimeout: 0,
      }),
    );
    // Done: the old worker finished a mail; it is replayed after the upgrade (uw-replay: receive count 1).
    const finished = sesMessageId();
    await old(finished, effectName(alice, 'deliver'), completed);
    await old(finished, effectName(alice, `forward:${done}`), completed);
    await old(finished, effectName(alice, `forward:${lapsed}`), completed);
    // Its notification was handled and deleted long ago: stored aside, only the replay below reaches the queue.
    const aside = await createDomainQueue(stack.sqs, 'upgrade-aside.test');
    const replayed = await putMail(stack, {
      domain,
      raw: rawMail('upgrade-replay', alice),
      recipients: [alice],
      source: SOURCE,
      shape: 'sns-s3',
      messageId: finished,
      queueUrl: aside.queueUrl,
    });

    const sentTo = (address: string) => stack.ses.sent.filter((m) => m.destinations.includes(address)).length;
    const { rig } = await rigFor(t, domain);
    const outcome = await nthOutcome(rig, inFlight, 1);
    t.diagnostic(JSON.stringify({ recipients: outcome.recipients, effects: outcome.effects }));
    assert.equal(outcome.receiveCount, 2, 'precondition: received as a retry');
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(
      outcome.recipients?.map((r) => [r.recipient, r.detail === 'delivered by an earlier attempt']),
      [
        [alice, true],
        [bob, false],
      ],
    );
    const byTarget = new Map(outcome.effects?.map((e) => [e.target, e]));
    assert.equal(byTarget.get(done)?.status, 'done-before');
    assert.equal(byTarget.get(lapsed)?.status, 'failed');
    assert.match(String(byTarget.get(lapsed)?.reason), /SES_OUTCOME_UNKNOWN/);
    const record = await ledgerRecord(stack, inFlight, domain);
    assert.deepEqual(record?.effects, {
      [effectName(alice, 'deliver')]: 'done',
      [effectName(bob, 'deliver')]: 'done',
      [effectName(alice, `forward:${done}`)]: 'done',
      [effectName(alice, `forward:${lapsed}`)]: 'sending',
    });

    await stack.sqs.send(
      new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: replayed.body, MessageAttributes: replay() }),
    );
    const again = await nthOutcome(rig, finished, 1);
    assert.equal(again.recipients?.[0]?.detail, 'delivered by an earlier attempt');
    assert.deepEqual(
      again.effects?.map((e) => e.status),
      ['done-before', 'done-before'],
    );
    await waitUntil(() => drained(queueUrl), 10_000, 'queue drained', 100);
    const delivered = (address: string) => rig.mailbox.messages.filter((m) => m.to.includes(address)).length;
    assert.equal(delivered(alice), 0, 'the old worker had delivered to alice');
    assert.equal(delivered(bob), 1);
    assert.equal(sentTo(done) + sentTo(lapsed), 0, 'no forward sent again');
  });

  it('failed heartbeats and failed deletes are counted; the undeleted message is recognised and not delivered again', async (t) => {
    const domain = 'sqsfault.test';
    const to = `user@${domain}`;
    const { rig, sqs } = await rigFor(t, domain, { proxies: ['sqs'], visibilityTimeout: 6 });
    assert.ok(sqs);
    // Long enough for a heartbeat (every 2 s) to fail, short enough to finish well within the 6 s visibility on a
    // loaded machine: the second receive must come after the audit, as a lost delete's would.
    rig.mailbox.setDataDelay(2_500);
    const beats = sqs.fail(
      (r) => r.operation === 'ChangeMessageVisibility' && /"VisibilityTimeout":6[,}]/.test(r.body ?? ''),
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
