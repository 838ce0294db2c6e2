import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AUDIT_KEYS,
  ENVELOPE_RECIPIENTS_CHARS,
  SENT_EFFECTS_CHARS,
  encodeRecipients,
  domainVerdicts,
  failedMetadata,
  finalMetadata,
  gaveUpMetadata,
  keptMetadata,
  nextMetadata,
  purgedMetadata,
  readVerdict,
  replayPendingMetadata,
  SUPPRESSED_EFFECTS_CHARS,
} from '../../src/aws/audit-metadata.ts';
import { sanitizeMetadata } from '../../src/aws/mail-store.ts';

const base = {
  at: 1_706_000_000_500,
  domain: 'example.com',
  invalid: [],
  contentRejected: [],
  failedEffects: [],
} as const;

test('a final verdict stamps processed, when, by whom and the status, and lists the envelope recipients', () => {
  const metadata = finalMetadata({
    ...base,
    status: 'partial',
    envelopeRecipients: ['a@example.com', 'b@example.com'],
    invalid: ['b@example.com'],
  });
  assert.deepEqual(metadata, {
    processed: 'true',
    processed_at: '1706000000',
    processed_by: 'worker-example.com',
    status: 'partial',
    domain_verdicts: 'example.com=partial',
    envelope_recipients: 'a%40example.com,b%40example.com',
    invalid_inboxes: 'b@example.com',
  });
  const read = readVerdict(metadata, 'example.com');
  assert.equal(read.processed, true);
  assert.equal(read.processedAt, 1_706_000_000);
  assert.deepEqual(read.envelopeRecipients, {
    addresses: ['a@example.com', 'b@example.com'],
    complete: true,
  });
});

test('a quoted local part with a comma survives the round trip', () => {
  const metadata = finalMetadata({ ...base, status: 'delivered', envelopeRecipients: ['"a,b"@example.com'] });
  assert.deepEqual(readVerdict(metadata).envelopeRecipients?.addresses, ['"a,b"@example.com']);
});

test('recipients that do not fit are cut, and the list says how many are missing', () => {
  const many = Array.from({ length: 50 }, (_, i) => `recipient-number-${i}@example.com`);
  const value = encodeRecipients(many);
  assert.ok(value.length <= ENVELOPE_RECIPIENTS_CHARS, `${value.length} characters`);
  const read = readVerdict({ envelope_recipients: value });
  assert.equal(read.envelopeRecipients?.complete, false);
  const kept = read.envelopeRecipients?.addresses ?? [];
  assert.ok(kept.length > 5 && kept.length < 50);
  assert.deepEqual(kept, many.slice(0, kept.length));
  assert.match(value, new RegExp(`,\\+${50 - kept.length}$`));
});

test('a single address longer than the budget leaves only the count', () => {
  const long = `${'x'.repeat(ENVELOPE_RECIPIENTS_CHARS)}@example.com`;
  assert.equal(encodeRecipients([long]), '+1');
  assert.deepEqual(readVerdict({ envelope_recipients: '+1' }).envelopeRecipients, {
    addresses: [],
    complete: false,
  });
});

test('a failure ends the mail (processed) while giving up leaves it open for a replay', () => {
  const failed = failedMetadata(base.at, 'example.com', 'MAIL_TOO_LARGE: too big');
  assert.equal(failed.processed, 'true');
  assert.equal(failed.status, 'failed');
  assert.equal(readVerdict(failed).gaveUp, false);
  const gaveUp = gaveUpMetadata(base.at, 'example.com', 'gave up after 10 receives');
  assert.equal(gaveUp.processed, 'false');
  assert.equal(readVerdict(gaveUp).gaveUp, true);
  assert.equal(readVerdict(gaveUp).processed, false);
});

test('a new verdict replaces every audit key of the old one and keeps the others', () => {
  const old = {
    ...gaveUpMetadata(base.at, 'example.com', 'gave up'),
    invalid_inboxes: 'x@example.com',
    replay_generation: '2',
    'x-ses-id': 'kept',
  };
  assert.deepEqual(keptMetadata(old, { status: 'delivered' }), {
    replay_generation: '2',
    'x-ses-id': 'kept',
  });
  assert.deepEqual(keptMetadata(old, { replay_generation: '3' }), old);
  assert.equal(readVerdict(old).replayGeneration, 2);
});

