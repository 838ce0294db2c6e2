import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { LOOP_MARKER_HEADER } from '../../src/mail/constants.ts';
import { createLoopMarker } from '../../src/mail/loop-marker.ts';

const SECRET = 'loop-marker-secret-0123456789';
const SES_ID = 'o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1';

/** The signature the marker is documented to carry: HMAC-SHA256 of the payload, base64url, first 32 characters. */
function expectedSig(secret: string, payload: string): string {
  return createHmac('sha256', secret).update(payload).digest('base64url').slice(0, 32);
}

describe('createLoopMarker without a secret', () => {
  const marker = createLoopMarker('example.com', '');

  it('uses the X-SES-Worker-Processed header', () => {
    assert.equal(marker.name, 'X-SES-Worker-Processed');
    assert.equal(marker.name, LOOP_MARKER_HEADER);
  });

  it('makes an unsigned value naming the domain and the SES message id', () => {
    assert.equal(marker.valueFor(SES_ID), `worker-example.com; id=${SES_ID}`);
  });

  it('trusts any value, including one it did not make', () => {
    assert.equal(marker.isTrusted([marker.valueFor(SES_ID)]), true);
    assert.equal(marker.isTrusted(['anything at all']), true);
    assert.equal(marker.isTrusted(['']), true);
    assert.equal(marker.isTrusted(['worker-other.org; id=x; sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']), true);
  });

  it('does not trust an empty list of values', () => {
    assert.equal(marker.isTrusted([]), false);
  });
});

describe('createLoopMarker with a secret', () => {
  const marker = createLoopMarker('example.com', SECRET);

  it('signs the value with an HMAC over the payload', () => {
    const payload = `worker-example.com; id=${SES_ID}`;
    const value = marker.valueFor(SES_ID);
    assert.equal(value, `${payload}; sig=${expectedSig(SECRET, payload)}`);
    assert.match(value, /; sig=[A-Za-z0-9_-]{32}$/);
  });

  it('makes the same value for the same id and different values for different ids', () => {
    assert.equal(marker.valueFor(SES_ID), marker.valueFor(SES_ID));
    assert.notEqual(marker.valueFor('a'), marker.valueFor('b'));
  });

  it('trusts values it made for any message id', () => {
    for (const id of [
      SES_ID,
      'a',
      '0000000000000000000000000000000000000000',
      'with space; and=semicolon',
      '',
    ]) {
      assert.equal(marker.isTrusted([marker.valueFor(id)]), true, JSON.stringify(id));
    }
  });

  it('trusts a value made by another marker with the same secret', () => {
    const sibling = createLoopMarker('example.com', SECRET);
    assert.equal(marker.isTrusted([sibling.valueFor(SES_ID)]), true);
  });

  it('trusts its value with surrounding whitespace, as an unfolded header value may carry', () => {
    assert.equal(marker.isTrusted([`  ${marker.valueFor(SES_ID)} \t`]), true);
  });

  it('trusts the list when any one of the values is valid', () => {
    assert.equal(
      marker.isTrusted([
        'forged',
        `worker-example.com; id=x; sig=${'A'.repeat(32)}`,
        marker.valueFor(SES_ID),
      ]),
      true,
    );
  });

  it('does not trust an empty list, an empty value or an unsigned value', () => {
    assert.equal(marker.isTrusted([]), false);
    assert.equal(marker.isTrusted(['']), false);
    assert.equal(marker.isTrusted([`worker-example.com; id=${SES_ID}`]), false);
    assert.equal(marker.isTrusted(['yes']), false);
  });

  it('rejects a value whose payload was changed', () => {
    const value = marker.valueFor(SES_ID);
    const sig = value.slice(value.lastIndexOf('; sig=') + 6);
    assert.equal(marker.isTrusted([`worker-example.com; id=${SES_ID}x; sig=${sig}`]), false);
    assert.equal(marker.isTrusted([`worker-victim.com; id=${SES_ID}; sig=${sig}`]), false);
    assert.equal(marker.isTrusted([value.replace('worker-', 'Worker-')]), false);
  });

  it('rejects a value whose signature was changed', () => {
    const value = marker.valueFor(SES_ID);
    const last = value.at(-1);
    const flipped = `${value.slice(0, -1)}${last === 'A' ? 'B' : 'A'}`;
    assert.equal(marker.isTrusted([flipped]), false);
  });

  it('rejects a truncated or extended signature', () => {
    const value = marker.valueFor(SES_ID);
    assert.equal(marker.isTrusted([value.slice(0, -1)]), false);
    assert.equal(marker.isTrusted([`${value}A`]), false);
  });

  it('rejects the full-length (untruncated) HMAC', () => {
    const payload = `worker-example.com; id=${SES_ID}`;
    const full = createHmac('sha256', SECRET).update(payload).digest('base64url');
    assert.equal(marker.isTrusted([`${payload}; sig=${full}`]), false);
  });

  it('rejects a value signed with another secret', () => {
    const other = createLoopMarker('example.com', 'a-different-secret');
    assert.equal(marker.isTrusted([other.valueFor(SES_ID)]), false);
    assert.equal(other.isTrusted([marker.valueFor(SES_ID)]), false);
  });

  it('rejects a value a marker without a secret made', () => {
    const unsigned = createLoopMarker('example.com', '');
    assert.equal(marker.isTrusted([unsigned.valueFor(SES_ID)]), false);
  });

  it('rejects a signature with characters outside base64url', () => {
    const payload = `worker-example.com; id=${SES_ID}`;
    const sig = expectedSig(SECRET, payload);
    assert.equal(marker.isTrusted([`${payload}; sig=${sig.slice(0, 31)}+`]), false);
    assert.equal(marker.isTrusted([`${payload}; sig=${sig.slice(0, 31)}/`]), false);
  });

  it('rejects a valid signature moved onto another line of text', () => {
    const value = marker.valueFor(SES_ID);
    assert.equal(marker.isTrusted([`${value}\r\nX-Other: 1`]), false);
  });
});
