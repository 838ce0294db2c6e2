import assert from 'node:assert/strict';
import { it } from 'node:test';
import { buildConfig } from '../../src/config/config.ts';
import { configWarnings } from '../../src/daemon/config-warnings.ts';

it('warns once per weakened guarantee: no loop-marker secret, no ledger, a grace period within the long poll', () => {
  const base = { DOMAINS: 'example.com', LOOP_MARKER_SECRET: 's3cret' };
  assert.deepEqual(configWarnings(buildConfig(base)), []);
  const warnings = configWarnings(
    buildConfig({ DOMAINS: 'example.com', IDEMPOTENCY_TABLE: 'none', SHUTDOWN_GRACE_SECONDS: '20' }),
  );
  assert.equal(warnings.length, 3);
  assert.match(warnings[0] ?? '', /^LOOP_MARKER_SECRET is not set/);
  assert.match(warnings[0] ?? '', /delivery ids are an unkeyed hash/);
  assert.match(warnings[1] ?? '', /^IDEMPOTENCY_TABLE=none/);
  assert.match(warnings[2] ?? '', /^SHUTDOWN_GRACE_SECONDS \(20\) is not above WAIT_TIME_SECONDS \(20\)/);
});
