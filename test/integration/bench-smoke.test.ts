/**
 * The benchmark harness itself works: `bench/run.ts --smoke` runs the built daemon and both yardsticks against the
 * emulators with a handful of mails and writes the JSON BENCHMARKS.md is built from. No number is judged here
 * (targets live in BENCHMARKS.md); only that every variant delivered every mail once and reported its figures.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { assertBuilt } from '../harness/daemon-process.ts';

const RUN = fileURLToPath(new URL('../../bench/run.ts', import.meta.url));

describe('npm run bench -- --smoke', () => {
  let dir: string;
  before(async () => {
    assertBuilt();
    dir = await mkdtemp(join(tmpdir(), 'uw-bench-smoke-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('runs the daemon, the I/O floor and one-at-a-time and writes their figures as JSON', async () => {
    const out = join(dir, 'smoke.json');
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.NODE_OPTIONS;
    delete env.NODE_TEST_CONTEXT;
    await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', RUN, '--smoke', '--mails', '12', '--out', out],
      {
        env,
        timeout: 120_000,
      },
    );
    const result = JSON.parse(await readFile(out, 'utf8')) as {
      machine: { cpus: number; sink: string };
      variants: Record<string, Record<string, unknown> & { runs: Array<Record<string, number>> }>;
    };
    assert.ok(result.machine.cpus > 0);
    assert.ok(result.machine.sink.length > 0);
    for (const name of ['default_0ms', 'io_floor_0ms', 'one_at_a_time_0ms']) {
      const variant = result.variants[name];
      assert.ok(variant, `variant ${name} missing`);
      for (const key of ['msgs_per_s', 'p50_ms', 'p99_ms', 'cpu_ms_per_msg', 'peak_rss_mb']) {
        assert.equal(typeof variant[key], 'number', `${name}.${key}`);
        assert.ok(
          Number.isFinite(variant[key]) && (variant[key] as number) >= 0,
          `${name}.${key} = ${String(variant[key])}`,
        );
      }
      assert.ok((variant.msgs_per_s as number) > 0, `${name} delivered nothing`);
      assert.equal(variant.runs[0]?.delivered, 12, `${name}: every mail delivered`);
      assert.equal(variant.runs[0]?.duplicates, 0, `${name}: no mail delivered twice`);
    }
  });
});
