import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ENVELOPE_RECIPIENTS_CHARS,
  encodeRecipients,
  failedMetadata,
  finalMetadata,
  gaveUpMetadata,
  keptMetadata,
  readVerdict,
} from '../../src/aws/audit-metadata.ts';

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
    envelope_recipients: 'a%40example.com,b%40example.com',
    invalid_inboxes: 'b@example.com',
  });
  const read = readVerdict(metadata);
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
