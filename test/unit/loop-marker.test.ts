import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import type { Clock } from '../../src/clock.ts';
import { LOOP_MARKER_HEADER } from '../../src/mail/constants.ts';
import { MARKER_LIFETIME_SECONDS, createLoopMarker, type MarkerStamp } from '../../src/mail/loop-marker.ts';

const SECRET = 'loop-marker-secret-0123456789';
const SES_ID = 'o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1';
const ALICE = 'alice@example.com';
const FRIEND = 'friend@elsewhere.test';
const STRANGER = 'stranger@outside.test';

/** A clock that stands still unless moved. */
function fixedClock(start = Date.UTC(2026, 0, 1)): Clock & { advance(ms: number): void } {
  let now = start;
  return {
    now: () => now,
    sleep: () => Promise.resolve(),
    advance(ms: number) {
      now += ms;
    },
  };
}

const forward = (over: Partial<MarkerStamp> = {}): MarkerStamp => ({
  kind: 'forward',
  sesMessageId: SES_ID,
  origin: ALICE,
  target: FRIEND,
  ...over,
});
const autoReply = (over: Partial<MarkerStamp> = {}): MarkerStamp => ({
  kind: 'auto-reply',
  sesMessageId: SES_ID,
  origin: ALICE,
  target: STRANGER,
  ...over,
});

/** HMAC-SHA256 of the payload, base64url, first 32 characters: the documented signature. */
function expectedSig(secret: string, payload: string): string {
  return createHmac('sha256', secret).update(payload).digest('base64url').slice(0, 32);
}

function payloadOf(value: string): string {
  return value.slice(0, value.lastIndexOf('; sig='));
}

describe('createLoopMarker without a secret', () => {
  const marker = createLoopMarker('example.com', '');

  it('uses the X-SES-Worker-Processed header', () => {
    assert.equal(marker.name, LOOP_MARKER_HEADER);
    assert.equal(marker.name, 'X-SES-Worker-Processed');
  });

  it('makes the unsigned value of the original daemon', () => {
    assert.equal(marker.valueFor(forward()), `worker-example.com; id=${SES_ID}`);
  });

  it('trusts any value for any recipients, but not an empty list of values', () => {
    assert.equal(marker.isTrusted(['anything at all'], [STRANGER]), true);
    assert.equal(marker.isTrusted([''], []), true);
    assert.equal(marker.isTrusted([], [ALICE]), false);
  });

  it('carries nothing on a forward (nothing can be verified)', () => {
    assert.deepEqual(marker.carried([marker.valueFor(forward())]), []);
  });
});

