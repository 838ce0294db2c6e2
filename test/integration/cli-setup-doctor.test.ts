/**
 * `unified-worker setup` and `doctor` against the emulators (fauxqs, dynalite, aws-ses-v2-local) and smtp-server
 * sinks: setup creates what the daemon needs and is idempotent; doctor is green after it and red, with the fix,
 * for a wrong table key, a queue without redrive policy, a closed mail server port and a refused address.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { CreateTableCommand, DescribeTableCommand } from '@aws-sdk/client-dynamodb';
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, GetQueueUrlCommand } from '@aws-sdk/client-sqs';

import { TABLES } from '../../src/aws/resources.ts';
import type { CheckResult } from '../../src/cli/doctor.ts';
import { SETTINGS } from '../../src/config/settings.ts';
import type { SetupItem } from '../../src/cli/setup.ts';
import { runCommand } from '../harness/cli-runner.ts';
import { startStack, type TestStack } from '../harness/emulators.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

let stack: TestStack;
let mailbox: SmtpSink;
let internal: SmtpSink;
let env: Record<string, string>;

before(async () => {
  stack = await startStack();
  mailbox = await startSmtpSink();
  internal = await startSmtpSink();
  env = {
    ...stack.env,
    DOMAINS: 'example.com',
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(mailbox.port),
    INTERNAL_SMTP_PORT: String(internal.port),
    IDEMPOTENCY_TABLE: 'email-worker-idempotency',
    LOOP_MARKER_SECRET: 'a-long-random-test-secret-0123456789',
    MAX_RECEIVES: '7',
  };
});
after(async () => {
  await Promise.all([mailbox.stop(), internal.stop()]);
  await stack.stop();
});

interface SetupReport {
  items: SetupItem[];
}
interface DoctorReport {
  ok: boolean;
  failed: number;
  checks: CheckResult[];
}

function check(report: DoctorReport, name: string): CheckResult {
  const found = report.checks.find((c) => c.check === name);
  assert.ok(found, `no check "${name}" in ${report.checks.map((c) => c.check).join(', ')}`);
  return found;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('setup', () => {
  it('creates the tables, the queue with its dead-letter queue and redrive policy, and the bucket', async () => {
    const run = await runCommand(['setup', '--json'], env);
    assert.equal(run.code, 0, run.stderr);
    const { items } = run.json<SetupReport>();
    assert.deepEqual(
      items.map((i) => `${i.kind} ${i.name} ${i.outcome}`),
      [
        'table email-rules created',
        'table email-blocked-senders created',
        'table ses-outbound-messages created',
        'table email-ooo-replies created',
        'table email-worker-idempotency created',
        'dead-letter queue example-com-queue-dlq created',
        'queue example-com-queue created',
        'bucket example-com-emails created',
      ],
    );
    // dynalite has no UpdateTimeToLive: said, not failed.
    for (const name of ['ses-outbound-messages', 'email-ooo-replies', 'email-worker-idempotency']) {
      const table = items.find((i) => i.name === name);
      assert.match(
        table?.warnings.join() ?? '',
        /TTL could not be enabled on this endpoint \(UnknownOperationException/,
      );
    }

    // What the daemon relies on, read back from the emulators.
    for (const spec of TABLES) {
      const name = spec.role === 'idempotency' ? 'email-worker-idempotency' : SETTINGS[spec.setting].default;
      const { Table } = await stack.dynamodb.send(new DescribeTableCommand({ TableName: name }));
      assert.deepEqual(Table?.KeySchema, [{ AttributeName: spec.partitionKey, KeyType: 'HASH' }]);
      assert.deepEqual(Table?.AttributeDefinitions, [
        { AttributeName: spec.partitionKey, AttributeType: 'S' },
      ]);
    }
    const { QueueUrl } = await stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'example-com-queue' }));
    const { Attributes } = await stack.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['RedrivePolicy'] }),
    );
    const policy = JSON.parse(Attributes?.RedrivePolicy ?? '{}') as {
      deadLetterTargetArn: string;
      maxReceiveCount: number;
    };
    assert.equal(policy.maxReceiveCount, 7, 'maxReceiveCount = MAX_RECEIVES');
    assert.match(policy.deadLetterTargetArn, /:example-com-queue-dlq$/);
    const dlq = await stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'example-com-queue-dlq' }));
    const dlqAttributes = await stack.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ['MessageRetentionPeriod'] }),
    );
    assert.equal(dlqAttributes.Attributes?.MessageRetentionPeriod, String(14 * 86_400));
    await stack.s3.send(new HeadBucketCommand({ Bucket: 'example-com-emails' }));
  });

  it('run again, finds everything in place and changes nothing', async () => {
    const run = await runCommand(['setup'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^0 created, 0 updated, 8 already existed, 0 failed; 3 warnings\.$/m);
    const again = await runCommand(['setup', '--json'], env);
    assert.deepEqual(new Set(again.json<SetupReport>().items.map((i) => i.outcome)), new Set(['existed']));
  });

  it('adds the missing redrive policy to an existing queue, and leaves a table with a wrong key alone (exit 1)', async () => {
    await stack.sqs.send(new CreateQueueCommand({ QueueName: 'bare-test-queue' }));
    await stack.dynamodb.send(
      new CreateTableCommand({
        TableName: 'rules-keyed-wrong',
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    const run = await runCommand(['setup', '--domains', 'bare.test', '--json'], {
      ...env,
      RULES_TABLE: 'rules-keyed-wrong',
    });
    assert.equal(run.code, 1, 'a table the daemon cannot use is a failed setup');
    const { items } = run.json<SetupReport>();
    const queue = items.find((i) => i.name === 'bare-test-queue');
    assert.equal(queue?.outcome, 'updated');
    assert.match(
      queue?.details.join() ?? '',
      /had no redrive policy: now redrive to bare-test-queue-dlq after 7 receives/,
    );
    const table = items.find((i) => i.name === 'rules-keyed-wrong');
    assert.equal(table?.outcome, 'failed');
    assert.match(table?.details.join() ?? '', /not changed: key schema is id \(HASH\)/);
    const { Table } = await stack.dynamodb.send(new DescribeTableCommand({ TableName: 'rules-keyed-wrong' }));
    assert.equal(Table?.KeySchema?.[0]?.AttributeName, 'id', 'the table is not touched');
  });
});

describe('doctor', () => {
  it('after setup: every check passes, the mail server is asked for RCPT and nothing is sent', async () => {
    mailbox.clear();
    internal.clear();
    const run = await runCommand(['doctor', '--json'], env);
    const report = run.json<DoctorReport>();
    assert.equal(run.code, 0, JSON.stringify(report.checks.filter((c) => c.status === 'fail')));
    assert.equal(report.failed, 0);
    assert.ok(!report.checks.some((c) => c.check === 'DELIVERY_PROTOCOL'), 'nothing to say about smtp');
    for (const name of [
      'settings',
      'LOOP_MARKER_SECRET',
      'queue example-com-queue',
      'redrive example-com-queue',
      'bucket example-com-emails',
      'table email-rules',
      'table email-blocked-senders',
      `mail server SMTP 127.0.0.1:${mailbox.port}`,
      `mail server internal SMTP 127.0.0.1:${internal.port}`,
    ]) {
      assert.equal(check(report, name).status, 'ok', name);
    }
    assert.match(check(report, 'redrive example-com-queue').detail, /example-com-queue-dlq after 7 receives/);
    // TTL cannot be on in dynalite; the SES emulator has no GetAccount: warnings, not failures.
    assert.equal(check(report, 'table email-ooo-replies').status, 'warn');
    assert.equal(check(report, 'table ses-outbound-messages').status, 'warn');
    assert.match(check(report, 'SES account').detail, /^not checked/);
    assert.equal(check(report, 'SES account').status, 'warn');
    assert.ok(mailbox.connections >= 1 && internal.connections >= 1, 'both ports were asked');
    assert.equal(mailbox.messages.length + internal.messages.length, 0, 'no mail was sent');
  });

  it('names a table with the wrong key and how to fix it (exit 1)', async () => {
    const run = await runCommand(['doctor'], { ...env, RULES_TABLE: 'rules-keyed-wrong' });
    assert.equal(run.code, 1);
    const lines = run.stdout.split('\n');
    const index = lines.findIndex((l) => l.startsWith('[FAIL] table rules-keyed-wrong'));
    assert.ok(index >= 0, run.stdout);
    assert.match(
      lines[index] ?? '',
      /key schema is id \(HASH\); the daemon needs a single partition key "email_address" of type S/,
    );
    assert.match(lines[index + 1] ?? '', /fix: recreate the table \(unified-worker setup\)/);
    assert.match(run.stdout, /1 check failed/);
  });

  it('names a queue without redrive policy, and setup fixes it', async () => {
    await stack.sqs.send(new CreateQueueCommand({ QueueName: 'noredrive-test-queue' }));
    const red = await runCommand(['doctor', '--domains', 'noredrive.test', '--json'], env);
    assert.equal(red.code, 1);
    const failing = check(red.json<DoctorReport>(), 'redrive noredrive-test-queue');
    assert.equal(failing.status, 'fail');
    assert.match(failing.detail, /no redrive policy/);
    assert.equal(
      failing.fix,
      'unified-worker setup --domains noredrive.test (adds a dead-letter queue and the policy)',
    );

    assert.equal((await runCommand(['setup', '--domains', 'noredrive.test'], env)).code, 0);
    const green = await runCommand(['doctor', '--domains', 'noredrive.test', '--json'], env);
    assert.equal(check(green.json<DoctorReport>(), 'redrive noredrive-test-queue').status, 'ok');
  });

  it('fails when MAX_RECEIVES differs from the redrive count', async () => {
    const run = await runCommand(['doctor', '--json'], { ...env, MAX_RECEIVES: '3' });
    assert.equal(run.code, 1);
    const failing = check(run.json<DoctorReport>(), 'redrive example-com-queue');
    assert.match(failing.detail, /maxReceiveCount is 7 but MAX_RECEIVES is 3/);
    assert.equal(failing.fix, "set MAX_RECEIVES=7, or the policy's maxReceiveCount to 3");
  });

  it('names a closed mail server port', async () => {
    const port = await closedPort();
    const run = await runCommand(['doctor', '--json'], { ...env, SMTP_PORT: String(port) });
    assert.equal(run.code, 1);
    const failing = check(run.json<DoctorReport>(), `mail server SMTP 127.0.0.1:${port}`);
    assert.equal(failing.status, 'fail');
    assert.match(failing.detail, /ECONNREFUSED/);
    assert.match(failing.fix ?? '', /SMTP_HOST and SMTP_PORT/);
    assert.equal(
      check(run.json<DoctorReport>(), `mail server internal SMTP 127.0.0.1:${internal.port}`).status,
      'ok',
    );
  });

  it('names the address the mail server refuses', async () => {
    internal.setRcptReply('postmaster@example.com', { code: 550, message: '5.1.1 User unknown' });
    try {
      const run = await runCommand(['doctor', '--json'], env);
      assert.equal(run.code, 1);
      const failing = check(run.json<DoctorReport>(), `mail server internal SMTP 127.0.0.1:${internal.port}`);
      assert.match(failing.detail, /refused postmaster@example\.com \(550 5\.1\.1 User unknown\)/);
      // --rcpt names another, accepted, mailbox.
      const other = await runCommand(['doctor', '--rcpt', 'alice@example.com', '--json'], env);
      assert.equal(
        check(other.json<DoctorReport>(), `mail server internal SMTP 127.0.0.1:${internal.port}`).status,
        'ok',
      );
    } finally {
      internal.setRcptReply('postmaster@example.com', undefined);
    }
  });

  it('with DELIVERY_PROTOCOL=lmtp asks the LMTP port (LHLO) instead of SMTP', async () => {
    const lmtp = await startSmtpSink({ lmtp: true });
    try {
      const run = await runCommand(['doctor', '--json'], {
        ...env,
        DELIVERY_PROTOCOL: 'lmtp',
        LMTP_PORT: String(lmtp.port),
      });
      const report = run.json<DoctorReport>();
      assert.equal(check(report, `mail server LMTP 127.0.0.1:${lmtp.port}`).status, 'ok');
      const protocol = check(report, 'DELIVERY_PROTOCOL');
      assert.equal(protocol.status, 'warn');
      assert.match(protocol.fix ?? '', /one replica, or .*DELIVERY_PROTOCOL=smtp/);
      assert.ok(!report.checks.some((c) => c.check === `mail server SMTP 127.0.0.1:${mailbox.port}`));
      assert.equal(lmtp.connections, 1);
      assert.equal(lmtp.messages.length, 0);
    } finally {
      await lmtp.stop();
    }
  });

  it('warns about a missing LOOP_MARKER_SECRET and says how to set one', async () => {
    const run = await runCommand(['doctor', '--json'], { ...env, LOOP_MARKER_SECRET: '' });
    const secret = check(run.json<DoctorReport>(), 'LOOP_MARKER_SECRET');
    assert.equal(secret.status, 'warn');
    assert.match(secret.fix ?? '', /long random string/);
  });

  it('refuses a bad --rcpt and a bad setting with exit 2 and one line', async () => {
    const rcpt = await runCommand(['doctor', '--rcpt', 'not an address'], env);
    assert.equal(rcpt.code, 2);
    assert.match(rcpt.stderr, /^unified-worker doctor: --rcpt "not an address"/);
    const setting = await runCommand(['doctor'], { ...env, SMTP_PORT: '70000' });
    assert.equal(setting.code, 2);
    assert.equal(
      setting.stderr,
      'unified-worker: invalid configuration: SMTP_PORT: 70000 is not a valid port (1..65535)\n',
    );
  });
});
