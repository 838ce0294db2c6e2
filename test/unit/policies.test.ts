/**
 * The resource-policy evaluation doctor and setup share (src/aws/policies.ts), as a table: for SES's PutObject into
 * a mail bucket and SNS's SendMessage into a queue, which policies allow, deny, fall short, or cannot be judged.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  evaluatePolicy,
  parsePolicy,
  sesWriteRequest,
  sesWriteStatement,
  snsSendRequest,
  snsSendStatement,
  wildcard,
  withStatement,
  type PolicyStatement,
  type PolicyVerdict,
} from '../../src/aws/policies.ts';

const ACCOUNT = '123456789012';
const BUCKET = 'example-com-emails';
const QUEUE = `arn:aws:sqs:eu-west-1:${ACCOUNT}:example-com-queue`;
const TOPIC = `arn:aws:sns:eu-west-1:${ACCOUNT}:example-com-queue-notifications`;
const RULE = `arn:aws:ses:eu-west-1:${ACCOUNT}:receipt-rule-set/unified-worker:receipt-rule/example-com-to-worker`;

const ses = sesWriteRequest({ bucket: BUCKET, account: ACCOUNT, partition: 'aws', ruleArn: RULE });
const sns = snsSendRequest(QUEUE, TOPIC);

function policy(...statements: PolicyStatement[]) {
  return { Version: '2012-10-17', Statement: statements };
}

const sesAllow: PolicyStatement = {
  Sid: 'Ses',
  Effect: 'Allow',
  Principal: { Service: 'ses.amazonaws.com' },
  Action: 's3:PutObject',
  Resource: `arn:aws:s3:::${BUCKET}/*`,
};
const tlsDeny: PolicyStatement = {
  Sid: 'TlsOnly',
  Effect: 'Deny',
  Principal: { AWS: '*' },
  Action: 's3:*',
  Resource: [`arn:aws:s3:::${BUCKET}`, `arn:aws:s3:::${BUCKET}/*`],
  Condition: { Bool: { 'aws:SecureTransport': 'false' } },
};

describe('evaluatePolicy: SES writing the mail into the bucket', () => {
  const cases: Array<[string, PolicyStatement[], PolicyVerdict]> = [
    [
      'the statement setup writes',
      [sesWriteStatement(BUCKET, ACCOUNT, 'aws')],
      { kind: 'allowed', statement: 'AllowSesToStoreMail', scoped: true },
    ],
    [
      'the AWS template: TLS-only deny plus the SourceAccount allow',
      [tlsDeny, { ...sesAllow, Condition: { StringEquals: { 'aws:SourceAccount': ACCOUNT } } }],
      { kind: 'allowed', statement: 'Ses', scoped: true },
    ],
    [
      'the older aws:Referer condition',
      [{ ...sesAllow, Condition: { StringEquals: { 'aws:Referer': ACCOUNT } } }],
      { kind: 'allowed', statement: 'Ses', scoped: true },
    ],
    [
      'the rule ARN with wildcards (ArnLike) and the account',
      [
        {
          ...sesAllow,
          Condition: {
            StringEquals: { 'aws:SourceAccount': ACCOUNT },
            ArnLike: { 'AWS:SourceArn': `arn:aws:ses:*:${ACCOUNT}:receipt-rule-set/*` },
          },
        },
      ],
      { kind: 'allowed', statement: 'Ses', scoped: true },
    ],
    [
      'no condition: any account can make SES write here',
      [sesAllow],
      { kind: 'allowed', statement: 'Ses', scoped: false },
    ],
    [
      'action and principal as wildcards and lists',
      [
        {
          ...sesAllow,
          Action: ['s3:Get*', 'S3:PUT*'],
          Principal: { Service: ['lambda.amazonaws.com', 'ses.amazonaws.com'] },
        },
      ],
      { kind: 'allowed', statement: 'Ses', scoped: false },
    ],
    [
      'another account in aws:SourceAccount',
      [{ ...sesAllow, Condition: { StringEquals: { 'aws:SourceAccount': '999999999999' } } }],
      {
        kind: 'not-allowed',
        near: { statement: 'Ses', condition: '{"StringEquals":{"aws:SourceAccount":"999999999999"}}' },
      },
    ],
    ['another bucket', [{ ...sesAllow, Resource: 'arn:aws:s3:::other-bucket/*' }], { kind: 'not-allowed' }],
    ['only reads', [{ ...sesAllow, Action: 's3:GetObject' }], { kind: 'not-allowed' }],
    [
      'another service',
      [{ ...sesAllow, Principal: { Service: 'sns.amazonaws.com' } }],
      { kind: 'not-allowed' },
    ],
    [
      'an explicit deny of SES',
      [sesAllow, { ...sesAllow, Sid: 'NoSes', Effect: 'Deny' }],
      { kind: 'denied', statement: 'NoSes' },
    ],
    [
      'a condition key doctor does not know',
      [{ ...sesAllow, Condition: { StringEquals: { 'aws:PrincipalOrgID': 'o-123' } } }],
      {
        kind: 'not-evaluated',
        statement: 'Ses',
        reason: 'condition key aws:PrincipalOrgID is not evaluated',
      },
    ],
    [
      'an operator doctor does not know',
      [{ ...sesAllow, Condition: { IpAddress: { 'aws:SourceIp': '10.0.0.0/8' } } }],
      { kind: 'not-evaluated', statement: 'Ses', reason: 'condition operator IpAddress is not evaluated' },
    ],
    ['no statement at all', [], { kind: 'not-allowed' }],
  ];
  for (const [name, statements, expected] of cases) {
    it(name, () => assert.deepEqual(evaluatePolicy(policy(...statements), ses), expected));
  }

  it("takes the rule's key prefix into account", () => {
    const prefixed = sesWriteRequest({
      bucket: BUCKET,
      prefix: 'inbox/',
      account: ACCOUNT,
      partition: 'aws',
    });
    const onlyInbox = { ...sesAllow, Resource: `arn:aws:s3:::${BUCKET}/inbox/*` };
    assert.equal(evaluatePolicy(policy(onlyInbox), prefixed).kind, 'allowed');
    assert.equal(evaluatePolicy(policy(onlyInbox), ses).kind, 'not-allowed');
  });
});

describe('evaluatePolicy: SNS sending the notification into the queue', () => {
  const snsAllow: PolicyStatement = {
    Sid: 'Sns',
    Effect: 'Allow',
    Principal: { Service: 'sns.amazonaws.com' },
    Action: 'sqs:SendMessage',
    Resource: QUEUE,
  };
  const cases: Array<[string, PolicyStatement[], PolicyVerdict['kind'], boolean?]> = [
    ['the statement setup writes', [snsSendStatement(QUEUE, TOPIC)], 'allowed', true],
    [
      'ArnLike on the topic',
      [{ ...snsAllow, Condition: { ArnLike: { 'aws:SourceArn': 'arn:aws:sns:*:*:example-com-*' } } }],
      'allowed',
      true,
    ],
    [
      'Principal "*" with the topic as condition',
      [{ ...snsAllow, Principal: '*', Condition: { ArnEquals: { 'aws:SourceArn': TOPIC } } }],
      'allowed',
      true,
    ],
    ['any topic', [snsAllow], 'allowed', false],
    [
      'sqs:* on every queue (Resource "*")',
      [{ ...snsAllow, Action: 'sqs:*', Resource: '*' }],
      'allowed',
      false,
    ],
    [
      'another topic only',
      [{ ...snsAllow, Condition: { ArnEquals: { 'aws:SourceArn': `${TOPIC}-old` } } }],
      'not-allowed',
    ],
    [
      'ArnNotEquals our topic',
      [{ ...snsAllow, Condition: { ArnNotEquals: { 'aws:SourceArn': TOPIC } } }],
      'not-allowed',
    ],
    [
      'NotAction excluding SendMessage',
      [{ ...snsAllow, Action: undefined, NotAction: 'sqs:SendMessage' }],
      'not-allowed',
    ],
    ['NotPrincipal', [{ ...snsAllow, Principal: undefined, NotPrincipal: { AWS: 'x' } }], 'not-evaluated'],
  ];
  for (const [name, statements, kind, scoped] of cases) {
    it(name, () => {
      const verdict = evaluatePolicy(policy(...statements), sns);
      assert.equal(verdict.kind, kind);
      if (verdict.kind === 'allowed') assert.equal(verdict.scoped, scoped);
    });
  }
});

describe('parsePolicy and withStatement', () => {
  it('accepts a single Statement object and keeps the other fields', () => {
    const parsed = parsePolicy(JSON.stringify({ Version: '2012-10-17', Id: 'x', Statement: sesAllow }));
    assert.deepEqual(parsed, { Version: '2012-10-17', Id: 'x', Statement: [sesAllow] });
  });

  it('refuses text that is not a policy', () => {
    assert.throws(() => parsePolicy('not json'), /not JSON/);
    assert.throws(() => parsePolicy('{"Version":"2012-10-17"}'), /no Statement/);
    assert.throws(() => parsePolicy('{"Statement":[1]}'), /not an object/);
  });

  it('adds a statement after the existing ones, or makes a new policy', () => {
    const added = snsSendStatement(QUEUE, TOPIC);
    assert.deepEqual(withStatement(undefined, added), { Version: '2012-10-17', Statement: [added] });
    assert.deepEqual(withStatement(policy(tlsDeny), added).Statement, [tlsDeny, added]);
  });

  it('matches IAM wildcards literally otherwise', () => {
    assert.ok(wildcard('arn:aws:s3:::b/*', 'arn:aws:s3:::b/x/y', false));
    assert.ok(wildcard('s3:Put?bject', 's3:PutObject', false));
    assert.ok(!wildcard('arn:aws:s3:::b.c/*', 'arn:aws:s3:::bxc/k', false), 'a dot is a dot');
    assert.ok(!wildcard('S3:PUTOBJECT', 's3:PutObject', false));
    assert.ok(wildcard('S3:PUTOBJECT', 's3:PutObject', true));
  });
});
