/**
 * The synthesized template against what the daemon uses: table key schemas and TTL attributes (TABLES), queue and
 * bucket names (QUEUE_NAME_TEMPLATE, BUCKET_NAME_TEMPLATE defaults), redrive count (MAX_RECEIVES), and the worker
 * policy = exactly DAEMON_PERMISSIONS on exactly this stack's resources. Plus: the committed template is current,
 * the AwsSolutions checks pass, and bad options are refused with the key named.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import {
  DAEMON_PERMISSIONS,
  TABLES,
  deadLetterQueueName,
  nameFromTemplate,
} from '../../../src/aws/resources.ts';
import { SETTINGS } from '../../../src/config/settings.ts';
import { STACK_ID, buildApp } from '../lib/app.ts';
import { DEFAULT_IDEMPOTENCY_TABLE, StackOptionsError, readStackOptions } from '../lib/options.ts';
import type { UnifiedWorkerStack } from '../lib/unified-worker-stack.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const cdkJson = JSON.parse(readFileSync(path.join(root, 'cdk.json'), 'utf8')) as {
  context: Record<string, unknown>;
};
const COMMITTED = path.join(root, 'unified-worker.template.json');

type Json = Record<string, unknown>;
interface Resource {
  Type: string;
  Properties: Json;
  DependsOn?: string[];
  Metadata?: Json;
}
interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Principal?: unknown;
  Condition?: Json;
  NotAction?: unknown;
  NotResource?: unknown;
}

const outdirs: string[] = [];
after(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

/** The app as `cdk synth` builds it from cdk.json, plus `context` overrides; synthesized into a temp dir. */
function synth(context: Record<string, unknown> = {}, extend?: (stack: UnifiedWorkerStack) => void) {
  const outdir = mkdtempSync(path.join(tmpdir(), 'unified-worker-cdk-'));
  outdirs.push(outdir);
  // The CLI adds these from cdk.json's "versionReporting"/"pathMetadata"; the committed template is built with them.
  const app = new App({
    outdir,
    analyticsReporting: false,
    context: { ...cdkJson.context, ...context },
    postCliContext: { 'aws:cdk:enable-path-metadata': false },
  });
  const stack = buildApp(app);
  extend?.(stack);
  try {
    app.synth();
  } catch (error) {
    // A failing policy-validation plugin (cdk-nag) makes synth throw after writing its report, which is what we read.
    if (!(error instanceof Error && error.name === 'ValidationFailed')) throw error;
  }
  const report = JSON.parse(readFileSync(path.join(outdir, 'validation-report.json'), 'utf8')) as {
    pluginReports: Array<{
      pluginName: string;
      conclusion: string;
      violations: Array<{ ruleName: string; violatingConstructs: Array<{ constructPath: string }> }>;
    }>;
  };
  // The file the synth wrote (what `cdk synth` writes too); Template.fromStack would synthesize, and fail, again.
  const template = Template.fromJSON(
    JSON.parse(readFileSync(path.join(outdir, stack.templateFile), 'utf8')) as Json,
  );
  return {
    stack,
    template,
    json: template.toJSON() as { Resources: Record<string, Resource>; Outputs: Record<string, Json> },
    report,
  };
}

function resourcesOfType(
  json: { Resources: Record<string, Resource> },
  type: string,
): Array<[string, Resource]> {
  return Object.entries(json.Resources).filter(([, r]) => r.Type === type);
}

function logicalIdWhere(
  json: { Resources: Record<string, Resource> },
  type: string,
  property: string,
  value: string,
) {
  const found = resourcesOfType(json, type).filter(([, r]) => r.Properties[property] === value);
  assert.equal(found.length, 1, `exactly one ${type} with ${property}=${value}, found ${found.length}`);
  return found[0]![0];
}

