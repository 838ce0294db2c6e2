/**
 * The synthesized stacks against what the daemon uses: table key schemas and TTL attributes (TABLES), queue, bucket
 * and topic names (QUEUE_NAME_TEMPLATE, BUCKET_NAME_TEMPLATE defaults), redrive count (MAX_RECEIVES), the SES
 * configuration set and the outbound events queue (SES_CONFIGURATION_SET, OUTBOUND_EVENTS_QUEUE), and the worker
 * policies = exactly DAEMON_PERMISSIONS on exactly this deployment's resources. Plus: the committed templates are
 * current, the AwsSolutions checks pass, and bad options are refused with the key named. Sizes: sizes.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import {
  DAEMON_PERMISSIONS,
  OUTBOUND_EVENT_DESTINATION,
  TABLES,
  deadLetterQueueName,
  nameFromTemplate,
  notificationTopicName,
} from '../../../src/aws/resources.ts';
import { SETTINGS } from '../../../src/config/settings.ts';
import { DEFAULT_IDEMPOTENCY_TABLE, StackOptionsError } from '../lib/options.ts';
import { LONGEST_PSEUDO_PARAMETERS, MANAGED_POLICY_MAX_CHARS } from '../lib/worker-policy.ts';
import { TEST_ENV, evaluate } from './cfn-eval.ts';
import {
  APP_DIR,
  type Json,
  type Resource,
  type Synthesized,
  type TemplateJson,
  removeSynthOutput,
  synth,
} from './synth.ts';

after(removeSynthOutput);

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Principal?: unknown;
  Condition?: Json;
  NotAction?: unknown;
  NotResource?: unknown;
}

/** The context `npm run synth` writes the committed templates with. */
const EXAMPLE_DOMAINS = ['example.com', 'another.com'];
const TEMPLATES_DIR = path.join(APP_DIR, 'templates');
const EXAMPLE = synth({ domains: EXAMPLE_DOMAINS.join(',') });
const SHARED = EXAMPLE.template(EXAMPLE.app.shared);

const queueNameOf = (domain: string) => nameFromTemplate(SETTINGS.QUEUE_NAME_TEMPLATE.default, domain);
const bucketNameOf = (domain: string) => nameFromTemplate(SETTINGS.BUCKET_NAME_TEMPLATE.default, domain);
const tableNameOf = (setting: string) =>
  setting === 'IDEMPOTENCY_TABLE'
    ? SETTINGS.IDEMPOTENCY_TABLE.default || DEFAULT_IDEMPOTENCY_TABLE
    : SETTINGS[setting as keyof typeof SETTINGS].default;
const EVENTS_QUEUE = SETTINGS.OUTBOUND_EVENTS_QUEUE.default;
const CONFIGURATION_SET = SETTINGS.SES_CONFIGURATION_SET.default;

function resourcesOfType(json: TemplateJson, type: string): Array<[string, Resource]> {
  return Object.entries(json.Resources).filter(([, r]) => r.Type === type);
}

function logicalIdWhere(json: TemplateJson, type: string, property: string, value: string): string {
  const found = resourcesOfType(json, type).filter(([, r]) => r.Properties[property] === value);
  assert.equal(found.length, 1, `exactly one ${type} with ${property}=${value}, found ${found.length}`);
  return found[0]![0];
}

function statementsOf(resource: Resource): Statement[] {
  return (resource.Properties.PolicyDocument as { Statement: Statement[] }).Statement;
}

function domainTemplate(result: Synthesized, domain: string): TemplateJson {
  const stack = result.app.domains.find((s) => s.domain === domain);
  assert.ok(stack, `no stack for ${domain}`);
  return result.template(stack);
}

