/**
 * Silent connections: a proxy in front of one service reads chosen requests and never answers them, as a dropped NAT
 * entry or a dead load-balancer node does. For each service the worker must give the call up at its deadline, retry
 * where that is safe, deliver the mail that arrived meanwhile exactly once, go on serving later mail, and not keep
 * the silent connections open. The proxy is a mock of the network path only: behind it the emulators answer as
 * usual (no emulator can be made to go silent).
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { DELIVERY_ID_HEADER } from '../../src/pipeline/delivery-id.ts';
import { queueCounts, startStack, waitUntil, type TestStack } from '../harness/emulators.ts';
import {
  countBySeq,
  rawMail,
  startFaultProxy,
  tally,
  type FaultProxy,
  type ProxiedRequest,
} from '../harness/faults.ts';
import { startRig, type Rig } from '../harness/pipeline-rig.ts';
import { putMail } from '../harness/ses-events.ts';

const SOURCE = 'sender@external.test';
/** Every call's deadline, short so the suite is quick; long polls get WAIT_TIME_SECONDS (1) on top. */
const DEADLINES = { AWS_CALL_TIMEOUT_MS: '1000', AWS_IDLE_TIMEOUT_MS: '2000' };

type Service = 's3' | 'dynamodb' | 'sqs' | 'ses';

interface SilentRig {
  rig: Rig;
  stack: TestStack;
  proxy: FaultProxy;
  domain: string;
}

async function silentRig(
  t: TestContext,
  domain: string,
  service: Service,
  env: Record<string, string> = {},
): Promise<SilentRig> {
  const stack = await startStack({
    tables: true,
    domains: [domain],
    queueOptions: { visibilityTimeout: 4, withDlq: true, maxReceiveCount: 10 },
  });
  const proxy = await startFaultProxy(stack.endpoints[service]);
  const variable = {
    s3: 'AWS_ENDPOINT_URL_S3',
    dynamodb: 'AWS_ENDPOINT_URL_DYNAMODB',
    sqs: 'AWS_ENDPOINT_URL_SQS',
    ses: 'AWS_ENDPOINT_URL_SES',
  }[service];
  const rig = await startRig({
    stack,
    domains: [domain],
    env: { [variable]: proxy.endpoint, ...DEADLINES, RETRY_DELAYS_SECONDS: '1', ...env },
  });
  t.after(async () => {
    await rig.stop();
    await proxy.stop();
    await stack.stop();
  });
  await waitUntil(
    () => rig.runtimes.get(domain)?.poller.getStatus().lastPollAt !== undefined,
    15_000,
    'the domain polling',
  );
  return { rig, stack, proxy, domain };
}

async function send(
  s: SilentRig,
  seqs: readonly string[],
  to = `user@${s.domain}`,
): Promise<Map<string, number>> {
  const sentAt = new Map<string, number>();
  await Promise.all(
    seqs.map(async (seq) => {
      sentAt.set(seq, Date.now());
      await putMail(s.stack, {
        domain: s.domain,
        raw: rawMail(seq, to),
        recipients: [to],
        source: SOURCE,
        shape: 'sns-s3',
      });
    }),
  );
  return sentAt;
}

/**
 * Waits until every mail is in the mailbox and the queue is empty, then checks each is there exactly once; returns
 * the longest time from sending to delivery.
 */
async function deliveredOnce(
  s: SilentRig,
  sentAt: ReadonlyMap<string, number>,
  timeoutMs: number,
): Promise<number> {
  const seqs = [...sentAt.keys()];
  const deliveredAt = new Map<string, number>();
  await waitUntil(
    () => {
      for (const seq of countBySeq(s.rig.mailbox.messages).keys())
        if (!deliveredAt.has(seq)) deliveredAt.set(seq, Date.now());
      return seqs.every((seq) => deliveredAt.has(seq));
    },
    timeoutMs,
    `all of ${seqs.join(', ')} delivered`,
    50,
  );
  const queueUrl = s.stack.queues[s.domain]?.queueUrl ?? '';
  await waitUntil(
    async () => {
      const c = await queueCounts(s.stack.sqs, queueUrl);
      return c.visible === 0 && c.inFlight === 0;
    },
    20_000,
    'queue drained',
    100,
  );
  const result = tally(seqs, countBySeq(s.rig.mailbox.messages));
  assert.deepEqual(result.missing, []);
  assert.deepEqual(result.duplicated, [], 'a mail was stored twice');
  return Math.max(...seqs.map((seq) => (deliveredAt.get(seq) ?? 0) - (sentAt.get(seq) ?? 0)));
}

/** The client gave every silent connection up: none is left open. */
async function noneLeftOpen(proxy: FaultProxy): Promise<void> {
  await waitUntil(
    () => proxy.openSilentConnections() === 0,
    10_000,
    'the silent connections closed by the client',
  );
}

/** Matches the `times` next requests of `operation`, from now on. */
function next(operation: string, filter: (r: ProxiedRequest) => boolean = () => true) {
  return (r: ProxiedRequest) => r.operation === operation && filter(r);
}