test('the effects: who got a copy (recorded for partial mail only) and what went out', () => {
  const partial = finalMetadata({
    ...base,
    status: 'partial',
    envelopeRecipients: ['a@example.com', 'b@example.com', 'c@example.com'],
    invalid: ['c@example.com'],
    delivered: ['a@example.com', 'b@example.com'],
    sentEffects: ['forward:x@other.test', 'autoreply:sender@external.test'],
  });
  assert.equal(partial.delivered_to, 'a%40example.com,b%40example.com');
  assert.equal(partial.sent_effects, 'forward%3Ax%40other.test,autoreply%3Asender%40external.test');
  const read = readVerdict(partial);
  assert.deepEqual(read.deliveredTo, { addresses: ['a@example.com', 'b@example.com'], complete: true });
  assert.deepEqual(read.sentEffects, {
    items: ['forward:x@other.test', 'autoreply:sender@external.test'],
    complete: true,
  });
  assert.deepEqual(read.invalid, ['c@example.com']);

  const delivered = finalMetadata({
    ...base,
    status: 'delivered',
    envelopeRecipients: ['a@example.com'],
    delivered: ['a@example.com'],
    sentEffects: [],
  });
  assert.equal(delivered.delivered_to, undefined, 'delivered mail: every envelope recipient, not repeated');
  assert.equal(delivered.sent_effects, 'none');
  assert.deepEqual(readVerdict(delivered).deliveredTo, { addresses: ['a@example.com'], complete: true });
  assert.deepEqual(readVerdict(delivered).sentEffects, { items: [], complete: true });

  const rejected = finalMetadata({
    ...base,
    status: 'rejected',
    envelopeRecipients: ['a@example.com'],
    contentRejected: [{ recipient: 'a@example.com', detail: '552 5.2.2 Quota exceeded' }],
  });
  assert.deepEqual(readVerdict(rejected).deliveredTo, { addresses: [], complete: true });
  assert.deepEqual(readVerdict(rejected).contentRejected, [
    { recipient: 'a@example.com', detail: '552 5.2.2 Quota exceeded' },
  ]);
  assert.equal(readVerdict(rejected).sentEffects, undefined, 'a worker that did not record them');
  assert.equal(readVerdict({ status: 'partial', processed: 'true' }).deliveredTo, undefined, 'not known');
});

test('sent effects that do not fit are cut and say so', () => {
  const effects = Array.from({ length: 30 }, (_, i) => `forward:target-number-${i}@other.test`);
  const metadata = finalMetadata({
    ...base,
    status: 'delivered',
    envelopeRecipients: ['a@example.com'],
    sentEffects: effects,
  });
  assert.ok((metadata.sent_effects ?? '').length <= SENT_EFFECTS_CHARS);
  const read = readVerdict(metadata).sentEffects;
  assert.equal(read?.complete, false);
  assert.deepEqual(read?.items, effects.slice(0, read?.items.length));
});

test('a pending replay is answered by the next verdict, which removes the mark; a purge mark stays', () => {
  const before = {
    ...finalMetadata({
      ...base,
      status: 'invalid',
      envelopeRecipients: ['a@example.com'],
      invalid: ['a@example.com'],
    }),
    ...replayPendingMetadata(base.at),
    ...purgedMetadata(base.at, 'malformed'),
  };
  assert.equal(readVerdict(before).replayPending, 1_706_000_000);
  assert.deepEqual(
    keptMetadata(before, { replay_generation: '1' }),
    before,
    'a mark is merged, not a verdict',
  );
  const kept = keptMetadata(before, { status: 'delivered' });
  assert.equal(kept.replay_pending, undefined);
  assert.deepEqual(kept, { dlq_purged_at: '1706000000', dlq_purge_reason: 'malformed' });
  assert.ok(!(AUDIT_KEYS as readonly string[]).includes('replay_pending'), 'not a key a verdict writes');
});