/** The queue `queueName` in `json` is redriven to its dead-letter queue after MAX_RECEIVES, and keeps 14 days. */
function assertQueueWithDeadLetterQueue(
  json: TemplateJson,
  queueName: string,
): { queueId: string; dlqId: string } {
  const queueId = logicalIdWhere(json, 'AWS::SQS::Queue', 'QueueName', queueName);
  const dlqId = logicalIdWhere(json, 'AWS::SQS::Queue', 'QueueName', deadLetterQueueName(queueName));
  const queue = json.Resources[queueId]!.Properties;
  assert.deepEqual(queue.RedrivePolicy, {
    deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] },
    maxReceiveCount: Number(SETTINGS.MAX_RECEIVES.default),
  });
  assert.equal(queue.MessageRetentionPeriod, 14 * 86_400);
  assert.equal(json.Resources[dlqId]!.Properties.MessageRetentionPeriod, 14 * 86_400);
  assert.equal(queue.SqsManagedSseEnabled, true);
  assert.equal(queue.VisibilityTimeout, 30);
  assert.equal(json.Resources[queueId]!.DeletionPolicy, 'Retain');
  return { queueId, dlqId };
}

/** The queue subscribes to `topicId` (SNS envelope, undeliverable to the DLQ) and lets only that topic send. */
function assertSubscribedToTopic(json: TemplateJson, queueId: string, dlqId: string): string {
  const subscriptions = resourcesOfType(json, 'AWS::SNS::Subscription').filter(
    ([, r]) => JSON.stringify(r.Properties.Endpoint) === JSON.stringify({ 'Fn::GetAtt': [queueId, 'Arn'] }),
  );
  assert.equal(subscriptions.length, 1);
  const subscription = subscriptions[0]![1].Properties;
  assert.equal(subscription.Protocol, 'sqs');
  assert.notEqual(subscription.RawMessageDelivery, true, 'the daemon reads the SNS envelope');
  assert.deepEqual(subscription.RedrivePolicy, { deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] } });
  const topicRef = subscription.TopicArn as { Ref: string };
  assert.equal(json.Resources[topicRef.Ref]!.Type, 'AWS::SNS::Topic');
  const policies = resourcesOfType(json, 'AWS::SQS::QueuePolicy').filter(
    ([, r]) => JSON.stringify(r.Properties.Queues) === JSON.stringify([{ Ref: queueId }]),
  );
  assert.equal(policies.length, 1);
  assert.deepEqual(
    statementsOf(policies[0]![1]).filter((s) => s.Effect === 'Allow'),
    [
      {
        Action: 'sqs:SendMessage',
        Condition: { ArnEquals: { 'aws:SourceArn': topicRef } },
        Effect: 'Allow',
        Principal: { Service: 'sns.amazonaws.com' },
        Resource: { 'Fn::GetAtt': [queueId, 'Arn'] },
      },
    ],
  );
  return topicRef.Ref;
}

describe('the committed templates (deploy/aws/templates)', () => {
  it('are what the app synthesizes for example.com and another.com (`npm run synth` in deploy/aws after a change)', () => {
    const committed = readdirSync(TEMPLATES_DIR).sort();
    assert.deepEqual(committed, [...EXAMPLE.files.keys()].map((name) => `${name}.template.json`).sort());
    for (const [name, json] of EXAMPLE.files) {
      const file: unknown = JSON.parse(
        readFileSync(path.join(TEMPLATES_DIR, `${name}.template.json`), 'utf8'),
      );
      assert.deepEqual(file, JSON.parse(json), `templates/${name}.template.json is stale: \`npm run synth\``);
    }
  });

  it('deploy without `cdk bootstrap`: no bootstrap parameter or rule in any stack', () => {
    for (const [name, json] of EXAMPLE.files) {
      const template = JSON.parse(json) as TemplateJson;
      assert.equal(JSON.stringify(template.Parameters ?? {}).includes('BootstrapVersion'), false, name);
      assert.equal(JSON.stringify(template.Rules ?? {}).includes('CheckBootstrapVersion'), false, name);
    }
  });

  it('are the policy stack, the shared stack and a stack per domain, in that deploy order', () => {
    assert.deepEqual(
      [...EXAMPLE.files.keys()],
      [
        'unified-worker-policy-1',
        'unified-worker',
        'unified-worker-example-com',
        'unified-worker-another-com',
      ],
    );
    const dependencies = (stack: { dependencies: Array<{ stackName: string }> }) =>
      stack.dependencies.map((d) => d.stackName);
    assert.deepEqual(dependencies(EXAMPLE.app.shared), ['unified-worker-policy-1']);
    for (const stack of EXAMPLE.app.domains) assert.deepEqual(dependencies(stack), ['unified-worker']);
  });
});

