/**
 * `doctor` names the usual reasons no mail arrives, each with a fix that works: the check is red after the fault
 * is made and green again after the fix (often `unified-worker setup`). Against the emulators (fauxqs: SQS, SNS,
 * S3, STS; dynalite; aws-ses-v2-local) plus local peers for what none of them answers: bucket policies
 * (test/harness/s3-bucket-policy.ts), SES identities, receipt rules and configuration sets
 * (test/harness/ses-control-plane.ts), and a DNS server for the MX lookups (test/harness/dns-server.ts).
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { ListSubscriptionsByTopicCommand, SNSClient, UnsubscribeCommand } from '@aws-sdk/client-sns';
import {
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  SetQueueAttributesCommand,
} from '@aws-sdk/client-sqs';

import type { CheckResult } from '../../src/cli/doctor.ts';
import { runCommand } from '../harness/cli-runner.ts';
import { startDnsServer, type DnsServer } from '../harness/dns-server.ts';
import { TEST_CREDENTIALS, TEST_REGION, startStack, type TestStack } from '../harness/emulators.ts';
import type { RuleShape } from '../harness/ses-control-plane.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const ACCOUNT = '000000000000';
const SES_MX = `inbound-smtp.${TEST_REGION}.amazonaws.com`;
const TOPIC = `arn:aws:sns:${TEST_REGION}:${ACCOUNT}:example-com-queue-notifications`;
const QUEUE_ARN = `arn:aws:sqs:${TEST_REGION}:${ACCOUNT}:example-com-queue`;

let stack: TestStack;
let mailbox: SmtpSink;
let internal: SmtpSink;
let dns: DnsServer;
let sns: SNSClient;
let env: Record<string, string>;

interface DoctorReport {
  ok: boolean;
  failed: number;
  checks: CheckResult[];
}

async function doctor(extra: Record<string, string> = {}): Promise<DoctorReport> {
  const run = await runCommand(['doctor', '--json'], { ...env, ...extra });
  const report = run.json<DoctorReport>();
  assert.equal(run.code, report.failed > 0 ? 1 : 0, run.stderr);
  return report;
}

function check(report: DoctorReport, name: string): CheckResult {
  const found = report.checks.find((c) => c.check === name);
  assert.ok(found, `no check "${name}" in ${report.checks.map((c) => c.check).join(', ')}`);
  return found;
}

async function assertGreen(extra: Record<string, string> = {}): Promise<void> {
  const report = await doctor(extra);
  const bad = report.checks.filter((c) => c.status === 'fail' || c.status === 'skip');
  assert.deepEqual(bad, [], 'doctor is green again');
}

function ourRules(): RuleShape[] {
  const rules = stack.ses.control.ruleSets.get('unified-worker');
  assert.ok(rules);
  return rules;
}

before(async () => {
  stack = await startStack();
  [mailbox, internal, dns] = await Promise.all([startSmtpSink(), startSmtpSink(), startDnsServer()]);
  dns.setMx('example.com', [{ exchange: SES_MX, priority: 10 }]);
  stack.ses.control.account = {
    SendingEnabled: true,
    ProductionAccessEnabled: true,
    SendQuota: { Max24HourSend: 50_000, MaxSendRate: 14, SentLast24Hours: 0 },
  };
  sns = new SNSClient({ endpoint: stack.endpoints.sqs, region: TEST_REGION, credentials: TEST_CREDENTIALS });
  env = {
    ...stack.env,
    DOMAINS: 'example.com',
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(mailbox.port),
    INTERNAL_SMTP_PORT: String(internal.port),
    LOOP_MARKER_SECRET: 'a-long-random-test-secret-0123456789',
    DOCTOR_DNS_SERVERS: dns.address,
  };
  const setup = await runCommand(['setup'], env);
  assert.equal(setup.code, 0, setup.stdout);
  stack.ses.control.verify('example.com');
  await assertGreen();
});
after(async () => {
  sns.destroy();
  await Promise.all([mailbox.stop(), internal.stop(), dns.stop()]);
  await stack.stop();
});

describe('doctor: the receipt rule', () => {
  afterEach(() => {
    stack.ses.control.active = 'unified-worker';
  });

  it('a rule set deployed but never activated: the one command that activates it', async () => {
    stack.ses.control.active = undefined;
    const report = await doctor();
    const rule = check(report, 'receipt rule example.com');
    assert.equal(rule.status, 'fail');
    assert.equal(
      rule.detail,
      `no receipt rule set is active in ${TEST_REGION}: SES accepts mail for none of the domains (the set unified-worker has a rule for example.com but is not active)`,
    );
    assert.equal(
      rule.fix,
      `aws ses set-active-receipt-rule-set --rule-set-name unified-worker --region ${TEST_REGION}`,
    );
    // Without a rule there is no topic to follow: said once, not failed again.
    assert.equal(check(report, 'subscription example-com-queue').status, 'skip');
  });

  it('another set is active: the rule is in the inactive one', async () => {
    stack.ses.control.ruleSets.set('theirs', [
      {
        Name: 'shop',
        Enabled: true,
        Recipients: ['shop.example.org'],
        Actions: [{ S3Action: { BucketName: 'x' } }],
      },
    ]);
    stack.ses.control.active = 'theirs';
    const rule = check(await doctor(), 'receipt rule example.com');
    assert.equal(rule.status, 'fail');
    assert.match(
      rule.detail,
      /^the active rule set theirs has no rule for example\.com; its rule example-com-to-worker is in unified-worker, which is not active$/,
    );
    assert.match(
      rule.fix ?? '',
      /^add the rule to theirs \(unified-worker setup --domains example\.com does\)/,
    );
  });

  it('an earlier rule that stops the mail, a disabled rule, a rule without topic', async () => {
    const rules = ourRules();
    const ours = rules[0];
    assert.ok(ours);
    rules.unshift({ Name: 'stop-all', Enabled: true, Actions: [{ StopAction: { Scope: 'RuleSet' } }] });
    try {
      const stopped = check(await doctor(), 'receipt rule example.com');
      assert.equal(stopped.status, 'fail');
      assert.match(stopped.detail, /^rule stop-all \(Stop action\) in unified-worker ends SES's work/);
    } finally {
      rules.shift();
    }
    ours.Enabled = false;
    try {
      const disabled = check(await doctor(), 'receipt rule example.com');
      assert.equal(
        disabled.detail,
        "rule example-com-to-worker in unified-worker would store example.com's mail but is disabled",
      );
      assert.match(disabled.fix ?? '', /^enable rule example-com-to-worker/);
    } finally {
      ours.Enabled = true;
    }
    const actions = ours.Actions;
    ours.Actions = [{ S3Action: { BucketName: 'example-com-emails' } }];
    try {
      const silent = check(await doctor(), 'receipt rule example.com');
      assert.match(silent.detail, /announces it on no SNS topic: the worker never hears of it$/);
      assert.match(silent.fix ?? '', /example-com-queue-notifications\)$/);
    } finally {
      ours.Actions = actions;
    }
  });

  it('a topic ALLOWED_TOPIC_ARNS does not list', async () => {
    const other = `arn:aws:sns:${TEST_REGION}:${ACCOUNT}:something-else`;
    const rule = check(await doctor({ ALLOWED_TOPIC_ARNS: other }), 'receipt rule example.com');
    assert.equal(rule.status, 'fail');
    assert.equal(rule.fix, `add ${TOPIC} to ALLOWED_TOPIC_ARNS`);
    await assertGreen({ ALLOWED_TOPIC_ARNS: `${other},${TOPIC}` });
  });
});

describe('doctor: the MX record', () => {
  afterEach(() => dns.setMx('example.com', [{ exchange: SES_MX, priority: 10 }]));

  const cases: Array<
    [string, Array<{ exchange: string; priority: number }>, 'fail' | 'warn', RegExp, RegExp]
  > = [
    [
      'another mail server',
      [{ exchange: 'mx.provider.example.net', priority: 10 }],
      'fail',
      /^MX points at mx\.provider\.example\.net \(10\), not at SES/,
      new RegExp(`^replace the MX records by example\\.com\\. MX 10 ${SES_MX.replaceAll('.', '\\.')}$`),
    ],
    [
      'SES in another region',
      [{ exchange: 'inbound-smtp.eu-west-1.amazonaws.com.', priority: 10 }],
      'fail',
      /^MX points at SES in eu-west-1, but AWS_REGION is us-east-1/,
      /^set AWS_REGION=eu-west-1 if the rule, bucket and queue are there/,
    ],
    [
      'a server preferred over SES',
      [
        { exchange: SES_MX, priority: 20 },
        { exchange: 'old-mx.example.com', priority: 5 },
      ],
      'fail',
      /^old-mx\.example\.com \(5\) is preferred over or equal to SES \(20\)/,
      /^remove those MX records/,
    ],
    [
      'a backup MX',
      [
        { exchange: SES_MX, priority: 10 },
        { exchange: 'backup.example.com', priority: 50 },
      ],
      'warn',
      /backup MX backup\.example\.com: mail a backup accepts never reaches SES$/,
      /^remove the backup MX records/,
    ],
    [
      'no MX record',
      [],
      'fail',
      /^example\.com has no MX record/,
      /^publish example\.com\. MX 10 inbound-smtp/,
    ],
  ];
  for (const [name, records, status, detail, fix] of cases) {
    it(name, async () => {
      dns.setMx('example.com', records);
      const mx = check(await doctor(), 'MX example.com');
      assert.equal(mx.status, status);
      assert.match(mx.detail, detail);
      assert.match(mx.fix ?? '', fix);
    });
  }
});

describe('doctor: the SES identity', () => {
  it('not an identity, or DKIM records not found', async () => {
    const identity = stack.ses.control.identities.get('example.com');
    assert.ok(identity);
    stack.ses.control.identities.delete('example.com');
    try {
      const missing = check(await doctor(), 'SES identity example.com');
      assert.equal(missing.status, 'fail');
      assert.match(missing.detail, /^not an SES identity in us-east-1/);
      assert.match(missing.fix ?? '', /^unified-worker setup --domains example\.com \(creates it/);
    } finally {
      stack.ses.control.identities.set('example.com', identity);
    }
    stack.ses.control.identities.set('example.com', { ...identity, verification: 'FAILED', dkim: 'FAILED' });
    try {
      const report = await doctor();
      assert.equal(check(report, 'SES identity example.com').status, 'fail');
      const dkim = check(report, 'DKIM example.com');
      assert.equal(dkim.status, 'fail');
      assert.match(
        dkim.fix ?? '',
        new RegExp(`^publish ${identity.tokens[0]}\\._domainkey\\.example\\.com CNAME`),
      );
    } finally {
      stack.ses.control.identities.set('example.com', identity);
    }
  });
});

describe('doctor: the bucket policy', () => {
  const policies = () => stack.fauxqs.server.bucketPolicies;

  it('none, another account, any account; setup adds what is missing', async () => {
    const original = policies().get('example-com-emails');
    assert.ok(original);
    const statement = {
      Sid: 'Ses',
      Effect: 'Allow',
      Principal: { Service: 'ses.amazonaws.com' },
      Action: 's3:PutObject',
      Resource: 'arn:aws:s3:::example-com-emails/*',
    };
    policies().set(
      'example-com-emails',
      JSON.stringify({
        Statement: [{ ...statement, Condition: { StringEquals: { 'aws:SourceAccount': '111122223333' } } }],
      }),
    );
    const foreign = check(await doctor(), 'bucket policy example-com-emails');
    assert.equal(foreign.status, 'fail');
    assert.match(
      foreign.detail,
      /^statement Ses lets SES write only under .*111122223333.*, which this account \(000000000000\) does not meet$/,
    );

    policies().set('example-com-emails', JSON.stringify({ Statement: [statement] }));
    const open = check(await doctor(), 'bucket policy example-com-emails');
    assert.equal(open.status, 'warn');
    assert.equal(open.fix, `add the condition StringEquals aws:SourceAccount = ${ACCOUNT} to it`);

    policies().delete('example-com-emails');
    const none = check(await doctor(), 'bucket policy example-com-emails');
    assert.equal(none.status, 'fail');
    assert.equal(none.fix, 'unified-worker setup --domains example.com (adds a statement that does)');

    const setup = await runCommand(['setup', '--json'], env);
    const items = setup.json<{ items: Array<{ kind: string; outcome: string }> }>().items;
    assert.equal(items.find((i) => i.kind === 'bucket policy')?.outcome, 'created');
    await assertGreen();
  });
});

describe('doctor: from the topic to the queue', () => {
  it('the queue is not subscribed; setup subscribes it again', async () => {
    const { Subscriptions } = await sns.send(new ListSubscriptionsByTopicCommand({ TopicArn: TOPIC }));
    const ours = Subscriptions?.find((s) => s.Endpoint === QUEUE_ARN);
    assert.ok(ours?.SubscriptionArn);
    await sns.send(new UnsubscribeCommand({ SubscriptionArn: ours.SubscriptionArn }));
    const missing = check(await doctor(), 'subscription example-com-queue');
    assert.equal(missing.status, 'fail');
    assert.equal(
      missing.detail,
      `example-com-queue does not subscribe to ${TOPIC}: the notifications never reach the worker`,
    );
    assert.equal((await runCommand(['setup'], env)).code, 0);
    await assertGreen();
  });

  it('a queue policy that lets another topic send; setup adds a statement and keeps the old one', async () => {
    const { QueueUrl } = await stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'example-com-queue' }));
    const other = {
      Sid: 'Other',
      Effect: 'Allow',
      Principal: { Service: 'sns.amazonaws.com' },
      Action: 'sqs:SendMessage',
      Resource: QUEUE_ARN,
      Condition: { ArnEquals: { 'aws:SourceArn': `${TOPIC}-old` } },
    };
    await stack.sqs.send(
      new SetQueueAttributesCommand({
        QueueUrl,
        Attributes: { Policy: JSON.stringify({ Statement: [other] }) },
      }),
    );
    const policy = check(await doctor(), 'queue policy example-com-queue');
    assert.equal(policy.status, 'fail');
    assert.match(
      policy.detail,
      /^statement Other lets SNS send only under .*-old.*, which arn:aws:sns:.*:example-com-queue-notifications does not meet$/,
    );

    const setup = await runCommand(['setup', '--json'], env);
    const items = setup.json<{ items: Array<{ kind: string; name: string; outcome: string }> }>().items;
    assert.equal(
      items.find((i) => i.kind === 'queue policy' && i.name === 'example-com-queue')?.outcome,
      'updated',
    );
    const { Attributes } = await stack.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['Policy'] }),
    );
    const statements = (JSON.parse(Attributes?.Policy ?? '{}') as { Statement: Array<{ Sid: string }> })
      .Statement;
    assert.deepEqual(
      statements.map((s) => s.Sid),
      ['Other', 'AllowSnsexamplecomqueuenotifications'],
    );
    await assertGreen();
  });
});

describe('doctor: the configuration set and its events', () => {
  it('a missing configuration set fails (SES refuses sends naming it); none is a warning', async () => {
    const destinations = stack.ses.control.configurationSets.get('unified-worker');
    assert.ok(destinations);
    stack.ses.control.configurationSets.delete('unified-worker');
    try {
      const report = await doctor();
      const set = check(report, 'configuration set unified-worker');
      assert.equal(set.status, 'fail');
      assert.match(
        set.fix ?? '',
        /^unified-worker setup \(creates it with its event destination\), or set SES_CONFIGURATION_SET=none$/,
      );
      assert.ok(
        !report.checks.some((c) => c.check === 'event destination unified-worker'),
        'nothing to follow',
      );
      const none = check(await doctor({ SES_CONFIGURATION_SET: 'none' }), 'SES_CONFIGURATION_SET');
      assert.equal(none.status, 'warn');
    } finally {
      stack.ses.control.configurationSets.set('unified-worker', destinations);
    }
  });

  it('an event destination without SEND events', async () => {
    const destinations = stack.ses.control.configurationSets.get('unified-worker');
    const destination = destinations?.[0];
    assert.ok(destination);
    const types = destination.MatchingEventTypes;
    destination.MatchingEventTypes = ['BOUNCE'];
    try {
      const report = await doctor();
      const events = check(report, 'event destination unified-worker');
      assert.equal(events.status, 'fail');
      assert.match(
        events.detail,
        /^no enabled destination publishes SEND events to SNS: nothing reaches ses-outbound-events/,
      );
      assert.ok(
        !report.checks.some((c) => c.check === 'subscription ses-outbound-events'),
        'no topic to follow',
      );
    } finally {
      destination.MatchingEventTypes = types;
    }
    await assertGreen();
  });
});