const DEFAULT = synth();
const DOMAINS = readStackOptions((key) => cdkJson.context[key]).domains;
const queueNameOf = (domain: string) => nameFromTemplate(SETTINGS.QUEUE_NAME_TEMPLATE.default, domain);
const bucketNameOf = (domain: string) => nameFromTemplate(SETTINGS.BUCKET_NAME_TEMPLATE.default, domain);
const tableNameOf = (setting: string) =>
  setting === 'IDEMPOTENCY_TABLE'
    ? SETTINGS.IDEMPOTENCY_TABLE.default || DEFAULT_IDEMPOTENCY_TABLE
    : SETTINGS[setting as keyof typeof SETTINGS].default;

describe('the committed template', () => {
  it('is what the app synthesizes from cdk.json (run `npm run synth` in deploy/aws after changing the app or src/aws/resources.ts)', () => {
    const committed: unknown = JSON.parse(readFileSync(COMMITTED, 'utf8'));
    assert.deepEqual(committed, DEFAULT.json);
  });

  it('deploys without `cdk bootstrap`: no bootstrap parameter or rule, no assets', () => {
    const json = DEFAULT.json as Json;
    assert.equal(JSON.stringify(json.Parameters ?? {}).includes('BootstrapVersion'), false);
    assert.equal(JSON.stringify(json.Rules ?? {}).includes('CheckBootstrapVersion'), false);
    // CloudFormation takes a template body of up to 51,200 bytes without an S3 upload (what bootstrap provides).
    assert.ok(JSON.stringify(json).length < 51_200, `template is ${JSON.stringify(json).length} bytes`);
  });
});

describe('DynamoDB tables', () => {
  it('one per TABLES entry, with the key schema and TTL attribute the daemon expects, on demand', () => {
    const tables = resourcesOfType(DEFAULT.json, 'AWS::DynamoDB::Table');
    assert.equal(tables.length, TABLES.length);
    for (const spec of TABLES) {
      const name = tableNameOf(spec.setting);
      const id = logicalIdWhere(DEFAULT.json, 'AWS::DynamoDB::Table', 'TableName', name);
      const props = DEFAULT.json.Resources[id]!.Properties;
      assert.deepEqual(props.KeySchema, [{ AttributeName: spec.partitionKey, KeyType: 'HASH' }], name);
      assert.deepEqual(
        props.AttributeDefinitions,
        [{ AttributeName: spec.partitionKey, AttributeType: 'S' }],
        name,
      );
      assert.equal(props.BillingMode, 'PAY_PER_REQUEST', name);
      assert.deepEqual(
        props.TimeToLiveSpecification,
        spec.ttlAttribute === undefined ? undefined : { AttributeName: spec.ttlAttribute, Enabled: true },
        name,
      );
      assert.deepEqual(props.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true }, name);
      assert.equal(DEFAULT.json.Resources[id]!.Type, 'AWS::DynamoDB::Table');
    }
    DEFAULT.template.allResources('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain' });
  });
});