describe('the shared stack', () => {
  it('has one table per TABLES entry, with the key schema and TTL attribute the daemon expects, on demand', () => {
    const tables = resourcesOfType(SHARED, 'AWS::DynamoDB::Table');
    assert.equal(tables.length, TABLES.length);
    for (const spec of TABLES) {
      const name = tableNameOf(spec.setting);
      const id = logicalIdWhere(SHARED, 'AWS::DynamoDB::Table', 'TableName', name);
      const props = SHARED.Resources[id]!.Properties;
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
      assert.equal(SHARED.Resources[id]!.DeletionPolicy, 'Retain', name);
    }
  });

  it('has the receipt rule set, and no rule: each domain stack adds its own', () => {
    Template.fromJSON(SHARED).resourceCountIs('AWS::SES::ReceiptRuleSet', 1);
    Template.fromJSON(SHARED).hasResourceProperties('AWS::SES::ReceiptRuleSet', {
      RuleSetName: 'unified-worker',
    });
    Template.fromJSON(SHARED).resourceCountIs('AWS::SES::ReceiptRule', 0);
  });

  it('outputs the rule set, the table names and every worker policy ARN', () => {
    assert.equal(SHARED.Outputs.ReceiptRuleSetName!.Value, 'unified-worker');
    assert.match(String(SHARED.Outputs.TableNames!.Value), /IDEMPOTENCY_TABLE=email-worker-idempotency/);
    assert.deepEqual(
      evaluate(SHARED.Outputs.WorkerPolicyArns!.Value),
      ['arn:aws:iam::123456789012:policy/unified-worker-policy-1'].join(','),
    );
  });
});

