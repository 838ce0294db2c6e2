import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EffectResult, MessageOutcome, RecipientOutcome } from '../../src/pipeline/outcome.ts';
import { decideRetry, type RetryDecision, type RetrySettings } from '../../src/poller/retry-policy.ts';

const SETTINGS: RetrySettings = {
  schedule: [30, 60, 120, 300, 600, 900],
  maxReceives: 10,
  hasRedrivePolicy: true,
  claimLeaseSeconds: 31,
};

const delivered: RecipientOutcome = { recipient: 'a@x.test', state: 'delivered', code: 250 };
const deferred = (reason: NonNullable<RecipientOutcome['deferral']>['reason']): RecipientOutcome => ({
  recipient: `${reason}@x.test`,
  state: 'deferred',
  deferral: { reason },
});
const effect = (status: EffectResult['status'], reason?: 'temporary' | 'claims'): EffectResult => ({
  kind: 'forward',
  recipient: 'a@x.test',
  target: 't@y.test',
  status,
  ...(reason && { deferral: { reason } }),
});

function outcome(patch: Partial<MessageOutcome>): MessageOutcome {
  return {
    status: 'deferred',
    sqsMessageId: 'sqs-1',
    recipients: [],
    effects: [],
    ignoredRecipients: [],
    bounceRewritten: false,
    loopMarker: false,
    ...patch,
  };
}

const cases: Array<[string, MessageOutcome, number, RetryDecision, Partial<RetrySettings>?]> = [
  [
    'every recipient final: delete',
    outcome({ status: 'delivered', recipients: [delivered] }),
    1,
    { action: 'delete', reason: 'final' },
  ],
  [
    'a duplicate has nothing pending: delete',
    outcome({ status: 'duplicate' }),
    3,
    { action: 'delete', reason: 'final' },
  ],
  [
    'malformed: left for the redrive',
    outcome({ status: 'malformed' }),
    1,
    { action: 'dead-letter', reason: 'malformed' },
  ],
  [
    'stopped before the mail was started: released at once',
    outcome({ fault: { reason: 'stopping' } }),
    1,
    { action: 'release', reason: 'stopping', after: 0 },
  ],
  [
    'a 4xx on the first receive: 30 s',
    outcome({ recipients: [deferred('temporary')] }),
    1,
    { action: 'retry', reason: 'temporary', after: 30 },
  ],
  [
    'a 4xx on the third receive: 2 min',
    outcome({ recipients: [deferred('temporary')] }),
    3,
    { action: 'retry', reason: 'temporary', after: 120 },
  ],
  [
    'past the schedule the last delay repeats',
    outcome({ recipients: [deferred('temporary')] }),
    9,
    { action: 'retry', reason: 'temporary', after: 900 },
  ],
  [
    'nothing answered: unreachable',
    outcome({ recipients: [deferred('unreachable')] }),
    1,
    { action: 'retry', reason: 'unreachable', after: 30 },
  ],
  [
    'one answered with a 4xx, one not at all: the server is there (temporary)',
    outcome({ recipients: [deferred('unreachable'), deferred('temporary')] }),
    2,
    { action: 'retry', reason: 'temporary', after: 60 },
  ],
  [
    'only claims held elsewhere: after the lease',
    outcome({ recipients: [deferred('claims')] }),
    4,
    { action: 'retry', reason: 'claims', after: 31 },
  ],
  [
    'claims and a temporary failure: the schedule',
    outcome({ recipients: [deferred('claims')], effects: [effect('deferred', 'temporary')] }),
    4,
    { action: 'retry', reason: 'temporary', after: 300 },
  ],
  [
    'an effect deferred on delivered mail: retried',
    outcome({ recipients: [delivered], effects: [effect('deferred', 'temporary')] }),
    1,
    { action: 'retry', reason: 'temporary', after: 30 },
  ],
  [
    'a failed effect is final',
    outcome({ status: 'delivered', recipients: [delivered], effects: [effect('failed')] }),
    1,
    { action: 'delete', reason: 'final' },
  ],
  [
    'a refusing mail server: deployment',
    outcome({ recipients: [deferred('deployment'), deferred('temporary')] }),
    1,
    { action: 'retry', reason: 'deployment', after: 30 },
  ],
  [
    'a table fault outranks everything',
    outcome({
      recipients: [deferred('deployment')],
      fault: { reason: 'table', awsCode: 'ResourceNotFoundException' },
    }),
    1,
    { action: 'retry', reason: 'table', after: 30 },
  ],
  [
    'a late fault is temporary',
    outcome({ fault: { reason: 'temporary' } }),
    2,
    { action: 'retry', reason: 'temporary', after: 60 },
  ],
  [
    'at the give-up count with a redrive policy: dead-letter, marked failed',
    outcome({ recipients: [deferred('temporary')] }),
    10,
    { action: 'dead-letter', reason: 'temporary', giveUp: true },
  ],
  [
    'at the give-up count without one: the longest delay, marked failed',
    outcome({ recipients: [deferred('unreachable')] }),
    12,
    { action: 'retry', reason: 'unreachable', after: 900, giveUp: true },
    { hasRedrivePolicy: false },
  ],
  [
    'a lease longer than the scheduled delay does not lengthen it',
    outcome({ recipients: [deferred('claims')] }),
    1,
    { action: 'retry', reason: 'claims', after: 30 },
    { claimLeaseSeconds: 121 },
  ],
];

describe('decideRetry: an outcome, its receive count and the queue → what happens to the SQS message', () => {
  for (const [name, given, receiveCount, expected, settings] of cases) {
    it(name, () => {
      assert.deepEqual(decideRetry(given, receiveCount, { ...SETTINGS, ...settings }), expected);
    });
  }
});
