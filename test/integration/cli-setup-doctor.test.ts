/**
 * `unified-worker setup` and `doctor` against the emulators (fauxqs for SQS, SNS, S3 and STS; dynalite;
 * aws-ses-v2-local) and smtp-server sinks. What no emulator answers is a small local peer, said where it is used:
 * S3 bucket policies (test/harness/s3-bucket-policy.ts), SES identities, receipt rules and configuration sets
 * (test/harness/ses-control-plane.ts), and DNS (test/harness/dns-server.ts, through DOCTOR_DNS_SERVERS).
 *
 * setup creates what the mail path needs and is idempotent; doctor is green after it (once the stand-ins for DNS
 * and SES verification say so) and red, with the fix, for a wrong table key, a queue without redrive policy, a
 * closed mail server port and a refused address.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, HeadBucketCommand } from '@aws-sdk/client-s3';
import { ListSubscriptionsByTopicCommand, SNSClient } from '@aws-sdk/client-sns';
import { CreateQueueCommand, GetQueueAttributesCommand, GetQueueUrlCommand } from '@aws-sdk/client-sqs';

import { TABLES } from '../../src/aws/resources.ts';
import type { CheckResult } from '../../src/cli/doctor.ts';
import { runCli } from '../../src/cli/program.ts';
import { SETTINGS } from '../../src/config/settings.ts';
import type { SetupItem } from '../../src/cli/setup.ts';
import { runCommand } from '../harness/cli-runner.ts';
import { startDnsServer, type DnsServer } from '../harness/dns-server.ts';
import {
  TEST_CREDENTIALS,
  TEST_REGION,
  createTables,
  startDynalite,
  startStack,
  type TestStack,
} from '../harness/emulators.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

let stack: TestStack;
let mailbox: SmtpSink;
let internal: SmtpSink;
let dns: DnsServer;
let sns: SNSClient;
let env: Record<string, string>;

/** fauxqs's account: STS answers with it and every ARN carries it. */
const ACCOUNT = '000000000000';
const TOPIC = `arn:aws:sns:${TEST_REGION}:${ACCOUNT}:example-com-queue-notifications`;

before(async () => {
  stack = await startStack();
  mailbox = await startSmtpSink();
  internal = await startSmtpSink();
  dns = await startDnsServer();
  dns.setMx('example.com', [{ exchange: `inbound-smtp.${TEST_REGION}.amazonaws.com`, priority: 10 }]);
  // What aws-ses-v2-local does not answer: the account (the peer's GetAccount, see the file comment).
  stack.ses.control.account = {
    SendingEnabled: true,
    ProductionAccessEnabled: true,
    SendQuota: { Max24HourSend: 50_000, MaxSendRate: 14, SentLast24Hours: 0 },
  };
  sns = new SNSClient({
    endpoint: stack.endpoints.sqs,
    region: TEST_REGION,
    credentials: TEST_CREDENTIALS,
    maxAttempts: 1,
  });
  env = {
    ...stack.env,
    DOMAINS: 'example.com',
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(mailbox.port),
    INTERNAL_SMTP_PORT: String(internal.port),
    IDEMPOTENCY_TABLE: 'email-worker-idempotency',
    LOOP_MARKER_SECRET: 'a-long-random-test-secret-0123456789',
    MAX_RECEIVES: '7',
    DOCTOR_DNS_SERVERS: dns.address,
  };
});
after(async () => {
  sns.destroy();
  await Promise.all([mailbox.stop(), internal.stop(), dns.stop()]);
  await stack.stop();
});

interface SetupReport {
  items: SetupItem[];
  dnsRecords: string[];
}
interface DoctorReport {
  ok: boolean;
  failed: number;
  checks: CheckResult[];
}