describe('the outbound events (bounce rewriting)', () => {
  it('an SES configuration set named by SES_CONFIGURATION_SET, its destination sending SEND, BOUNCE and COMPLAINT to a topic', () => {
    const setId = logicalIdWhere(SHARED, 'AWS::SES::ConfigurationSet', 'Name', CONFIGURATION_SET);
    const destinations = resourcesOfType(SHARED, 'AWS::SES::ConfigurationSetEventDestination');
    assert.equal(destinations.length, 1);
    const props = destinations[0]![1].Properties as {
      ConfigurationSetName: unknown;
      EventDestination: {
        Name: string;
        Enabled: boolean;
        MatchingEventTypes: string[];
        SnsDestination: Json;
      };
    };
    assert.deepEqual(props.ConfigurationSetName, { Ref: setId });
    assert.equal(props.EventDestination.Name, OUTBOUND_EVENT_DESTINATION);
    assert.equal(props.EventDestination.Enabled, true);
    assert.deepEqual([...props.EventDestination.MatchingEventTypes].sort(), ['bounce', 'complaint', 'send']);
    const topicId = (props.EventDestination.SnsDestination.TopicARN as { Ref: string }).Ref;
    assert.equal(SHARED.Resources[topicId]!.Properties.TopicName, notificationTopicName(EVENTS_QUEUE));
  });

  it('the topic lets only SES publish, for this configuration set in this account', () => {
    const topicId = logicalIdWhere(
      SHARED,
      'AWS::SNS::Topic',
      'TopicName',
      notificationTopicName(EVENTS_QUEUE),
    );
    const policies = resourcesOfType(SHARED, 'AWS::SNS::TopicPolicy').filter(
      ([, r]) => JSON.stringify(r.Properties.Topics) === JSON.stringify([{ Ref: topicId }]),
    );
    assert.equal(policies.length, 1);
    const allow = statementsOf(policies[0]![1]).filter((s) => s.Effect === 'Allow');
    assert.equal(allow.length, 1);
    assert.deepEqual(allow[0]!.Principal, { Service: 'ses.amazonaws.com' });
    assert.equal(allow[0]!.Action, 'sns:Publish');
    const conditions = allow[0]!.Condition as { StringEquals: Record<string, unknown> };
    assert.deepEqual(conditions.StringEquals['AWS:SourceAccount'], { Ref: 'AWS::AccountId' });
    const setId = logicalIdWhere(SHARED, 'AWS::SES::ConfigurationSet', 'Name', CONFIGURATION_SET);
    assert.equal(
      evaluate(conditions.StringEquals['AWS:SourceArn'], { ...TEST_ENV, [setId]: CONFIGURATION_SET }),
      `arn:aws:ses:eu-west-1:123456789012:configuration-set/${CONFIGURATION_SET}`,
    );
  });

  it('the events queue (OUTBOUND_EVENTS_QUEUE): its own dead-letter queue after MAX_RECEIVES, fed by that topic only', () => {
    const { queueId, dlqId } = assertQueueWithDeadLetterQueue(SHARED, EVENTS_QUEUE);
    const topicId = assertSubscribedToTopic(SHARED, queueId, dlqId);
    assert.equal(SHARED.Resources[topicId]!.Properties.TopicName, notificationTopicName(EVENTS_QUEUE));
    assert.deepEqual(SHARED.Outputs.OutboundEventsQueueUrl!.Value, { Ref: queueId });
    assert.deepEqual(SHARED.Outputs.OutboundEventsDeadLetterQueueUrl!.Value, { Ref: dlqId });
    assert.equal(SHARED.Outputs.SesConfigurationSetName!.Value, CONFIGURATION_SET);
  });

  it('once per deployment, not per domain: no configuration set, topic or queue of it in a domain stack', () => {
    for (const domain of EXAMPLE_DOMAINS) {
      const template = Template.fromJSON(domainTemplate(EXAMPLE, domain));
      template.resourceCountIs('AWS::SES::ConfigurationSet', 0);
      template.resourceCountIs('AWS::SES::ConfigurationSetEventDestination', 0);
      template.resourceCountIs('AWS::SQS::Queue', 2);
    }
  });

  it('each domain identity sends through the configuration set by default (the relay needs no header)', () => {
    for (const domain of EXAMPLE_DOMAINS) {
      Template.fromJSON(domainTemplate(EXAMPLE, domain)).hasResourceProperties('AWS::SES::EmailIdentity', {
        EmailIdentity: domain,
        ConfigurationSetAttributes: { ConfigurationSetName: CONFIGURATION_SET },
      });
    }
  });

  it('follows the settings: other names, the events queue off, or no configuration set at all', () => {
    const renamed = synth({
      domains: 'example.com',
      sesConfigurationSet: 'mail-set',
      outboundEventsQueue: 'bounces',
    });
    const shared = renamed.template(renamed.app.shared);
    logicalIdWhere(shared, 'AWS::SES::ConfigurationSet', 'Name', 'mail-set');
    assertQueueWithDeadLetterQueue(shared, 'bounces');
    logicalIdWhere(shared, 'AWS::SNS::Topic', 'TopicName', 'bounces-notifications');

    const noQueue = synth({ domains: 'example.com', outboundEventsQueue: 'none' });
    const noQueueShared = Template.fromJSON(noQueue.template(noQueue.app.shared));
    noQueueShared.resourceCountIs('AWS::SES::ConfigurationSet', 1);
    noQueueShared.resourceCountIs('AWS::SES::ConfigurationSetEventDestination', 0);
    noQueueShared.resourceCountIs('AWS::SQS::Queue', 0);
    noQueueShared.resourceCountIs('AWS::SNS::Topic', 0);

    const none = synth({ domains: 'example.com', sesConfigurationSet: 'None', outboundEventsQueue: 'none' });
    const noneShared = Template.fromJSON(none.template(none.app.shared));
    noneShared.resourceCountIs('AWS::SES::ConfigurationSet', 0);
    noneShared.resourceCountIs('AWS::SQS::Queue', 0);
    const identity = resourcesOfType(domainTemplate(none, 'example.com'), 'AWS::SES::EmailIdentity');
    assert.equal(identity[0]![1].Properties.ConfigurationSetAttributes, undefined);
    const kinds = new Set(
      none.app.policies.flatMap((p) =>
        (p.policy.policyDocument as { Statement: Statement[] }).Statement.map((s) => s.Sid),
      ),
    );
    assert.equal(kinds.has('ConfigurationSet'), false);
    assert.equal(kinds.has('EventsQueue'), false);
  });
});