test('suppressed effects and excess recipients are recorded, within their share of the 2 KB', () => {
  const metadata = finalMetadata({
    ...base,
    status: 'delivered',
    envelopeRecipients: ['a@example.com'],
    suppressedEffects: [
      { kind: 'autoreply', recipient: 'a@example.com', reason: 'unauthenticated-sender' },
      { kind: 'forward', recipient: 'a@example.com', reason: 'spam' },
      { kind: 'forward', recipient: 'a@example.com', reason: 'spam' },
    ],
    excessRecipients: ['x1@example.com', 'x2@example.com'],
  });
  assert.equal(
    metadata.suppressed_effects,
    'autoreply:a@example.com:unauthenticated-sender,forward:a@example.com:spam',
  );
  assert.equal(metadata.excess_recipients, 'x1%40example.com,x2%40example.com');
  const many = Array.from({ length: 100 }, (_, i) => ({
    kind: 'autoreply',
    recipient: `recipient-${i}@example.com`,
    reason: 'already-replied-within-interval',
  }));
  const cut = finalMetadata({
    ...base,
    status: 'delivered',
    envelopeRecipients: [],
    suppressedEffects: many,
  });
  assert.ok((cut.suppressed_effects ?? '').length <= SUPPRESSED_EFFECTS_CHARS);
  assert.match(cut.suppressed_effects ?? '', /,\+\d+$/);
});

test("two domains sharing one object: each one's verdict is its own", () => {
  const a = finalMetadata({ ...base, domain: 'a.example', status: 'delivered', envelopeRecipients: [] });
  const afterA = nextMetadata({}, a);
  // B has not written yet: A's final verdict does not make B's notification a redelivery.
  assert.equal(readVerdict(afterA, 'a.example').processed, true);
  assert.deepEqual(readVerdict(afterA, 'b.example'), {
    processed: false,
    gaveUp: false,
    failedEffects: [],
    invalid: [],
    contentRejected: [],
    replayGeneration: 0,
  });
  const b = gaveUpMetadata(base.at, 'b.example', 'gave up');
  const afterB = nextMetadata(afterA, b);
  assert.equal(afterB.domain_verdicts, 'a.example=delivered,b.example=gave-up');
  assert.equal(readVerdict(afterB, 'a.example').processed, true, "B's give-up leaves A's verdict");
  assert.equal(readVerdict(afterB, 'a.example').status, 'delivered');
  assert.equal(readVerdict(afterB, 'b.example').gaveUp, true);
  assert.equal(readVerdict(afterB, 'b.example').processed, false);
  const bAgain = finalMetadata({ ...base, domain: 'b.example', status: 'blocked', envelopeRecipients: [] });
  const final = nextMetadata(afterB, bAgain);
  assert.deepEqual(
    [...domainVerdicts(final)],
    [
      ['a.example', 'delivered'],
      ['b.example', 'blocked'],
    ],
  );
  // What the operator commands read without naming a domain: the verdict written last.
  assert.equal(readVerdict(final).status, 'blocked');
});

test('metadata written before domain_verdicts counts only for the domain that wrote it', () => {
  const legacy = {
    processed: 'true',
    processed_at: '1706000000',
    processed_by: 'worker-a.example',
    status: 'delivered',
  };
  assert.equal(readVerdict(legacy, 'a.example').processed, true);
  assert.equal(readVerdict(legacy, 'b.example').processed, false);
  assert.equal(readVerdict(legacy).processed, true);
  assert.deepEqual([...domainVerdicts(legacy)], [['a.example', 'delivered']]);
  const merged = nextMetadata(
    legacy,
    finalMetadata({ ...base, domain: 'b.example', status: 'invalid', envelopeRecipients: [] }),
  );
  assert.equal(merged.domain_verdicts, 'a.example=delivered,b.example=invalid');
});

test('the merged metadata keeps the small keys first, so the 2 KB cut never reaches them', () => {
  const old = { replay_generation: '4', 'x-other': 'y'.repeat(600) };
  const update = finalMetadata({
    ...base,
    status: 'invalid',
    envelopeRecipients: [],
    invalid: Array.from({ length: 40 }, (_, i) => `long-recipient-address-${i}@example.com`),
    failedEffects: Array.from({ length: 40 }, (_, i) => `forward:target-${i}@elsewhere.example`),
  });
  const written = sanitizeMetadata(nextMetadata(old, update));
  assert.deepEqual(Object.keys(written).slice(0, 6), [
    'status',
    'processed',
    'processed_at',
    'processed_by',
    'domain_verdicts',
    'replay_generation',
  ]);
  assert.equal(written.replay_generation, '4');
  const total = Object.entries(written).reduce((n, [k, v]) => n + k.length + v.length, 0);
  assert.ok(total <= 2048, `${total} bytes of metadata`);
});
