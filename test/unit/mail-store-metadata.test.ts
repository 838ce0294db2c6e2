import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sanitizeMetadata } from '../../src/aws/mail-store.ts';

describe('sanitizeMetadata', () => {
  it('passes printable ASCII through unchanged', () => {
    const printable = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).join('');
    assert.deepEqual(
      sanitizeMetadata({
        processed: 'true',
        invalid_inboxes: 'nobody@example.com,gone@example.com',
        failure_reason: 'SMTP_PERMANENT: 550 5.1.1 <x@example.com> "quoted" %already% ~`',
        all: printable,
      }),
      {
        processed: 'true',
        invalid_inboxes: 'nobody@example.com,gone@example.com',
        failure_reason: 'SMTP_PERMANENT: 550 5.1.1 <x@example.com> "quoted" %already% ~`',
        all: printable,
      },
    );
  });

  it('returns an empty object for empty input and keeps empty values', () => {
    assert.deepEqual(sanitizeMetadata({}), {});
    assert.deepEqual(sanitizeMetadata({ note: '' }), { note: '' });
  });

  it('percent-encodes non-ASCII characters as UTF-8', () => {
    assert.deepEqual(sanitizeMetadata({ subject: 'Grüße aus Köln' }), {
      subject: 'Gr%C3%BC%C3%9Fe aus K%C3%B6ln',
    });
    assert.deepEqual(sanitizeMetadata({ who: 'José €5' }), { who: 'Jos%C3%A9 %E2%82%AC5' });
  });

  it('percent-encodes control characters, including tab, CR, LF and DEL', () => {
    assert.deepEqual(sanitizeMetadata({ reason: 'a\tb\r\nc\x00d\x7f' }), { reason: 'a%09b%0D%0Ac%00d%7F' });
  });

  it('percent-encodes characters outside the Basic Multilingual Plane', () => {
    assert.deepEqual(sanitizeMetadata({ subject: 'hi 😀' }), { subject: 'hi %F0%9F%98%80' });
  });

  it('lower-cases keys', () => {
    assert.deepEqual(sanitizeMetadata({ Processed: 'true', 'Invalid-Inboxes': 'x', UPPER_CASE: 'y' }), {
      processed: 'true',
      'invalid-inboxes': 'x',
      upper_case: 'y',
    });
  });

  it('keeps a value of exactly 512 characters', () => {
    const value = 'x'.repeat(512);
    assert.deepEqual(sanitizeMetadata({ list: value }), { list: value });
  });

  it('cuts a value over 512 characters to 500 characters and the "...(cut)" marker', () => {
    const value = `${'a'.repeat(500)}${'b'.repeat(13)}`;
    const out = sanitizeMetadata({ list: value });
    assert.equal(out.list, `${'a'.repeat(500)}...(cut)`);
    assert.equal(out.list?.length, 508);
  });

  it('applies the length limit after percent-encoding, never cutting inside an escape', () => {
    // 200 'é' are 200 characters but 1200 once encoded; 500 would end inside the 84th `%C3`.
    const out = sanitizeMetadata({ name: 'é'.repeat(200) });
    assert.equal(out.name, `${'%C3%A9'.repeat(83)}...(cut)`);
  });

  it('keeps the total under the 2 KB S3 allows for user metadata', () => {
    const out = sanitizeMetadata({
      a: 'x'.repeat(600),
      b: 'y'.repeat(600),
      c: 'z'.repeat(600),
      d: 'w'.repeat(600),
    });
    const total = Object.entries(out).reduce((sum, [k, v]) => sum + k.length + v.length, 0);
    assert.ok(total <= 1900, `total ${total}`);
    assert.equal(out.a, `${'x'.repeat(500)}...(cut)`);
  });

  it('produces only printable ASCII for any input', () => {
    const out = sanitizeMetadata({ mixed: `naïve\u2028日本語\x1b[31m${'ü'.repeat(300)}` });
    assert.match(out.mixed ?? '', /^[\x20-\x7e]*$/);
    assert.ok((out.mixed ?? '').endsWith('...(cut)'));
  });

  it('does not modify its input', () => {
    const input = { Key: 'Grüße' };
    sanitizeMetadata(input);
    assert.deepEqual(input, { Key: 'Grüße' });
  });
});