describe('per domain stack', () => {
  for (const domain of EXAMPLE_DOMAINS) {
    const json = domainTemplate(EXAMPLE, domain);

    it(`${domain}: queue named by QUEUE_NAME_TEMPLATE, redriven to its dead-letter queue after MAX_RECEIVES, fed by its topic only`, () => {
      const { queueId, dlqId } = assertQueueWithDeadLetterQueue(json, queueNameOf(domain));
      const topicId = assertSubscribedToTopic(json, queueId, dlqId);
      assert.equal(json.Resources[topicId]!.Properties.TopicName, notificationTopicName(queueNameOf(domain)));
    });

    it(`${domain}: bucket named by BUCKET_NAME_TEMPLATE; SES may write to it under AWS:SourceAccount, not AWS:SourceArn`, () => {
      const bucketId = logicalIdWhere(json, 'AWS::S3::Bucket', 'BucketName', bucketNameOf(domain));
      const policies = resourcesOfType(json, 'AWS::S3::BucketPolicy').filter(
        ([, r]) => JSON.stringify(r.Properties.Bucket) === JSON.stringify({ Ref: bucketId }),
      );
      assert.equal(policies.length, 1);
      const [policyId, policy] = policies[0]!;
      const sesWrites = statementsOf(policy).filter(
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
      assert.deepEqual(json.Resources[bucketId]!.Properties.PublicAccessBlockConfiguration, {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      assert.equal(json.Resources[bucketId]!.DeletionPolicy, 'Retain');

      const rules = resourcesOfType(json, 'AWS::SES::ReceiptRule');
      assert.equal(rules.length, 1);
      const [, rule] = rules[0]!;
      assert.equal(rule.Properties.RuleSetName, 'unified-worker', 'the shared rule set, by name');
      assert.equal(rule.Properties.After, undefined, 'no rule depends on another domain’s stack');
      const body = rule.Properties.Rule as {
        Name: string;
        Recipients: string[];
        Actions: Array<{ S3Action?: Json }>;
        Enabled: boolean;
        ScanEnabled: boolean;
      };
      assert.equal(body.Name, `${nameFromTemplate('{domain}', domain)}-to-worker`);
      assert.deepEqual(body.Recipients, [domain]);
      assert.equal(body.Enabled, true);
      assert.equal(body.ScanEnabled, true, 'SES verdicts (spam, virus, SPF, DKIM, DMARC) need scanning');
      assert.equal(body.Actions.length, 1);
      assert.deepEqual(body.Actions[0]!.S3Action!.BucketName, { Ref: bucketId });
      const topicId = (body.Actions[0]!.S3Action!.TopicArn as { Ref: string }).Ref;
      assert.equal(json.Resources[topicId]!.Type, 'AWS::SNS::Topic');
      assert.ok(rule.DependsOn?.includes(policyId), 'the rule is created after the bucket policy SES checks');
    });

    it(`${domain}: outputs its queue URL, dead-letter queue URL, bucket name, MX record and three DKIM records`, () => {
      const queueId = logicalIdWhere(json, 'AWS::SQS::Queue', 'QueueName', queueNameOf(domain));
      assert.deepEqual(json.Outputs.QueueUrl!.Value, { Ref: queueId });
      assert.equal(json.Outputs.MailBucketName!.Value, bucketNameOf(domain));
      assert.equal(
        evaluate(json.Outputs.MxRecord!.Value),
        `${domain}. MX 10 inbound-smtp.eu-west-1.amazonaws.com`,
      );
      assert.deepEqual(
        Object.keys(json.Outputs).filter((k) => k.startsWith('DkimRecord')),
        ['DkimRecord1', 'DkimRecord2', 'DkimRecord3'],
      );
    });
  }
});

describe('the worker policies', () => {
  /** `action resource` pairs IAM receives, across every worker policy of `result`, in TEST_ENV. */
  function granted(result: Synthesized): string[] {
    const pairs: string[] = [];
    for (const stack of result.app.policies) {
      for (const [, policy] of resourcesOfType(result.template(stack), 'AWS::IAM::ManagedPolicy')) {
        for (const s of statementsOf(policy)) {
          const resources = [evaluate(s.Resource)].flat();
          for (const a of [s.Action].flat()) for (const r of resources) pairs.push(`${a} ${r}`);
        }
      }
    }
    return pairs.sort();
  }

  /** What DAEMON_PERMISSIONS needs on the resources named `domains`, written out as ARNs in TEST_ENV. */
  function expected(
    domains: readonly string[],
    extra: { identities?: string[]; queueTemplate?: string } = {},
  ) {
    const sqs = (name: string) => `arn:aws:sqs:eu-west-1:123456789012:${name}`;
    const ses = (resource: string) => `arn:aws:ses:eu-west-1:123456789012:${resource}`;
    const queueTemplate = extra.queueTemplate ?? SETTINGS.QUEUE_NAME_TEMPLATE.default;
    const resources: Record<string, string[]> = {
      'domain-queue': domains.map((d) => sqs(nameFromTemplate(queueTemplate, d))),
      'dead-letter-queue': domains.map((d) => sqs(deadLetterQueueName(nameFromTemplate(queueTemplate, d)))),
      'mail-bucket-objects': domains.map((d) => `arn:aws:s3:::${bucketNameOf(d)}/*`),
      table: TABLES.map((t) => `arn:aws:dynamodb:eu-west-1:123456789012:table/${tableNameOf(t.setting)}`),
      'ses-identity': [...domains, ...(extra.identities ?? [])].map((i) => ses(`identity/${i}`)),
      'events-queue': [sqs(EVENTS_QUEUE)],
      'configuration-set': [ses(`configuration-set/${CONFIGURATION_SET}`)],
      account: ['*'],
    };
    return DAEMON_PERMISSIONS.flatMap((p) => {
      const of = resources[p.resource];
      assert.ok(of, `no resources known for kind ${p.resource} (${p.action})`);
      return of.map((r) => `${p.action} ${r}`);
    }).sort();
  }

  it('grant exactly DAEMON_PERMISSIONS, each on exactly the resources of its kind in this deployment', () => {
    assert.deepEqual(granted(EXAMPLE), expected(EXAMPLE_DOMAINS));
  });

  it('are allow-only, without wildcards in actions, conditions, NotAction or NotResource; no other IAM resource', () => {
    assert.equal(EXAMPLE.app.policies.length, 1);
    for (const [name, json] of EXAMPLE.files) {
      const template = Template.fromJSON(JSON.parse(json) as Json);
      template.resourceCountIs('AWS::IAM::Role', 0);
      template.resourceCountIs('AWS::IAM::Policy', 0);
      if (!name.includes('-policy-')) template.resourceCountIs('AWS::IAM::ManagedPolicy', 0);
    }
    const policies = resourcesOfType(EXAMPLE.template(EXAMPLE.app.policies[0]!), 'AWS::IAM::ManagedPolicy');
    assert.equal(policies.length, 1);
    assert.equal(policies[0]![1].Properties.ManagedPolicyName, 'unified-worker-policy-1');
    for (const s of statementsOf(policies[0]![1])) {
      assert.equal(s.Effect, 'Allow');
      assert.equal(s.Condition, undefined);
      assert.equal(s.NotAction, undefined);
      assert.equal(s.NotResource, undefined);
      for (const a of [s.Action].flat()) assert.doesNotMatch(a, /\*/);
    }
  });

  it('SESv2 SendEmail with a configuration set is allowed on the configuration set, and the events queue can be consumed', () => {
    const pairs = granted(EXAMPLE);
    const set = `arn:aws:ses:eu-west-1:123456789012:configuration-set/${CONFIGURATION_SET}`;
    assert.ok(pairs.includes(`ses:SendEmail ${set}`));
    const queue = `arn:aws:sqs:eu-west-1:123456789012:${EVENTS_QUEUE}`;
    for (const action of [
      'ReceiveMessage',
      'DeleteMessage',
      'ChangeMessageVisibility',
      'GetQueueAttributes',
    ]) {
      assert.ok(pairs.includes(`sqs:${action} ${queue}`), action);
    }
    const outbound = `arn:aws:dynamodb:eu-west-1:123456789012:table/${SETTINGS.OUTBOUND_TABLE.default}`;
    for (const action of ['PutItem', 'UpdateItem'])
      assert.ok(pairs.includes(`dynamodb:${action} ${outbound}`));
  });

  it('follow the names they are given: another queue template and extra SES identities change the resources, not the actions', () => {
    const custom = synth({
      domains: 'example.com',
      queueNameTemplate: 'mail-{domain}',
      extraSesIdentities: 'friend@elsewhere.test,partner.example',
    });
    logicalIdWhere(
      domainTemplate(custom, 'example.com'),
      'AWS::SQS::Queue',
      'QueueName',
      'mail-example-com-dlq',
    );
    assert.deepEqual(
      granted(custom),
      expected(['example.com'], {
        identities: ['friend@elsewhere.test', 'partner.example'],
        queueTemplate: 'mail-{domain}',
      }),
    );
  });

  it('are packed into as many policies as IAM’s 6,144 characters need, each in its own stack, all listed and granted', () => {
    const domains = Array.from({ length: 60 }, (_, i) => `domain-${i + 1}.example.org`);
    const many = synth({ domains: domains.join(',') });
    assert.ok(many.app.policies.length > 1, `${many.app.policies.length} policy`);
    assert.deepEqual(granted(many), expected(domains));
    for (const stack of many.app.policies) {
      const [, policy] = resourcesOfType(many.template(stack), 'AWS::IAM::ManagedPolicy')[0]!;
      const document = JSON.parse(JSON.stringify(policy.Properties.PolicyDocument)) as {
        Statement: Statement[];
      };
      for (const s of document.Statement) s.Resource = evaluate(s.Resource, LONGEST_PSEUDO_PARAMETERS);
      const chars = JSON.stringify(document).length;
      assert.ok(chars <= MANAGED_POLICY_MAX_CHARS, `${stack.stackName}: ${chars} characters`);
      assert.ok(chars > MANAGED_POLICY_MAX_CHARS / 2 || stack === many.app.policies.at(-1), 'packed');
    }
    const shared = many.template(many.app.shared);
    assert.deepEqual(
      String(evaluate(shared.Outputs.WorkerPolicyArns!.Value)).split(','),
      many.app.policies.map((p) => `arn:aws:iam::123456789012:policy/${p.stackName}`),
    );
  });
});

describe('options', () => {
  it('an EKS OIDC issuer adds a role for the worker and KEDA service accounts, with every worker policy attached', () => {
    const issuer = 'oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE';
    const result = synth({
      domains: EXAMPLE_DOMAINS.join(','),
      eksOidcIssuer: `https://${issuer}`,
      workerServiceAccount: 'mail:unified-worker',
    });
    assert.deepEqual(
      result.report.pluginReports.filter((r) => r.conclusion !== 'success'),
      [],
      'cdk-nag AwsSolutions passes with the role',
    );
    const shared = result.template(result.app.shared);
    const roles = resourcesOfType(shared, 'AWS::IAM::Role');
    assert.equal(roles.length, 1);
    const role = roles[0]![1].Properties as {
      AssumeRolePolicyDocument: { Statement: Statement[] };
      ManagedPolicyArns: unknown[];
    };
    assert.deepEqual(
      role.ManagedPolicyArns.map((arn) => evaluate(arn)),
      ['arn:aws:iam::123456789012:policy/unified-worker-policy-1'],
    );
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
    Template.fromJSON(shared).hasOutput('WorkerRoleArn', { Value: { 'Fn::GetAtt': [roles[0]![0], 'Arn'] } });
  });

  it('mailRetentionDays expires stored mail; createEmailIdentities=false leaves existing identities alone', () => {
    const result = synth({ mailRetentionDays: '90', createEmailIdentities: 'false', domains: 'example.org' });
    const template = Template.fromJSON(domainTemplate(result, 'example.org'));
    template.resourceCountIs('AWS::SES::EmailIdentity', 0);
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketName: 'example-org-emails',
      LifecycleConfiguration: { Rules: [{ ExpirationInDays: 90, Status: 'Enabled' }] },
    });
  });

  it('stackName names every stack and policy', () => {
    const result = synth({ domains: 'example.com', stackName: 'mail-prod' });
    assert.deepEqual([...result.files.keys()], ['mail-prod-policy-1', 'mail-prod', 'mail-prod-example-com']);
    assert.equal(
      resourcesOfType(result.template(result.app.policies[0]!), 'AWS::IAM::ManagedPolicy')[0]![1].Properties
        .ManagedPolicyName,
      'mail-prod-policy-1',
    );
  });

  it('refuses unusable input, naming the context key', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [
        { domains: undefined },
        /^context domains: no domains given; add -c domains=example\.com,another\.org$/,
      ],
      [{ domains: '' }, /context domains: no domains given/],
      [{ domains: 'Example..com' }, /context domains: "example\.\.com" is not valid/],
      [{ domains: 'a.com,a.com' }, /listed twice/],
      [
        { domains: Array.from({ length: 201 }, (_, i) => `d${i}.example.org`).join(',') },
        /^context domains: 201 domains, but an SES receipt rule set holds at most 200 rules \(one per domain\)$/,
      ],
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
      [{ stackName: '1-bad' }, /context stackName/],
      [{ sesConfigurationSet: 'has space' }, /context sesConfigurationSet: "has space" is not valid/],
      [
        { outboundEventsQueue: 'events.fifo' },
        /context outboundEventsQueue: "events\.fifo" is not a valid standard/,
      ],
      [{ sesConfigurationSet: 'none' }, /context outboundEventsQueue: needs a configuration set/],
      [{ outboundEventsQueue: 'example-com-queue' }, /is also a queue of example\.com/],
      [
        { extraSesIdentities: 'a,b@c@d.com' },
        /context extraSesIdentities: "a" is neither a domain nor an address/,
      ],
    ];
    for (const [context, message] of cases) {
      assert.throws(
        () => synth({ domains: 'example.com', ...context }),
        (error: unknown) => error instanceof StackOptionsError && message.test(error.message),
        JSON.stringify(context),
      );
    }
  });
});