describe(
  'a silent connection costs a bounded delay, never a mail, never a second copy',
  { concurrency: 2 },
  () => {
    it('DynamoDB: the ledger claim and the rules read go silent', async (t) => {
      const s = await silentRig(t, 'ddb.silent.test', 'dynamodb');
      const silence = s.proxy.silence((r) => ['PutItem', 'BatchGetItem'].includes(r.operation), 6);
      const during = await send(s, ['ddb-1', 'ddb-2']);
      const delay = await deliveredOnce(s, during, 30_000);
      assert.ok(silence.hits > 0, 'no DynamoDB call was held: the precondition failed');
      const after = await send(s, ['ddb-3']);
      await deliveredOnce(s, after, 10_000);
      await noneLeftOpen(s.proxy);
      t.diagnostic(
        `DynamoDB: ${silence.hits} calls held; mail sent during the silence delivered within ${delay} ms`,
      );
    });

    it('S3 GetObject goes silent', async (t) => {
      const s = await silentRig(t, 'get.silent.test', 's3');
      const silence = s.proxy.silence(next('GetObject'), 4);
      const during = await send(s, ['get-1', 'get-2']);
      const delay = await deliveredOnce(s, during, 30_000);
      assert.ok(silence.hits > 0, 'no GetObject was held');
      await deliveredOnce(s, await send(s, ['get-3']), 10_000);
      await noneLeftOpen(s.proxy);
      t.diagnostic(`S3 GetObject: ${silence.hits} calls held; delivered within ${delay} ms`);
    });

    it('S3 CopyObject (the audit) goes silent: the mail is delivered once, later mail is audited', async (t) => {
      // Without the ledger every verdict is written onto the object (with it, a plain delivery's is in its record).
      const s = await silentRig(t, 'copy.silent.test', 's3', { IDEMPOTENCY_TABLE: 'none' });
      const silence = s.proxy.silence(next('CopyObject'), 3);
      const during = await send(s, ['copy-1']);
      const delay = await deliveredOnce(s, during, 30_000);
      assert.ok(silence.hits > 0, 'no CopyObject was held');
      const copiesBefore = s.proxy.count('CopyObject');
      await deliveredOnce(s, await send(s, ['copy-2']), 10_000);
      await waitUntil(() => s.proxy.count('CopyObject') > copiesBefore, 5_000, 'the later mail audited');
      await noneLeftOpen(s.proxy);
      t.diagnostic(`S3 CopyObject: ${silence.hits} calls held; delivered within ${delay} ms`);
    });

    it('SQS ReceiveMessage goes silent: the long poll is given up at its wait plus the deadline', async (t) => {
      const s = await silentRig(t, 'recv.silent.test', 'sqs');
      const silence = s.proxy.silence(next('ReceiveMessage'), 3);
      await waitUntil(() => silence.hits >= 1, 5_000, 'a held receive');
      const during = await send(s, ['recv-1', 'recv-2']);
      const delay = await deliveredOnce(s, during, 30_000);
      await deliveredOnce(s, await send(s, ['recv-3']), 10_000);
      await noneLeftOpen(s.proxy);
      t.diagnostic(`SQS ReceiveMessage: ${silence.hits} calls held; delivered within ${delay} ms`);
    });

    it('SQS DeleteMessageBatch goes silent: the delivered mail comes back and is recognised, not delivered again', async (t) => {
      const s = await silentRig(t, 'del.silent.test', 'sqs');
      const silence = s.proxy.silence(next('DeleteMessageBatch'), 3);
      const during = await send(s, ['del-1', 'del-2']);
      const delay = await deliveredOnce(s, during, 30_000);
      assert.ok(silence.hits > 0, 'no delete was held');
      await deliveredOnce(s, await send(s, ['del-3']), 10_000);
      await noneLeftOpen(s.proxy);
      t.diagnostic(
        `SQS DeleteMessageBatch: ${silence.hits} calls held; queue empty, one copy each, within ${delay} ms`,
      );
    });

    it('SQS ChangeMessageVisibility goes silent during a slow delivery: the heartbeat gives up, nothing waits forever', async (t) => {
      const s = await silentRig(t, 'vis.silent.test', 'sqs');
      s.rig.mailbox.setDataDelay(2_500);
      const silence = s.proxy.silence(next('ChangeMessageVisibility'), 4);
      const during = await send(s, ['vis-1']);
      const delay = await deliveredOnce(s, during, 30_000);
      assert.ok(silence.hits > 0, 'no heartbeat was held');
      s.rig.mailbox.setDataDelay(0);
      await deliveredOnce(s, await send(s, ['vis-2']), 10_000);
      await noneLeftOpen(s.proxy);
      t.diagnostic(`SQS ChangeMessageVisibility: ${silence.hits} calls held; delivered within ${delay} ms`);
    });

    it('SES SendEmail goes silent: the forward is "maybe sent", never repeated; the mailbox copy is delivered once', async (t) => {
      const s = await silentRig(t, 'ses.silent.test', 'ses');
      await s.stack.ddb.send(
        new PutCommand({
          TableName: s.rig.config.tables.rules,
          Item: { email_address: `fwd@${s.domain}`, forwards: ['friend@outside.test'] },
        }),
      );
      const silence = s.proxy.silence((r) => r.method === 'POST' && r.path.includes('outbound-emails'));
      const during = await send(s, ['ses-1'], `fwd@${s.domain}`);
      const delay = await deliveredOnce(s, during, 30_000);
      const line = s.rig.logs.find((l) => l.effects?.some((e) => e.kind === 'forward'));
      assert.ok(silence.hits > 0, 'no SES send was held');
      assert.equal(silence.hits, 1, 'the send was repeated after its deadline');
      assert.equal(line?.effects?.[0]?.status, 'failed');
      assert.match(String(line?.effects?.[0]?.reason), /SES_OUTCOME_UNKNOWN/);
      const raw = s.rig.mailbox.messages[0]?.raw.toString('latin1') ?? '';
      assert.ok(raw.startsWith(`${DELIVERY_ID_HEADER}:`), 'the mailbox copy is the worker’s');
      await noneLeftOpen(s.proxy);
      t.diagnostic(
        `SES SendEmail: ${silence.hits} call held, not repeated; the mailbox copy within ${delay} ms`,
      );
    });
  },
);
