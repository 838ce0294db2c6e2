import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildConfig } from '../../src/config/config.ts';

const base = { DOMAINS: 'example.com' };

describe('IDEMPOTENCY_TABLE: exactly once by default', () => {
  it('defaults to email-worker-idempotency, also when set but empty', () => {
    assert.equal(buildConfig(base).tables.idempotency, 'email-worker-idempotency');
    assert.equal(
      buildConfig({ ...base, IDEMPOTENCY_TABLE: '' }).tables.idempotency,
      'email-worker-idempotency',
    );
    assert.equal(
      buildConfig({ ...base, IDEMPOTENCY_TABLE: '  ' }).tables.idempotency,
      'email-worker-idempotency',
    );
  });

  it('takes another table name as given', () => {
    assert.equal(buildConfig({ ...base, IDEMPOTENCY_TABLE: 'my-ledger' }).tables.idempotency, 'my-ledger');
  });

  it('is switched off only by the explicit value none (any case)', () => {
    for (const off of ['none', 'NONE', ' None ']) {
      assert.equal(buildConfig({ ...base, IDEMPOTENCY_TABLE: off }).tables.idempotency, '', off);
    }
  });
});
