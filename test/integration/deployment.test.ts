/**
 * Nothing is lost to a misconfigured deployment: a mail server that refuses the domain as misconfigured, a wrong or
 * vanished table, and a queue whose redrive policy disagrees with MAX_RECEIVES are found, shown (/health, /ready,
 * metrics, the log) and waited out — while a verdict on the mail itself (content rejected after DATA) still ends it.
 * The in-process pipeline (startRig) for the mechanics, the built daemon for what /health, /ready and /metrics say.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { CreateTableCommand, DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { ChangeMessageVisibilityCommand } from '@aws-sdk/client-sqs';
import type { PipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { killAllDaemons, spawnDaemon } from '../harness/daemon-process.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import { countBySeq, rawMail, startFaultProxy } from '../harness/faults.ts';
import { startRig, type LogLine, type Rig } from '../harness/pipeline-rig.ts';
import { putMail, type PutMailResult } from '../harness/ses-events.ts';
import { startSmtpSink } from '../harness/smtp-sink.ts';

const SOURCE = 'sender@external.test';

let stack: TestStack;
before(async () => {
  stack = await startStack({ tables: true });
});
after(async () => {
  await killAllDaemons();
  await stack?.stop();
});

function put(domain: string, seq: string, to: string): Promise<PutMailResult> {
  return putMail(stack, { domain, raw: rawMail(seq, to), recipients: [to], source: SOURCE, shape: 'sns-s3' });
}

async function rigFor(
  t: TestContext,
  domain: string,
  env: Record<string, string> = {},
  queue: { visibilityTimeout?: number; withDlq?: boolean; maxReceiveCount?: number } = {},
): Promise<Rig> {
  await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3, ...queue });
  const rig = await startRig({ stack, domains: [domain], env });
  t.after(() => rig.stop());
  return rig;
}

async function nthOutcome(rig: Rig, id: string, n: number, timeoutMs = 45_000): Promise<LogLine> {
  await waitUntil(() => rig.outcomes(id).length >= n, timeoutMs, `outcome #${n} of ${id}`, 50);
  return rig.outcomes(id)[n - 1] as LogLine;
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

async function metadataOf(p: PutMailResult): Promise<Record<string, string>> {
  return (await stack.s3.send(new HeadObjectCommand({ Bucket: p.bucket, Key: p.key }))).Metadata ?? {};
}

async function drained(queueUrl: string): Promise<boolean> {
  const counts = await queueCounts(stack.sqs, queueUrl);
  return counts.visible === 0 && counts.inFlight === 0;
}

async function createTable(name: string, key: string): Promise<void> {
  await stack.dynamodb.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: [{ AttributeName: key, AttributeType: 'S' }],
      KeySchema: [{ AttributeName: key, KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
}

const RELAY_DENIED = (to: string) => ({ code: 554, message: `5.7.1 <${to}>: Relay access denied` });

describe('deployment faults are retried and shown, not verdicts on the mail', { concurrency: true }, () => {
  it('554 5.7.1 Relay access denied at RCPT: deferred, the domain degraded and paused, until a delivery gets through', async (t) => {
    const domain = 'relay.test';
    const to = `user@${domain}`;
    const rig = await rigFor(t, domain);
    rig.mailbox.setRcptReply(to, RELAY_DENIED(to));
    const first = await put(domain, 'relay-1', to);
    const outcome = await nthOutcome(rig, first.messageId, 1);
    assert.equal(outcome.disposition, 'park', 'held until the mail server takes mail for the domain');
    assert.equal(outcome.status, 'deferred');
    assert.equal(outcome.recipients?.[0]?.state, 'deferred');
    assert.equal(outcome.recipients?.[0]?.code, 554);
    assert.match(
      String(outcome.recipients?.[0]?.detail),
      /configuration refuses this domain: 554 5\.7\.1 .*Relay access denied/,
    );
    const poller = rig.runtimes.get(domain)?.poller;
    assert.ok(poller);
    assert.match(poller.getStatus().degraded ?? '', /^554 5\.7\.1 .*Relay access denied/);
    assert.ok(
      rig.logs.some((l) => l.msg === 'pausing polling' && l.reason === 'mail server refuses the domain'),
    );
    assert.ok(
      rig.logs.some((l) => l.level === 'error' && /refuses this domain's mail as misconfigured/.test(l.msg)),
    );
    assert.equal(
      await metric(rig.metrics, 'ses_worker_deployment_check_failed', { domain, check: 'smtp' }),
      1,
    );
    assert.equal(
      await metric(rig.metrics, 'ses_worker_deployment_faults_total', { domain, kind: 'smtp' }),
      1,
    );
    assert.equal((await metadataOf(first)).status, undefined, 'no verdict written');

    rig.mailbox.setRcptReply(to, undefined);
    const second = await put(domain, 'relay-2', to);
    assert.equal((await nthOutcome(rig, second.messageId, 1)).status, 'delivered');
    assert.equal(poller.getStatus().degraded, undefined, 'a delivery that got through ends it');
    assert.equal(
      await metric(rig.metrics, 'ses_worker_deployment_check_failed', { domain, check: 'smtp' }),
      0,
    );
    // The first mail was held for the mail server: retried in place as soon as a delivery got through.
    const again = await nthOutcome(rig, first.messageId, 2, 5_000);
    assert.equal(again.status, 'delivered');
    assert.equal(again.receiveCount, 1, 'retried in place, not received again');
    await waitUntil(() => drained(first.queueUrl), 10_000, 'queue drained', 100);
    assert.deepEqual([...countBySeq(rig.mailbox.messages)].sort(), [
      ['relay-1', 1],
      ['relay-2', 1],
    ]);
  });

  it('a 5xx after DATA is a verdict on the content: final, recorded in S3 with the reply, not retried', async (t) => {
    const domain = 'content.test';
    const to = `user@${domain}`;
    const rig = await rigFor(t, domain);
    rig.mailbox.setDataReply(to, { code: 550, message: '5.7.1 Message content rejected' });
    const p = await put(domain, 'content-1', to);
    const outcome = await nthOutcome(rig, p.messageId, 1);
    assert.equal(outcome.disposition, 'delete');
    assert.equal(outcome.status, 'rejected');
    assert.deepEqual(
      outcome.recipients?.map((r) => [r.state, r.code, r.detail]),
      [['rejected', 550, '550 5.7.1 Message content rejected']],
    );
    const metadata = await metadataOf(p);
    assert.equal(metadata.status, 'rejected');
    assert.equal(metadata.content_rejected, `${to}: 550 5.7.1 Message content rejected`);
    await waitUntil(() => drained(p.queueUrl), 10_000, 'queue drained', 100);
    assert.equal(rig.runtimes.get(domain)?.poller.getStatus().degraded, undefined);
    assert.equal(await metric(rig.metrics, 'ses_worker_recipients_total', { domain, state: 'rejected' }), 1);
  });

  it('a table with the wrong key stops the domain at start-up, naming it; mail waits and flows once the table is fixed', async (t) => {
    const domain = 'wrongtable.test';
    const to = `user@${domain}`;
    const table = 'ooo-wrong-key';
    await createTable(table, 'id');
    const rig = await rigFor(t, domain, { OOO_STATE_TABLE: table });
    const poller = rig.runtimes.get(domain)?.poller;
    assert.ok(poller);
    assert.equal(poller.getStatus().state, 'held');
    assert.match(
      poller.getStatus().lastError ?? '',
      /table ooo-wrong-key \(oooState\): key schema is id \(HASH\); the daemon needs a single partition key "pk"/,
    );
    assert.equal(
      await metric(rig.metrics, 'ses_worker_deployment_check_failed', { domain, check: `table:${table}` }),
      1,
    );
    assert.equal(
      await metric(rig.metrics, 'ses_worker_deployment_check_failed', { domain, check: 'table:email-rules' }),
      0,
    );
    assert.ok(
      (await metric(rig.metrics, 'ses_worker_deployment_faults_total', { domain, kind: 'table' })) >= 1,
    );
    assert.ok(
      rig.logs.some(
        (l) => l.level === 'error' && l.msg.startsWith('table check failed') && l.table === table,
      ),
    );
    // TTL is off on dynalite: a warning, never a reason to stop.
    assert.ok(
      rig.logs.some((l) => l.msg === 'table check warning' && l.table === 'email-worker-idempotency'),
    );

    const p = await put(domain, 'wrongtable-1', to);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.deepEqual(rig.outcomes(p.messageId), [], 'not received while the table is wrong');
    assert.equal((await queueCounts(stack.sqs, p.queueUrl)).visible, 1);

    await stack.dynamodb.send(new DeleteTableCommand({ TableName: table }));
    await waitUntil(
      async () => {
        try {
          await createTable(table, 'pk');
          return true;
        } catch {
          return false;
        }
      },
      10_000,
      'the table recreated',
      200,
    );
    // Re-checked every 30 s while failing.
    const delivered = await nthOutcome(rig, p.messageId, 1, 45_000);
    assert.equal(delivered.status, 'delivered');
    assert.equal(poller.getStatus().lastError, undefined);
    assert.equal(
      await metric(rig.metrics, 'ses_worker_deployment_check_failed', { domain, check: `table:${table}` }),
      0,
    );
  });

  it('a table that vanishes at run time is noticed at the first failing call, not one mail at a time', async (t) => {
    const domain = 'vanish.test';
    const to = `user@${domain}`;
    const table = 'blocklist-vanishing';
    await createTable(table, 'email_address');
    const rig = await rigFor(t, domain, { BLOCKLIST_TABLE: table });
    const poller = rig.runtimes.get(domain)?.poller;
    assert.ok(poller);
    assert.equal(poller.getStatus().state, 'polling');
    await stack.dynamodb.send(new DeleteTableCommand({ TableName: table }));
    const p = await put(domain, 'vanish-1', to);
    const outcome = await nthOutcome(rig, p.messageId, 1);
    assert.equal(outcome.disposition, 'retry');
    assert.match(String(outcome.reason), /BatchGetItem/);
    // At most 5 s after the previous check (the one at start-up), long before the message's 30 s retry.
    await waitUntil(() => poller.getStatus().state === 'held', 8_000, 'the domain held', 50);
    assert.match(
      poller.getStatus().lastError ?? '',
      /table blocklist-vanishing \(blocklist\): table does not exist/,
    );
    await createTable(table, 'email_address');
    const delivered = await nthOutcome(rig, p.messageId, 2, 60_000);
    assert.equal(delivered.status, 'delivered');
    assert.equal(countBySeq(rig.mailbox.messages).get('vanish-1'), 1);
  });

  it("the queue's redrive maxReceiveCount wins over MAX_RECEIVES (with a warning): the mail is marked failed at it", async (t) => {
    const domain = 'redrive.test';
    const to = `busy@${domain}`;
    const rig = await rigFor(t, domain, { MAX_RECEIVES: '10' }, { withDlq: true, maxReceiveCount: 2 });
    assert.ok(
      rig.logs.some(
        (l) => /redrive maxReceiveCount differs from MAX_RECEIVES/.test(l.msg) && l.maxReceiveCount === 2,
      ),
    );
    rig.mailbox.setRcptReply(to, { code: 451, message: '4.2.1 Mailbox busy' });
    const p = await put(domain, 'redrive-1', to);
    assert.equal((await nthOutcome(rig, p.messageId, 1)).disposition, 'retry');
    assert.equal((await metadataOf(p)).status, undefined, 'not yet given up at receive 1');
    await nthOutcome(rig, p.messageId, 2);
    await waitUntil(async () => (await metadataOf(p)).status === 'failed', 5_000, 'status=failed');
    assert.match((await metadataOf(p)).failure_reason ?? '', /gave up after 2 receives/);
  });

  it('without a redrive policy a mail past MAX_RECEIVES keeps the longest backoff and is marked failed only once', async (t) => {
    const domain = 'noredrive.test';
    const to = `busy@${domain}`;
    await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3 });
    const sqs = await startFaultProxy(stack.endpoints.sqs);
    const rig = await startRig({
      stack,
      domains: [domain],
      env: { MAX_RECEIVES: '1', AWS_ENDPOINT_URL_SQS: sqs.endpoint },
    });
    t.after(async () => {
      await rig.stop();
      await sqs.stop();
    });
    assert.ok(rig.logs.some((l) => /queue has no redrive policy/.test(l.msg)));
    rig.mailbox.setRcptReply(to, { code: 451, message: '4.2.1 Mailbox busy' });
    const p = await put(domain, 'noredrive-1', to);
    const longest = (r: { operation: string; body?: string }) =>
      r.operation === 'ChangeMessageVisibility' && /"VisibilityTimeout":900[,}]/.test(r.body ?? '');
    await nthOutcome(rig, p.messageId, 1);
    await waitUntil(() => sqs.count('ChangeMessageVisibility', longest) === 1, 5_000, 'the 900 s backoff');
    const marked = await metadataOf(p);
    assert.equal(marked.status, 'failed');
    assert.match(marked.failure_reason ?? '', /gave up after 1 receives/);

    // Bring it back now instead of in 15 minutes: the worker must recognise its own mark and not write it again.
    const handle = JSON.parse(sqs.requests.find(longest)?.body ?? '{}') as { ReceiptHandle?: string };
    assert.ok(handle.ReceiptHandle);
    await stack.sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: p.queueUrl,
        ReceiptHandle: handle.ReceiptHandle,
        VisibilityTimeout: 0,
      }),
    );
    const second = await nthOutcome(rig, p.messageId, 2);
    assert.equal(second.receiveCount, 2);
    await waitUntil(
      () => sqs.count('ChangeMessageVisibility', longest) === 2,
      5_000,
      'the 900 s backoff again',
    );
    assert.deepEqual(await metadataOf(p), marked, 'the S3 mark was not rewritten');
    assert.equal(rig.logs.filter((l) => /reached MAX_RECEIVES/.test(l.msg)).length, 1);
  });
});

describe(
  'the built daemon shows deployment faults in /health, /ready and /metrics',
  { concurrency: true },
  () => {
    async function daemonFor(t: TestContext, domain: string, env: Record<string, string> = {}) {
      await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3 });
      const sink = await startSmtpSink();
      t.after(() => sink.stop());
      const daemon = await spawnDaemon({
        domains: [domain],
        env: {
          ...stack.env,
          SMTP_HOST: '127.0.0.1',
          SMTP_PORT: String(sink.port),
          INTERNAL_SMTP_PORT: String(sink.port),
          RULES_CACHE_SECONDS: '0',
          ...env,
        },
      });
      t.after(() => daemon.stop());
      return { daemon, sink };
    }

    interface HealthBody {
      domains: Array<{ domain: string; state: string; degradedReason?: string; lastError?: string }>;
    }

    it('a mail server refusing the domain: /health 200 with the domain degraded and the reply, /ready 503, a metric', async (t) => {
      const domain = 'dmn-relay.test';
      const to = `user@${domain}`;
      const { daemon, sink } = await daemonFor(t, domain);
      await waitUntil(
        async () => (await daemon.request('GET', '/ready')).status === 200,
        15_000,
        'ready',
        100,
      );
      sink.setRcptReply(to, RELAY_DENIED(to));
      await put(domain, 'dmn-relay-1', to);
      let health: HealthBody | undefined;
      await waitUntil(
        async () => {
          const answer = await daemon.request('GET', '/health');
          assert.equal(answer.status, 200);
          health = JSON.parse(answer.body) as HealthBody;
          return health.domains[0]?.state === 'degraded';
        },
        15_000,
        'the domain degraded in /health',
        100,
      );
      assert.match(health?.domains[0]?.degradedReason ?? '', /554 5\.7\.1 .*Relay access denied/);
      assert.equal((await daemon.request('GET', '/ready')).status, 503);
      assert.match(
        await daemon.metrics(),
        new RegExp(
          `^ses_worker_deployment_check_failed\\{domain="${domain.replace('.', '\\.')}",check="smtp"\\} 1$`,
          'm',
        ),
      );

      sink.setRcptReply(to, undefined);
      await put(domain, 'dmn-relay-2', to);
      await waitUntil(
        async () => (await daemon.request('GET', '/ready')).status === 200,
        20_000,
        'ready again',
        100,
      );
      assert.match(
        await daemon.metrics(),
        new RegExp(
          `^ses_worker_deployment_check_failed\\{domain="${domain.replace('.', '\\.')}",check="smtp"\\} 0$`,
          'm',
        ),
      );
    });

    it('a ledger table keyed wrong: /health 200 with the domain in error naming it, /ready 503, a metric; no mail received', async (t) => {
      const domain = 'dmn-table.test';
      const table = 'ledger-wrong-key';
      await createTable(table, 'id');
      const { daemon, sink } = await daemonFor(t, domain, { IDEMPOTENCY_TABLE: table });
      const p = await put(domain, 'dmn-table-1', `user@${domain}`);
      let health: HealthBody | undefined;
      await waitUntil(
        async () => {
          const answer = await daemon.request('GET', '/health');
          assert.equal(answer.status, 200);
          health = JSON.parse(answer.body) as HealthBody;
          return health.domains[0]?.state === 'held';
        },
        15_000,
        'the domain in error',
        100,
      );
      assert.match(
        health?.domains[0]?.lastError ?? '',
        /table ledger-wrong-key \(idempotency\): key schema is id \(HASH\)/,
      );
      assert.equal((await daemon.request('GET', '/ready')).status, 503);
      assert.match(
        await daemon.metrics(),
        new RegExp(
          `^ses_worker_deployment_check_failed\\{domain="dmn-table\\.test",check="table:${table}"\\} 1$`,
          'm',
        ),
      );
      assert.ok(daemon.logs.some((l) => l.level === 'error' && l.msg.startsWith('table check failed')));
      assert.equal((await queueCounts(stack.sqs, p.queueUrl)).visible, 1, 'the mail waits in SQS');
      assert.equal(sink.messages.length, 0);
    });
  },
);