describe('per domain', () => {
  for (const domain of DOMAINS) {
    it(`${domain}: queue named by QUEUE_NAME_TEMPLATE, redriven to its dead-letter queue after MAX_RECEIVES`, () => {
      const queueId = logicalIdWhere(DEFAULT.json, 'AWS::SQS::Queue', 'QueueName', queueNameOf(domain));
      const dlqId = logicalIdWhere(
        DEFAULT.json,
        'AWS::SQS::Queue',
        'QueueName',
        deadLetterQueueName(queueNameOf(domain)),
      );
      const queue = DEFAULT.json.Resources[queueId]!.Properties;
      assert.deepEqual(queue.RedrivePolicy, {
        deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] },
        maxReceiveCount: Number(SETTINGS.MAX_RECEIVES.default),
      });
      assert.equal(queue.MessageRetentionPeriod, 14 * 86_400);
      assert.equal(DEFAULT.json.Resources[dlqId]!.Properties.MessageRetentionPeriod, 14 * 86_400);
      assert.equal(queue.SqsManagedSseEnabled, true);
      assert.equal(queue.VisibilityTimeout, 30);
    });

    it(`${domain}: the topic is subscribed by the queue, which lets only that topic send to it`, () => {
      const queueId = logicalIdWhere(DEFAULT.json, 'AWS::SQS::Queue', 'QueueName', queueNameOf(domain));
      const dlqId = logicalIdWhere(
        DEFAULT.json,
        'AWS::SQS::Queue',
        'QueueName',
        deadLetterQueueName(queueNameOf(domain)),
      );
      const subscriptions = resourcesOfType(DEFAULT.json, 'AWS::SNS::Subscription').filter(
        ([, r]) =>
          JSON.stringify(r.Properties.Endpoint) === JSON.stringify({ 'Fn::GetAtt': [queueId, 'Arn'] }),
      );
      assert.equal(subscriptions.length, 1);
      const subscription = subscriptions[0]![1].Properties;
      assert.equal(subscription.Protocol, 'sqs');
      assert.deepEqual(subscription.RedrivePolicy, { deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] } });
      const topicRef = subscription.TopicArn as { Ref: string };
      assert.equal(DEFAULT.json.Resources[topicRef.Ref]!.Type, 'AWS::SNS::Topic');
      const policies = resourcesOfType(DEFAULT.json, 'AWS::SQS::QueuePolicy').filter(
        ([, r]) => JSON.stringify(r.Properties.Queues) === JSON.stringify([{ Ref: queueId }]),
      );
      assert.equal(policies.length, 1);
      const statements = (policies[0]![1].Properties.PolicyDocument as { Statement: Statement[] }).Statement;
      const allow = statements.filter((s) => s.Effect === 'Allow');
      assert.deepEqual(allow, [
        {
          Action: 'sqs:SendMessage',
          Condition: { ArnEquals: { 'aws:SourceArn': topicRef } },
          Effect: 'Allow',
          Principal: { Service: 'sns.amazonaws.com' },
          Resource: { 'Fn::GetAtt': [queueId, 'Arn'] },
        },
      ]);
    });

    it(`${domain}: bucket named by BUCKET_NAME_TEMPLATE; SES may write to it under AWS:SourceAccount, not AWS:SourceArn`, () => {
      const bucketId = logicalIdWhere(DEFAULT.json, 'AWS::S3::Bucket', 'BucketName', bucketNameOf(domain));
      const policies = resourcesOfType(DEFAULT.json, 'AWS::S3::BucketPolicy').filter(
        ([, r]) => JSON.stringify(r.Properties.Bucket) === JSON.stringify({ Ref: bucketId }),
      );
      assert.equal(policies.length, 1);
      const [policyId, policy] = policies[0]!;
      const statements = (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement;
      const sesWrites = statements.filter(
        (s) => JSON.stringify(s.Principal) === JSON.stringify({ Service: 'ses.amazonaws.com' }),
      );
      assert.deepEqual(sesWrites, [
        {
          Action: 's3:PutObject',
          Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
          Effect: 'Allow',
          Principal: { Service: 'ses.amazonaws.com' },
          Resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/*']] },
        },
      ]);
      // SES checks the bucket policy when the rule is created, before the rule (its SourceArn) exists.
      assert.equal(JSON.stringify(policy).toLowerCase().includes('sourcearn'), false);
      const bucket = DEFAULT.json.Resources[bucketId]!.Properties;
      assert.deepEqual(bucket.PublicAccessBlockConfiguration, {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });

      const rules = resourcesOfType(DEFAULT.json, 'AWS::SES::ReceiptRule').filter(
        ([, r]) => JSON.stringify((r.Properties.Rule as Json).Recipients) === JSON.stringify([domain]),
      );
      assert.equal(rules.length, 1);
      const [, rule] = rules[0]!;
      const body = rule.Properties.Rule as {
        Actions: Array<{ S3Action?: Json }>;
        Enabled: boolean;
        ScanEnabled: boolean;
      };
      assert.equal(body.Enabled, true);
      assert.equal(body.ScanEnabled, true, 'SES verdicts (spam, virus, SPF, DKIM, DMARC) need scanning');
      assert.equal(body.Actions.length, 1);
      assert.deepEqual(body.Actions[0]!.S3Action!.BucketName, { Ref: bucketId });
      const topicId = (body.Actions[0]!.S3Action!.TopicArn as { Ref: string }).Ref;
      assert.equal(DEFAULT.json.Resources[topicId]!.Type, 'AWS::SNS::Topic');
      assert.ok(rule.DependsOn?.includes(policyId), 'the rule is created after the bucket policy SES checks');
    });

    it(`${domain}: outputs its queue URL, dead-letter queue URL, bucket name and MX record`, () => {
      const queueId = logicalIdWhere(DEFAULT.json, 'AWS::SQS::Queue', 'QueueName', queueNameOf(domain));
      const outputs = Object.values(DEFAULT.json.Outputs);
      assert.ok(
        outputs.some((o) => JSON.stringify(o.Value) === JSON.stringify({ Ref: queueId })),
        'queue URL',
      );
      assert.ok(
        outputs.some((o) => o.Value === bucketNameOf(domain)),
        'bucket name',
      );
      const mx = outputs.find((o) => JSON.stringify(o.Value).includes(`${domain}. MX 10 inbound-smtp.`));
      assert.ok(mx, 'MX record');
      assert.ok(JSON.stringify(mx.Value).includes('"Ref":"AWS::Region"'));
      assert.equal(
        outputs.filter(
          (o) =>
            JSON.stringify(o.Description ?? '').includes(`DKIM CNAME`) &&
            JSON.stringify(o.Description).includes(domain),
        ).length,
        3,
      );
    });
  }

  it('one receipt rule set holds every domain’s rule, in a fixed order', () => {
    DEFAULT.template.resourceCountIs('AWS::SES::ReceiptRuleSet', 1);
    DEFAULT.template.resourceCountIs('AWS::SES::ReceiptRule', DOMAINS.length);
    DEFAULT.template.resourceCountIs('AWS::SES::EmailIdentity', DOMAINS.length);
    DEFAULT.template.resourcePropertiesCountIs(
      'AWS::SES::ReceiptRule',
      { After: Match.anyValue() },
      DOMAINS.length - 1,
    );
  });
});

describe('the worker policy', () => {
  const policies = resourcesOfType(DEFAULT.json, 'AWS::IAM::ManagedPolicy');
  const statements = () =>
    (policies[0]![1].Properties.PolicyDocument as { Statement: Statement[] }).Statement;

  /** `action resource` pairs, resources as their CloudFormation JSON. */
  function granted(list: Statement[]): Set<string> {
    const pairs = new Set<string>();
    for (const s of list) {
      const actions = Array.isArray(s.Action) ? s.Action : [s.Action];
      const resources = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
      for (const a of actions) for (const r of resources) pairs.add(`${a} ${JSON.stringify(r)}`);
    }
    return pairs;
  }

  it('is the only policy, allow-only, without wildcards in actions, conditions, NotAction or NotResource', () => {
    assert.equal(policies.length, 1);
    DEFAULT.template.resourceCountIs('AWS::IAM::Role', 0);
    DEFAULT.template.resourceCountIs('AWS::IAM::Policy', 0);
    for (const s of statements()) {
      assert.equal(s.Effect, 'Allow');
      assert.equal(s.Condition, undefined);
      assert.equal(s.NotAction, undefined);
      assert.equal(s.NotResource, undefined);
      for (const a of [s.Action].flat()) assert.doesNotMatch(a, /\*/);
    }
  });

  it('grants exactly DAEMON_PERMISSIONS, each on exactly the resources of its kind in this stack', () => {
    const arnOf = (type: string, property: string, value: string) => ({
      'Fn::GetAtt': [logicalIdWhere(DEFAULT.json, type, property, value), 'Arn'],
    });
    const identityArn = (identity: string) => ({
      'Fn::Join': [
        '',
        [
          'arn:',
          { Ref: 'AWS::Partition' },
          ':ses:',
          { Ref: 'AWS::Region' },
          ':',
          { Ref: 'AWS::AccountId' },
          `:identity/${identity}`,
        ],
      ],
    });
    const resources: Record<string, unknown[]> = {
      'domain-queue': DOMAINS.map((d) => arnOf('AWS::SQS::Queue', 'QueueName', queueNameOf(d))),
      'mail-bucket-objects': DOMAINS.map((d) => ({
        'Fn::Join': ['', [arnOf('AWS::S3::Bucket', 'BucketName', bucketNameOf(d)), '/*']],
      })),
      table: TABLES.map((t) => arnOf('AWS::DynamoDB::Table', 'TableName', tableNameOf(t.setting))),
      'ses-identity': DOMAINS.map(identityArn),
      account: ['*'],
    };
    const expected = new Set<string>();
    for (const p of DAEMON_PERMISSIONS) {
      const of = resources[p.resource];
      assert.ok(of, `no resources known for kind ${p.resource} (${p.action})`);
      for (const r of of) expected.add(`${p.action} ${JSON.stringify(r)}`);
    }
    assert.deepEqual([...granted(statements())].sort(), [...expected].sort());
    const output = Object.values(DEFAULT.json.Outputs).find(
      (o) => JSON.stringify(o.Value) === JSON.stringify({ Ref: policies[0]![0] }),
    );
    assert.ok(output, 'the policy ARN is an output');
  });

  it('follows the names it is given: another queue template and extra SES identities change the resources, not the actions', () => {
    const custom = synth({ queueNameTemplate: 'mail-{domain}', extraSesIdentities: 'friend@elsewhere.test' });
    const list = (
      resourcesOfType(custom.json, 'AWS::IAM::ManagedPolicy')[0]![1].Properties.PolicyDocument as {
        Statement: Statement[];
      }
    ).Statement;
    const pairs = [...granted(list)];
    const queueId = logicalIdWhere(custom.json, 'AWS::SQS::Queue', 'QueueName', 'mail-example-com');
    logicalIdWhere(custom.json, 'AWS::SQS::Queue', 'QueueName', 'mail-example-com-dlq');
    assert.ok(pairs.includes(`sqs:ReceiveMessage ${JSON.stringify({ 'Fn::GetAtt': [queueId, 'Arn'] })}`));
    assert.ok(
      pairs.some((p) => p.startsWith('ses:SendEmail ') && p.includes(':identity/friend@elsewhere.test')),
    );
    assert.deepEqual(
      new Set(pairs.map((p) => p.split(' ')[0])),
      new Set(DAEMON_PERMISSIONS.map((p) => p.action)),
    );
  });
});

describe('options', () => {
  it('an EKS OIDC issuer adds a role for the worker and KEDA service accounts, with the worker policy attached', () => {
    const issuer = 'oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE';
    const { json, template } = synth({
      eksOidcIssuer: `https://${issuer}`,
      workerServiceAccount: 'mail:unified-worker',
    });
    const roles = resourcesOfType(json, 'AWS::IAM::Role');
    assert.equal(roles.length, 1);
    const role = roles[0]![1].Properties as {
      AssumeRolePolicyDocument: { Statement: Statement[] };
      ManagedPolicyArns: unknown[];
    };
    const policyId = resourcesOfType(json, 'AWS::IAM::ManagedPolicy')[0]![0];
    assert.deepEqual(role.ManagedPolicyArns, [{ Ref: policyId }]);
    assert.deepEqual(role.AssumeRolePolicyDocument.Statement, [
      {
        Action: 'sts:AssumeRoleWithWebIdentity',
        Condition: {
          StringEquals: {
            [`${issuer}:aud`]: 'sts.amazonaws.com',
            [`${issuer}:sub`]: [
              'system:serviceaccount:mail:unified-worker',
              'system:serviceaccount:keda:keda-operator',
            ],
          },
        },
        Effect: 'Allow',
        Principal: {
          Federated: {
            'Fn::Join': [
              '',
              [
                'arn:',
                { Ref: 'AWS::Partition' },
                ':iam::',
                { Ref: 'AWS::AccountId' },
                `:oidc-provider/${issuer}`,
              ],
            ],
          },
        },
      },
    ]);
    template.hasOutput('WorkerRoleArn', { Value: { 'Fn::GetAtt': [roles[0]![0], 'Arn'] } });
  });

  it('mailRetentionDays expires stored mail; createEmailIdentities=false leaves existing identities alone', () => {
    const { template } = synth({
      mailRetentionDays: '90',
      createEmailIdentities: 'false',
      domains: 'example.org',
    });
    template.resourceCountIs('AWS::SES::EmailIdentity', 0);
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketName: 'example-org-emails',
      LifecycleConfiguration: { Rules: [{ ExpirationInDays: 90, Status: 'Enabled' }] },
    });
  });

  it('refuses unusable input, naming the context key', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ domains: '' }, /context domains: no domains given/],
      [{ domains: 'Example..com' }, /context domains: "example\.\.com" is not valid/],
      [{ domains: 'a.com,a.com' }, /listed twice/],
      [{ queueNameTemplate: 'static-queue' }, /queueNameTemplate: "static-queue" must contain \{domain\}/],
      [
        { bucketNameTemplate: '{domain}_Mail' },
        /bucket name "example-com_Mail" for example.com is not a valid S3 bucket name/,
      ],
      [{ maxReceives: '0' }, /context maxReceives: expected a whole number 1\.\.1000/],
      [{ createEmailIdentities: 'yes' }, /context createEmailIdentities: expected true or false/],
      [{ rulesTable: 'email-worker-idempotency' }, /two tables have the same name/],
      [{ eksOidcIssuer: 'https://example.com/id/1' }, /context eksOidcIssuer/],
      [
        { eksOidcIssuer: 'oidc.eks.eu-west-1.amazonaws.com/id/ABC', workerServiceAccount: 'worker' },
        /namespace:name/,
      ],
    ];
    for (const [context, message] of cases) {
      assert.throws(
        () => synth(context),
        (error: unknown) => error instanceof StackOptionsError && message.test(error.message),
        JSON.stringify(context),
      );
    }
  });
});

