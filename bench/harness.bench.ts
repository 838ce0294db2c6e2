/**
 * Start-up time of the integration-test stack (fauxqs, dynalite, aws-ses-v2-local behind its recorder, the tables
 * and one domain queue), for BENCHMARKS.md: every integration test file pays it once, and the tests do not limit it.
 *
 * Run: `node --import tsx bench/harness.bench.ts [--runs 7]`
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startStack } from '../test/harness/emulators.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '7' } } });
const runs = Math.max(1, Number(values.runs));

const times: number[] = [];
for (let run = 0; run < runs; run++) {
  const started = performance.now();
  const stack = await startStack({ tables: true, domains: ['example.com'] });
  times.push(performance.now() - started);
  await stack.stop();
}
// The first start also loads the emulators' modules; report it apart from the rest.
const [first, ...rest] = times;
const sorted = [...rest].sort((x, y) => x - y);
const median = sorted[Math.floor(sorted.length / 2)] ?? first ?? 0;
console.log(
  `\nstack start-up (tables + one domain queue): first ${(first ?? 0).toFixed(0)} ms, then median ` +
    `${median.toFixed(0)} ms over ${rest.length} run(s) (min ${(sorted[0] ?? 0).toFixed(0)}, max ` +
    `${(sorted.at(-1) ?? 0).toFixed(0)} ms)`,
);