describe('cdk-nag AwsSolutions', () => {
  it('passes, every acknowledgement giving its reason', () => {
    assert.deepEqual(
      EXAMPLE.report.pluginReports.filter((r) => r.conclusion !== 'success'),
      [],
      JSON.stringify(EXAMPLE.report, null, 1),
    );
    const acknowledged = [...EXAMPLE.files.values()].flatMap((json) =>
      Object.values((JSON.parse(json) as TemplateJson).Resources).flatMap(
        (r) =>
          (r.Metadata?.cdk_nag as { rules_to_suppress?: Array<{ id: string; reason: string }> } | undefined)
            ?.rules_to_suppress ?? [],
      ),
    );
    assert.ok(acknowledged.length > 0);
    for (const { id, reason } of acknowledged) {
      assert.match(id, /^AwsSolutions-/);
      assert.ok(reason.length >= 40, `${id}: "${reason}" does not say why`);
    }
  });

  it('does run: an unacknowledged bucket added to a domain stack is reported', () => {
    const { report, app } = synth({ domains: 'example.com' }, (built) => {
      new s3.Bucket(built.domains[0]!, 'CarelessBucket');
    });
    const paths = report.pluginReports
      .flatMap((r) => r.violations)
      .flatMap((v) => v.violatingConstructs.map((c) => `${v.ruleName} ${c.constructPath}`));
    assert.ok(
      paths.includes(`AwsSolutions-S1 ${app.domains[0]!.stackName}/CarelessBucket/Resource`),
      paths.join('\n'),
    );
    assert.ok(
      paths.every((p) => p.includes('CarelessBucket')),
      paths.join('\n'),
    );
  });
});