describe('cdk-nag AwsSolutions', () => {
  it('passes, every acknowledgement giving its reason', () => {
    assert.deepEqual(
      DEFAULT.report.pluginReports.filter((r) => r.conclusion !== 'success'),
      [],
      JSON.stringify(DEFAULT.report, null, 1),
    );
    const acknowledged = Object.values(DEFAULT.json.Resources).flatMap(
      (r) =>
        (r.Metadata?.cdk_nag as { rules_to_suppress?: Array<{ id: string; reason: string }> } | undefined)
          ?.rules_to_suppress ?? [],
    );
    assert.ok(acknowledged.length > 0);
    for (const { id, reason } of acknowledged) {
      assert.match(id, /^AwsSolutions-/);
      assert.ok(reason.length >= 40, `${id}: "${reason}" does not say why`);
    }
  });

  it('does run: an unacknowledged bucket added to the stack is reported', () => {
    const { report } = synth({}, (stack: Stack) => {
      new s3.Bucket(stack, 'CarelessBucket');
    });
    const violations = report.pluginReports.flatMap((r) => r.violations);
    const paths = violations.flatMap((v) =>
      v.violatingConstructs.map((c) => `${v.ruleName} ${c.constructPath}`),
    );
    assert.ok(paths.includes(`AwsSolutions-S1 ${STACK_ID}/CarelessBucket/Resource`), paths.join('\n'));
    assert.ok(
      paths.every((p) => p.includes('CarelessBucket')),
      paths.join('\n'),
    );
  });
});
