/**
 * How the operator commands read the daemon's audit metadata: the effects `inject --wait` and `replay --wait`
 * report, whether a dead letter can be redriven (`dlq show`, `dlq purge`), and whom a replay sends to.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  finalMetadata,
  gaveUpMetadata,
  readVerdict,
  type FinalVerdict,
} from '../../src/aws/audit-metadata.ts';
import { describeOutcome, isFinal, outcomeReport, type Outcome } from '../../src/cli/audit.ts';
import { judgeStored } from '../../src/cli/dead-letter.ts';
import { recipientsOf } from '../../src/cli/replay.ts';

const AT = 1_706_000_000_000;
const base = {
  at: AT,
  domain: 'example.com',
  invalid: [],
  contentRejected: [],
  failedEffects: [],
} as const;

function final(
  verdict: Partial<FinalVerdict> & Pick<FinalVerdict, 'status' | 'envelopeRecipients'>,
): Outcome {
  const metadata = finalMetadata({ ...base, ...verdict });
  return { kind: 'final', verdict: readVerdict(metadata), metadata };
}

describe('the outcome of a mail, with every effect', () => {
  it('partial: who got it, who was refused, what was forwarded and replied, what failed', () => {
    const outcome = final({
      status: 'partial',
      envelopeRecipients: ['a@example.com', 'b@example.com', 'c@example.com'],
      delivered: ['a@example.com', 'b@example.com'],
      invalid: ['c@example.com'],
      sentEffects: ['forward:x@other.test', 'autoreply:sender@external.test'],
      failedEffects: ['forward:y@other.test'],
    });
    assert.deepEqual(describeOutcome(outcome), [
      'status=partial',
      '  delivered to a@example.com, b@example.com',
      '  refused: c@example.com (mailbox unknown or unusable)',
      '  forwarded to x@other.test',
      '  auto-replied to sender@external.test',
      '  failed: forward to y@other.test',
    ]);
    assert.deepEqual(outcomeReport(outcome), {
      status: 'partial',
      final: true,
      delivered: { addresses: ['a@example.com', 'b@example.com'], complete: true },
      forwarded: ['x@other.test'],
      autoReplied: ['sender@external.test'],
      effectsComplete: true,
      invalid: ['c@example.com'],
      failedEffects: ['forward:y@other.test'],
    });
    assert.equal(isFinal(outcome), true);
  });

  it('says what the worker did not record instead of leaving it out', () => {
    const outcome = final({ status: 'delivered', envelopeRecipients: ['a@example.com'] });
    assert.deepEqual(describeOutcome(outcome), [
      'status=delivered',
      '  delivered to a@example.com',
      '  forwards and auto-replies: not recorded by this worker (sent_effects)',
    ]);
    const partial = final({ status: 'partial', envelopeRecipients: ['a@example.com', 'b@example.com'] });
    assert.match(describeOutcome(partial).join('\n'), /delivered: not recorded \(delivered_to\)/);
  });

  it('a mail nobody received has no effects to record: none is claimed missing', () => {
    const outcome = final({
      status: 'rejected',
      envelopeRecipients: ['a@example.com'],
      contentRejected: [{ recipient: 'a@example.com', detail: '554 5.7.1 spam' }],
    });
    assert.deepEqual(describeOutcome(outcome), [
      'status=rejected',
      '  content rejected: a@example.com: 554 5.7.1 spam',
    ]);
    assert.equal(outcomeReport(outcome).effectsComplete, true);
  });

  it('given up, blocked and pending: only blocked is final', () => {
    const gaveUpMeta = gaveUpMetadata(AT, 'example.com', 'SMTP_CONNECTION: refused');
    const gaveUp: Outcome = { kind: 'gave-up', verdict: readVerdict(gaveUpMeta), metadata: gaveUpMeta };
    assert.equal(isFinal(gaveUp), false);
    assert.match(
      describeOutcome(gaveUp)[0] ?? '',
      /not final: the worker gave up .*SMTP_CONNECTION: refused.*dlq show/,
    );
    assert.equal(outcomeReport(gaveUp).status, 'gave-up');
    assert.equal(isFinal({ kind: 'removed' }), true);
    assert.equal(outcomeReport({ kind: 'removed' }).status, 'blocked');
    const pending: Outcome = { kind: 'pending', waitedMs: 5000 };
    assert.equal(isFinal(pending), false);
    assert.match(describeOutcome(pending)[0] ?? '', /^no final outcome within 5 s/);
  });
});

describe('whether a dead letter can be redriven, from its mail in S3', () => {
  const location = { bucket: 'example-com-emails', key: 'abc' };
  const cases: Array<[string, Parameters<typeof judgeStored>[0], 'yes' | 'no' | 'unknown', RegExp]> = [
    ['the object is gone', { kind: 'missing' }, 'no', /^s3:\/\/example-com-emails\/abc is gone/],
    ['S3 not readable', { kind: 'error', error: 'AccessDenied' }, 'unknown', /AccessDenied/],
    [
      'already delivered',
      {
        kind: 'stored',
        metadata: finalMetadata({ ...base, status: 'delivered', envelopeRecipients: ['a@example.com'] }),
      },
      'no',
      /^already decided \(status delivered\): a redriven copy is dropped as a duplicate; to run it again: replay --key abc$/,
    ],
    [
      'failed for good (too large)',
      {
        kind: 'stored',
        metadata: { processed: 'true', status: 'failed', failure_reason: 'MAIL_TOO_LARGE: 41 MB' },
      },
      'no',
      /status failed: MAIL_TOO_LARGE: 41 MB/,
    ],
    [
      'given up (deferred)',
      { kind: 'stored', metadata: gaveUpMetadata(AT, 'example.com', 'SMTP_CONNECTION: refused') },
      'yes',
      /^deferred until MAX_RECEIVES \(SMTP_CONNECTION: refused\)/,
    ],
    ['no verdict at all', { kind: 'stored', metadata: {} }, 'yes', /^no outcome recorded/],
  ];
  for (const [name, stored, redrivable, reason] of cases) {
    it(name, () => {
      const judged = judgeStored(stored, location);
      assert.equal(judged.redrivable, redrivable);
      assert.match(judged.reason, reason);
    });
  }
});

describe('whom a replay sends to', () => {
  const candidate = (metadata: Record<string, string>) => ({ bucket: 'b', key: 'k', metadata });
  const none = { recipients: [] as string[] };

  it('the recorded envelope recipients of the domain, for every status', () => {
    for (const status of ['delivered', 'partial', 'invalid', 'rejected'] as const) {
      const metadata = finalMetadata({
        ...base,
        status,
        envelopeRecipients: ['a@example.com', 'b@example.com', 'x@other.test'],
      });
      assert.deepEqual(recipientsOf(candidate(metadata), 'example.com', none, true), [
        'a@example.com',
        'b@example.com',
      ]);
    }
  });

  it('without the ledger, a partial mail goes only to those without a copy', () => {
    const metadata = finalMetadata({
      ...base,
      status: 'partial',
      envelopeRecipients: ['a@example.com', 'b@example.com', 'c@example.com'],
      invalid: ['b@example.com'],
      contentRejected: [{ recipient: 'c@example.com', detail: '552 full' }],
    });
    assert.deepEqual(recipientsOf(candidate(metadata), 'example.com', none, false), [
      'b@example.com',
      'c@example.com',
    ]);
  });

  it('a cut list, or none recorded, needs --to, and says the command', () => {
    const many = Array.from({ length: 40 }, (_, i) => `recipient-${i}@example.com`);
    const cut = finalMetadata({ ...base, status: 'delivered', envelopeRecipients: many });
    assert.match(
      String(recipientsOf(candidate(cut), 'example.com', none, true)),
      /too many to record whole .*: replay --domains example\.com --key k --to <recipients>$/,
    );
    assert.match(
      String(recipientsOf(candidate({}), 'example.com', none, true)),
      /not recorded \(status unprocessed\)/,
    );
    assert.deepEqual(
      recipientsOf(
        candidate({ processed: 'true', status: 'invalid', invalid_inboxes: 'z@example.com' }),
        'example.com',
        none,
        true,
      ),
      ['z@example.com'],
      'a verdict from before envelope_recipients: the refused ones',
    );
  });

  it('--to wins, and must be in the domain', () => {
    const metadata = finalMetadata({ ...base, status: 'delivered', envelopeRecipients: ['a@example.com'] });
    assert.deepEqual(
      recipientsOf(candidate(metadata), 'example.com', { recipients: ['q@example.com'] }, true),
      ['q@example.com'],
    );
    assert.equal(
      recipientsOf(candidate(metadata), 'example.com', { recipients: ['q@other.test'] }, true),
      '--to q@other.test is not in example.com',
    );
  });
});
