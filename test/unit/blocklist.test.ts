import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkBlocked } from '../../src/mail/blocklist.ts';

function entries(record: Record<string, readonly string[]>): ReadonlyMap<string, readonly string[]> {
  return new Map(Object.entries(record));
}

describe('checkBlocked', () => {
  it('blocks every recipient whose list matches the sender', () => {
    const map = entries({ 'alice@example.org': ['*@spam.com'], 'bob@example.org': ['*@spam.com'] });
    assert.deepEqual(checkBlocked('x@spam.com', ['alice@example.org', 'bob@example.org'], map), [
      { recipient: 'alice@example.org', blocked: true, pattern: '*@spam.com' },
      { recipient: 'bob@example.org', blocked: true, pattern: '*@spam.com' },
    ]);
  });

  it('blocks only the recipients whose list matches, keeping the input order', () => {
    const map = entries({ 'alice@example.org': ['*@spam.com'], 'bob@example.org': ['*@other.com'] });
    assert.deepEqual(
      checkBlocked('x@spam.com', ['bob@example.org', 'alice@example.org', 'carol@example.org'], map),
      [
        { recipient: 'bob@example.org', blocked: false },
        { recipient: 'alice@example.org', blocked: true, pattern: '*@spam.com' },
        { recipient: 'carol@example.org', blocked: false },
      ],
    );
  });

  it('compares sender, recipient and pattern case-insensitively and reports the recipient as given', () => {
    const map = entries({ 'alice@example.org': ['NoReply@*.COM'] });
    assert.deepEqual(checkBlocked('NOREPLY@Shop.Com', ['Alice@Example.ORG'], map), [
      { recipient: 'Alice@Example.ORG', blocked: true, pattern: 'NoReply@*.COM' },
    ]);
  });

  it('never blocks an empty sender, even against a catch-all pattern', () => {
    const map = entries({ 'alice@example.org': ['*'] });
    for (const sender of ['', '<>', '  ', ' <> ']) {
      assert.deepEqual(checkBlocked(sender, ['alice@example.org'], map), [
        { recipient: 'alice@example.org', blocked: false },
      ]);
    }
  });

  it('strips angle brackets from an SMTP-style sender before matching', () => {
    const map = entries({ 'alice@example.org': ['*@spam.com'] });
    assert.equal(checkBlocked('<x@spam.com>', ['alice@example.org'], map)[0]?.blocked, true);
  });

  it('does not block a recipient that has no blocklist entry', () => {
    const map = entries({ 'alice@example.org': ['*'] });
    assert.deepEqual(checkBlocked('x@spam.com', ['dave@example.org'], map), [
      { recipient: 'dave@example.org', blocked: false },
    ]);
  });

  it('reports the first matching pattern when several match', () => {
    const map = entries({ 'alice@example.org': ['*@other.com', 'x@*', '*@spam.com', '*'] });
    assert.deepEqual(checkBlocked('x@spam.com', ['alice@example.org'], map), [
      { recipient: 'alice@example.org', blocked: true, pattern: 'x@*' },
    ]);
  });

  it('ignores empty and non-string patterns instead of throwing or blocking', () => {
    const malformed = ['', null, 42, undefined, '*@spam.com'] as unknown as readonly string[];
    const map = entries({ 'alice@example.org': malformed, 'bob@example.org': ['', ''] });
    assert.deepEqual(checkBlocked('x@spam.com', ['alice@example.org', 'bob@example.org'], map), [
      { recipient: 'alice@example.org', blocked: true, pattern: '*@spam.com' },
      { recipient: 'bob@example.org', blocked: false },
    ]);
  });

  it('uses fnmatch semantics, so a star crosses slashes and leading dots', () => {
    const map = entries({ 'alice@example.org': ['*@spam.com'] });
    assert.equal(checkBlocked('.x/y@spam.com', ['alice@example.org'], map)[0]?.blocked, true);
  });

  it('returns an empty list for no recipients', () => {
    assert.deepEqual(checkBlocked('x@spam.com', [], entries({})), []);
  });
});
