/**
 * How a receipt rule set treats a domain's mail (src/aws/receipt-rules.ts), read as SES applies it: rules in order,
 * recipients matching the domain, the first action that stores, carries or stops the mail.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { ReceiptRule } from '@aws-sdk/client-ses';

import { findDomainRoute, receiptRuleArn, ruleCoverage } from '../../src/aws/receipt-rules.ts';

const TOPIC = 'arn:aws:sns:eu-west-1:123456789012:example-com-queue-notifications';

function rule(name: string, fields: Partial<ReceiptRule> = {}): ReceiptRule {
  return {
    Name: name,
    Enabled: true,
    Recipients: ['example.com'],
    Actions: [{ S3Action: { BucketName: 'example-com-emails', TopicArn: TOPIC } }],
    ...fields,
  };
}

describe('ruleCoverage', () => {
  const cases: Array<[string[] | undefined, string, 'all' | 'some' | 'none']> = [
    [undefined, 'example.com', 'all'],
    [[], 'example.com', 'all'],
    [['example.com'], 'example.com', 'all'],
    [['EXAMPLE.com'], 'example.COM', 'all'],
    [['.example.com'], 'mail.example.com', 'all'],
    [['.example.com'], 'example.com', 'none'],
    [['example.com'], 'mail.example.com', 'none'],
    [['alice@example.com'], 'example.com', 'some'],
    [['other.org', 'bob@example.com'], 'example.com', 'some'],
    [['other.org'], 'example.com', 'none'],
  ];
  for (const [recipients, domain, expected] of cases) {
    it(`${JSON.stringify(recipients)} for ${domain}: ${expected}`, () =>
      assert.equal(ruleCoverage(recipients, domain), expected));
  }
});

describe('findDomainRoute', () => {
  it('finds the rule that stores the mail in S3 and announces it', () => {
    assert.deepEqual(
      findDomainRoute([rule('other', { Recipients: ['other.org'] }), rule('ours')], 'example.com'),
      {
        kind: 'route',
        rule: 'ours',
        via: 'S3',
        bucket: 'example-com-emails',
        topicArn: TOPIC,
        partial: [],
      },
    );
  });

  it('keeps the key prefix, and takes the topic of a later SNS action in the same rule', () => {
    const found = findDomainRoute(
      [
        rule('ours', {
          Actions: [
            { AddHeaderAction: { HeaderName: 'X-A', HeaderValue: '1' } },
            { S3Action: { BucketName: 'b', ObjectKeyPrefix: 'in/' } },
            { SNSAction: { TopicArn: TOPIC } },
          ],
        }),
      ],
      'example.com',
    );
    assert.deepEqual(found, {
      kind: 'route',
      rule: 'ours',
      via: 'S3',
      bucket: 'b',
      prefix: 'in/',
      topicArn: TOPIC,
      partial: [],
    });
  });

  it('reports an S3 action without a topic (the worker would never hear of the mail)', () => {
    const found = findDomainRoute(
      [rule('ours', { Actions: [{ S3Action: { BucketName: 'b' } }] })],
      'example.com',
    );
    assert.equal(found.kind === 'route' && found.topicArn, undefined);
  });

  it('an SNS action alone carries the mail inline', () => {
    const found = findDomainRoute(
      [rule('inline', { Actions: [{ SNSAction: { TopicArn: TOPIC } }] })],
      'example.com',
    );
    assert.deepEqual(found, { kind: 'route', rule: 'inline', via: 'SNS', topicArn: TOPIC, partial: [] });
  });

  it('a stop or bounce before any store ends it; after a store it does not matter', () => {
    const stop = rule('stop-all', { Recipients: [], Actions: [{ StopAction: { Scope: 'RuleSet' } }] });
    assert.deepEqual(findDomainRoute([stop, rule('ours')], 'example.com'), {
      kind: 'stopped',
      rule: 'stop-all',
      action: 'Stop',
    });
    const bounce = rule('bounce', {
      Actions: [{ BounceAction: { SmtpReplyCode: '550', Message: 'no', Sender: 'a@example.com' } }],
    });
    assert.deepEqual(findDomainRoute([bounce, rule('ours')], 'example.com'), {
      kind: 'stopped',
      rule: 'bounce',
      action: 'Bounce',
    });
    assert.equal(findDomainRoute([rule('ours'), stop], 'example.com').kind, 'route');
  });

  it('skips rules without a storing action (a Lambda, a header) and disabled rules, naming a disabled one that would store', () => {
    const lambda = rule('lambda', { Actions: [{ LambdaAction: { FunctionArn: 'arn:aws:lambda:x' } }] });
    const disabled = rule('disabled', { Enabled: false });
    assert.deepEqual(findDomainRoute([lambda, disabled], 'example.com'), {
      kind: 'none',
      disabled: 'disabled',
      partial: [],
    });
    assert.equal(findDomainRoute([lambda, disabled, rule('ours')], 'example.com').kind, 'route');
  });

  it('names earlier rules that take only some addresses', () => {
    const alice = rule('alice-only', { Recipients: ['alice@example.com'] });
    assert.deepEqual(findDomainRoute([alice], 'example.com'), { kind: 'none', partial: ['alice-only'] });
    const found = findDomainRoute([alice, rule('ours')], 'example.com');
    assert.equal(found.kind === 'route' && found.partial.join(), 'alice-only');
  });

  it('builds the rule ARN SES sends as aws:SourceArn', () => {
    assert.equal(
      receiptRuleArn({ partition: 'aws', region: 'eu-west-1', account: '123', ruleSet: 's', rule: 'r' }),
      'arn:aws:ses:eu-west-1:123:receipt-rule-set/s:receipt-rule/r',
    );
  });
});