describe('createLoopMarker with a secret', () => {
  const clock = fixedClock();
  const marker = createLoopMarker('example.com', SECRET, clock);
  const nowSeconds = () => Math.floor(clock.now() / 1000);

  it('writes version, kind, domain, id, hashed origin and target, expiry and an HMAC over all of it', () => {
    const value = marker.valueFor(forward());
    assert.match(
      value,
      /^worker-example\.com; v=2; k=forward; id=o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1; o=[A-Za-z0-9_-]{16}; t=[A-Za-z0-9_-]{16}; exp=\d+; sig=[A-Za-z0-9_-]{32}$/,
    );
    assert.equal(value.slice(value.lastIndexOf('; sig=') + 6), expectedSig(SECRET, payloadOf(value)));
    assert.match(value, new RegExp(`; exp=${nowSeconds() + MARKER_LIFETIME_SECONDS};`));
  });

  it('does not reveal the addresses it is bound to', () => {
    const value = marker.valueFor(forward());
    for (const part of ['alice', 'friend', 'elsewhere'])
      assert.ok(!value.includes(part), `${part} in ${value}`);
    assert.ok(value.length < 200, `${value.length} characters`);
  });

  it('trusts a forward that comes back to its origin or reaches its target', () => {
    const value = marker.valueFor(forward());
    assert.equal(marker.isTrusted([value], [ALICE]), true, 'back at the origin');
    assert.equal(marker.isTrusted([value], [FRIEND]), true, 'at the target');
    assert.equal(
      marker.isTrusted([value], ['ALICE@Example.COM']),
      true,
      'addresses compare case-insensitively',
    );
  });

  it('does not trust a forward marker copied into mail to someone else', () => {
    assert.equal(marker.isTrusted([marker.valueFor(forward())], ['bob@example.com']), false);
  });

  it('trusts an auto-reply marker only at the address the reply went to', () => {
    const value = marker.valueFor(autoReply());
    assert.equal(marker.isTrusted([value], [STRANGER]), true);
    // Whoever got the auto-reply pastes the header into new mail to the mailbox: that must not switch off its rules.
    assert.equal(marker.isTrusted([value], [ALICE]), false);
    assert.equal(marker.isTrusted([value], ['bob@example.com']), false);
  });

  it('stops trusting a marker when it expires', () => {
    const clockForExpiry = fixedClock();
    const expiring = createLoopMarker('example.com', SECRET, clockForExpiry);
    const value = expiring.valueFor(forward());
    clockForExpiry.advance(MARKER_LIFETIME_SECONDS * 1000 - 1000);
    assert.equal(expiring.isTrusted([value], [ALICE]), true);
    clockForExpiry.advance(1000);
    assert.equal(expiring.isTrusted([value], [ALICE]), false);
  });

  it('rejects a changed payload: kind, domain, id, expiry', () => {
    const value = marker.valueFor(autoReply());
    const sig = value.slice(value.lastIndexOf('; sig='));
    const edits = [
      payloadOf(value).replace('k=auto-reply', 'k=forward'),
      payloadOf(value).replace('worker-example.com', 'worker-victim.com'),
      payloadOf(value).replace(`id=${SES_ID}`, `id=${SES_ID}x`),
      payloadOf(value).replace(/exp=\d+/, 'exp=99999999999'),
    ];
    for (const payload of edits)
      assert.equal(marker.isTrusted([payload + sig], [STRANGER, ALICE]), false, payload);
  });

  it('rejects a changed, truncated, extended or full-length signature', () => {
    const value = marker.valueFor(forward());
    const last = value.at(-1);
    assert.equal(marker.isTrusted([`${value.slice(0, -1)}${last === 'A' ? 'B' : 'A'}`], [ALICE]), false);
    assert.equal(marker.isTrusted([value.slice(0, -1)], [ALICE]), false);
    assert.equal(marker.isTrusted([`${value}A`], [ALICE]), false);
    const full = createHmac('sha256', SECRET).update(payloadOf(value)).digest('base64url');
    assert.equal(marker.isTrusted([`${payloadOf(value)}; sig=${full}`], [ALICE]), false);
  });

  it('rejects a value signed with another secret or made without one', () => {
    const other = createLoopMarker('example.com', 'a-different-secret', clock);
    assert.equal(marker.isTrusted([other.valueFor(forward())], [ALICE]), false);
    assert.equal(other.isTrusted([marker.valueFor(forward())], [ALICE]), false);
    assert.equal(marker.isTrusted([createLoopMarker('example.com', '').valueFor(forward())], [ALICE]), false);
  });

  it('rejects the signed format of earlier releases (no binding, no expiry)', () => {
    const payload = `worker-example.com; id=${SES_ID}`;
    assert.equal(marker.isTrusted([`${payload}; sig=${expectedSig(SECRET, payload)}`], [ALICE]), false);
  });

  it('trusts its value with surrounding whitespace but not with a second line glued on', () => {
    const value = marker.valueFor(forward());
    assert.equal(marker.isTrusted([`  ${value} \t`], [ALICE]), true);
    assert.equal(marker.isTrusted([`${value}\r\nX-Other: 1`], [ALICE]), false);
  });

  it('trusts the list when any one value is valid, but only looks at the first 32', () => {
    const value = marker.valueFor(forward());
    assert.equal(marker.isTrusted(['forged', value], [ALICE]), true);
    assert.equal(marker.isTrusted([...Array.from({ length: 32 }, () => 'forged'), value], [ALICE]), false);
  });

  it('carries its own valid markers of earlier hops, at most 4, and nothing forged or expired', () => {
    const clockForCarry = fixedClock();
    const carrying = createLoopMarker('example.com', SECRET, clockForCarry);
    const old = carrying.valueFor(forward({ target: 'first@hop.test' }));
    clockForCarry.advance(MARKER_LIFETIME_SECONDS * 1000);
    const values = Array.from({ length: 6 }, (_, i) =>
      carrying.valueFor(forward({ target: `t${i}@hop.test` })),
    );
    const carried = carrying.carried(['forged', old, ` ${values[0] ?? ''} `, ...values.slice(1)]);
    assert.deepEqual(carried, values.slice(0, 4));
  });
});