/** What setup made on the mail path, read back from the emulators and the local peers. */
async function assertMailPathCreated(queueUrl: string): Promise<void> {
  const bucketPolicy = JSON.parse(stack.fauxqs.server.bucketPolicies.get('example-com-emails') ?? '{}') as {
    Statement: unknown[];
  };
  assert.deepEqual(bucketPolicy.Statement, [
    {
      Sid: 'AllowSesToStoreMail',
      Effect: 'Allow',
      Principal: { Service: 'ses.amazonaws.com' },
      Action: 's3:PutObject',
      Resource: 'arn:aws:s3:::example-com-emails/*',
      Condition: { StringEquals: { 'aws:SourceAccount': ACCOUNT } },
    },
  ]);
  const queueArn = `arn:aws:sqs:${TEST_REGION}:${ACCOUNT}:example-com-queue`;
  const { Subscriptions } = await sns.send(new ListSubscriptionsByTopicCommand({ TopicArn: TOPIC }));
  assert.deepEqual(
    Subscriptions?.map((s) => `${s.Protocol} ${s.Endpoint}`),
    [`sqs ${queueArn}`],
  );
  const { Attributes } = await stack.sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['Policy'] }),
  );
  const queuePolicy = JSON.parse(Attributes?.Policy ?? '{}') as { Statement: unknown[] };
  assert.deepEqual(queuePolicy.Statement, [
    {
      Sid: 'AllowSnsexamplecomqueuenotifications',
      Effect: 'Allow',
      Principal: { Service: 'sns.amazonaws.com' },
      Action: 'sqs:SendMessage',
      Resource: queueArn,
      Condition: { ArnEquals: { 'aws:SourceArn': TOPIC } },
    },
  ]);
  const control = stack.ses.control;
  assert.equal(control.active, 'unified-worker', 'no set was active: setup activated its own');
  assert.deepEqual(control.ruleSets.get('unified-worker'), [
    {
      Name: 'example-com-to-worker',
      Enabled: true,
      ScanEnabled: true,
      TlsPolicy: 'Optional',
      Recipients: ['example.com'],
      Actions: [{ S3Action: { BucketName: 'example-com-emails', TopicArn: TOPIC } }],
    },
  ]);
  assert.equal(control.identities.get('example.com')?.verification, 'PENDING');
  assert.deepEqual(control.configurationSets.get('unified-worker'), [
    {
      Name: 'unified-worker-events',
      Enabled: true,
      MatchingEventTypes: ['SEND', 'BOUNCE', 'COMPLAINT'],
      SnsDestination: { TopicArn: `arn:aws:sns:${TEST_REGION}:${ACCOUNT}:ses-outbound-events-notifications` },
    },
  ]);
}

/** `runCli` as on a terminal: stdout and stderr are TTYs, so progress is redrawn in place. */
async function runOnTerminal(
  argv: string[],
  environment: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, {
    streams: {
      stdout: { write: (chunk: string) => (stdout += chunk), isTTY: true, columns: 200 },
      stderr: { write: (chunk: string) => (stderr += chunk), isTTY: true, columns: 200 },
      env: environment,
    },
    version: 'test',
    startDaemon: () => Promise.reject(new Error('not the daemon')),
  });
  return { code, stdout, stderr };
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
    const { items, dnsRecords } = run.json<SetupReport>();
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
        'bucket policy example-com-emails created',
        'topic example-com-queue-notifications created',
        'subscription example-com-queue created',
        'queue policy example-com-queue created',
        'receipt rule set unified-worker created',
        'receipt rule example-com-to-worker created',
        'SES identity example.com created',
        'configuration set unified-worker created',
        'dead-letter queue ses-outbound-events-dlq created',
        'queue ses-outbound-events created',
        'topic ses-outbound-events-notifications created',
        'subscription ses-outbound-events created',
        'queue policy ses-outbound-events created',
        'event destination unified-worker-events created',
      ],
    );
    // DNS is printed, never touched: the MX, and the three DKIM CNAMEs of the new identity.
    const tokens = stack.ses.control.identities.get('example.com')?.tokens ?? [];
    assert.equal(tokens.length, 3);
    assert.deepEqual(dnsRecords, [
      `example.com. MX 10 inbound-smtp.${TEST_REGION}.amazonaws.com`,
      ...tokens.map((t) => `${t}._domainkey.example.com. CNAME ${t}.dkim.amazonses.com`),
    ]);
    // The table waits were shown (not a terminal: a line when each starts and ends).
    assert.match(run.stderr, /^setup: waiting for table email-rules to become ACTIVE \(at most 120 s\)$/m);
    assert.match(run.stderr, /^setup: table email-rules is ACTIVE after 0 s$/m);
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
    await assertMailPathCreated(QueueUrl ?? '');
  });

  it('run again, finds everything in place and changes nothing', async () => {
    const run = await runCommand(['setup'], env);
    assert.equal(run.code, 0, run.stderr);
    // The topics are not listed again: the existing receipt rule and event destination name them.
    assert.match(run.stdout, /^0 created, 0 updated, 19 already existed, 0 failed; 4 warnings\.$/m);
    assert.match(run.stdout, /^ +! not verified yet \(PENDING\): publish its DKIM records$/m);
    assert.equal(stack.ses.control.ruleSets.get('unified-worker')?.length, 1, 'no second rule');
    const again = await runCommand(['setup', '--json'], env);
    assert.deepEqual(new Set(again.json<SetupReport>().items.map((i) => i.outcome)), new Set(['existed']));
  });

  it('shows progress while a new table becomes ACTIVE: redrawn on a terminal, a line at start and end otherwise', async () => {
    // A DynamoDB where a new table takes 1.5 s to become ACTIVE, as on AWS; all but the rules table exist.
    const slow = await startDynalite({ createTableMs: 1500 });
    const client = new DynamoDBClient({
      endpoint: slow.endpoint,
      region: TEST_REGION,
      credentials: TEST_CREDENTIALS,
    });
    try {
      await createTables(client, { rules: 'unused-rules' });
      const slowEnv = { ...env, AWS_ENDPOINT_URL_DYNAMODB: slow.endpoint, DOMAINS: 'slow.test' };

      const terminal = await runOnTerminal(['setup'], { ...slowEnv, RULES_TABLE: 'slow-rules-1' });
      assert.equal(terminal.code, 0, terminal.stderr);
      assert.match(terminal.stderr, /\r\x1b\[2Ksetup 1\/\d+: table slow-rules-1/);
      assert.match(
        terminal.stderr,
        /\r\x1b\[2Ksetup waiting for table slow-rules-1 to become ACTIVE: 1 s of at most 120 s/,
      );
      assert.ok(terminal.stderr.endsWith('\r\x1b[2K'), 'the progress line is cleared before the report');

      const plain = await runCommand(['setup'], { ...slowEnv, RULES_TABLE: 'slow-rules-2' });
      assert.equal(plain.code, 0, plain.stderr);
      assert.deepEqual(
        plain.stderr
          .split('\n')
          .filter((l) => l.includes('slow-rules-2'))
          .map((l) => l.replace(/after \d s/, 'after N s')),
        [
          'setup: waiting for table slow-rules-2 to become ACTIVE (at most 120 s)',
          'setup: table slow-rules-2 is ACTIVE after N s',
        ],
      );
      assert.match(plain.stderr, /is ACTIVE after [12] s/);
      assert.doesNotMatch(plain.stderr, /\x1b/, 'no terminal codes where there is no terminal');
    } finally {
      client.destroy();
      await slow.stop();
    }
  });

  it('adds its rule at the end of the active rule set it finds, and its statement to an existing bucket policy', async () => {
    const control = stack.ses.control;
    const shop = {
      Name: 'shop',
      Enabled: true,
      Recipients: ['shop.example.org'],
      Actions: [{ S3Action: { BucketName: 'shop-mail' } }],
    };
    control.ruleSets.set('theirs', [shop]);
    const previous = control.active;
    control.active = 'theirs';
    const tlsOnly = {
      Sid: 'TlsOnly',
      Effect: 'Deny',
      Principal: { AWS: '*' },
      Action: 's3:*',
      Resource: ['arn:aws:s3:::second-test-emails', 'arn:aws:s3:::second-test-emails/*'],
      Condition: { Bool: { 'aws:SecureTransport': 'false' } },
    };
    await stack.s3.send(new CreateBucketCommand({ Bucket: 'second-test-emails' }));
    stack.fauxqs.server.bucketPolicies.set(
      'second-test-emails',
      JSON.stringify({ Version: '2012-10-17', Statement: [tlsOnly] }),
    );
    try {
      const run = await runCommand(['setup', '--domains', 'second.test', '--json'], env);
      assert.equal(run.code, 0, run.stdout);
      const outcomes = run.json<SetupReport>().items.map((i) => `${i.kind} ${i.name} ${i.outcome}`);
      assert.ok(outcomes.includes('bucket second-test-emails existed'), outcomes.join('\n'));
      assert.ok(outcomes.includes('bucket policy second-test-emails updated'));
      assert.ok(outcomes.includes('receipt rule second-test-to-worker created'));
      assert.ok(
        !outcomes.some((o) => o.startsWith('receipt rule set')),
        'a set was active: none created or activated',
      );
      assert.equal(control.active, 'theirs');
      assert.deepEqual(
        control.ruleSets.get('theirs')?.map((r) => r.Name),
        ['shop', 'second-test-to-worker'],
      );
      const policy = JSON.parse(stack.fauxqs.server.bucketPolicies.get('second-test-emails') ?? '{}') as {
        Statement: Array<{ Sid: string }>;
      };
      assert.deepEqual(
        policy.Statement.map((s) => s.Sid),
        ['TlsOnly', 'AllowSesToStoreMail'],
      );
    } finally {
      control.active = previous;
      control.ruleSets.delete('theirs');
    }
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
  it('after setup (and DNS with the DKIM records): every check passes, the mail server is asked for RCPT, nothing is sent', async () => {
    mailbox.clear();
    internal.clear();
    const pending = await runCommand(['doctor', '--json'], env);
    const dkim = check(pending.json<DoctorReport>(), 'SES identity example.com');
    assert.equal(dkim.status, 'fail', 'setup created the identity; SES has not seen the DKIM records yet');
    const tokens = stack.ses.control.identities.get('example.com')?.tokens ?? [];
    assert.match(
      dkim.fix ?? '',
      new RegExp(
        `publish ${tokens[0]}\\._domainkey\\.example\\.com CNAME ${tokens[0]}\\.dkim\\.amazonses\\.com`,
      ),
    );
    // The stand-in for SES finding the records in DNS.
    stack.ses.control.verify('example.com');

    const run = await runCommand(['doctor', '--json'], env);
    const report = run.json<DoctorReport>();
    assert.equal(run.code, 0, JSON.stringify(report.checks.filter((c) => c.status !== 'ok')));
    assert.equal(report.failed, 0);
    assert.ok(!report.checks.some((c) => c.check === 'DELIVERY_PROTOCOL'), 'nothing to say about smtp');
    // TTL cannot be on in dynalite: the only warnings.
    assert.deepEqual(
      report.checks.filter((c) => c.status !== 'ok').map((c) => `${c.status} ${c.check}`),
      [
        'warn table ses-outbound-messages',
        'warn table email-ooo-replies',
        'warn table email-worker-idempotency',
      ],
    );
    assert.deepEqual(
      report.checks.map((c) => c.check),
      [
        'settings',
        'LOOP_MARKER_SECRET',
        'AWS caller',
        'MX example.com',
        'receipt rule example.com',
        'SES identity example.com',
        'DKIM example.com',
        'bucket example-com-emails',
        'bucket policy example-com-emails',
        'queue example-com-queue',
        'redrive example-com-queue',
        'subscription example-com-queue',
        'queue policy example-com-queue',
        ...TABLES.map(
          (t) =>
            `table ${t.role === 'idempotency' ? 'email-worker-idempotency' : SETTINGS[t.setting].default}`,
        ),
        'SES account',
        'configuration set unified-worker',
        'event destination unified-worker',
        'queue ses-outbound-events',
        'redrive ses-outbound-events',
        'subscription ses-outbound-events',
        'queue policy ses-outbound-events',
        `mail server SMTP 127.0.0.1:${mailbox.port}`,
        `mail server internal SMTP 127.0.0.1:${internal.port}`,
      ],
    );
    assert.equal(
      check(report, 'AWS caller').detail,
      `arn:aws:iam::${ACCOUNT}:root (account ${ACCOUNT}), region ${TEST_REGION}`,
    );
    assert.equal(
      check(report, 'receipt rule example.com').detail,
      `rule example-com-to-worker in unified-worker: S3 example-com-emails, SNS ${TOPIC}`,
    );
    assert.equal(check(report, 'subscription example-com-queue').detail, `to ${TOPIC}, confirmed`);
    assert.match(check(report, 'redrive example-com-queue').detail, /example-com-queue-dlq after 7 receives/);
    assert.ok(dns.queries >= 2, 'the MX was asked of the DNS server named in DOCTOR_DNS_SERVERS');
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

  it('refuses a bad --rcpt or --timeout with exit 2 and its usage, a bad setting with exit 1 and one line', async () => {
    const usage = 'Usage: unified-worker doctor [options]   (more: unified-worker help doctor)\n';
    const rcpt = await runCommand(['doctor', '--rcpt', 'not an address'], env);
    assert.equal(rcpt.code, 2);
    assert.match(rcpt.stderr, /^unified-worker doctor: --rcpt "not an address"/);
    for (const value of ['0', '1.5', 'soon', '301']) {
      const timeout = await runCommand(['doctor', '--timeout', value], env);
      assert.equal(timeout.code, 2);
      assert.equal(
        timeout.stderr,
        `unified-worker doctor: --timeout "${value}": expected a whole number, 1..300\n${usage}`,
      );
    }
    const bad = await runCommand(['doctor'], { ...env, DOCTOR_DNS_SERVERS: 'dns.google' });
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /^unified-worker: invalid configuration: DOCTOR_DNS_SERVERS: "dns\.google" is not an IP address/,
    );
    const setting = await runCommand(['doctor'], { ...env, SMTP_PORT: '70000' });
    assert.equal(setting.code, 1);
    assert.equal(
      setting.stderr,
      'unified-worker: invalid configuration: SMTP_PORT: 70000 is not a valid port (1..65535)\n',
    );
  });
});
