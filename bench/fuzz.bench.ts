/**
 * Time of the seeded fuzz run of test/integration/fuzz.test.ts (the same inputs and checks, from
 * test/harness/mail-fuzz.ts), for BENCHMARKS.md: the test bounds its work by the input count, not by a clock.
 *
 * Run: `node --import tsx bench/fuzz.bench.ts [--count 10000] [--runs 3] [--seed 20240601]`
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { mulberry32 } from '../test/fixtures/broken-mime/corpus.ts';
import { checkFuzzInput, fuzzSeeds, newFuzzStats, nextInput } from '../test/harness/mail-fuzz.ts';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '3' },
    seed: { type: 'string', default: '20240601' },
  },
});
const count = Math.max(1, Number(values.count));
const runs = Math.max(1, Number(values.runs));
const seed = Number(values.seed);

const seeds = fuzzSeeds();
const times: number[] = [];
for (let run = 0; run < runs; run++) {
  const random = mulberry32(seed);
  const stats = newFuzzStats();
  const started = performance.now();
  for (let i = 0; i < count; i++) await checkFuzzInput(nextInput(random, seeds), random, stats);
  times.push(performance.now() - started);
  process.stderr.write(`run ${run + 1}: ${(times.at(-1) ?? 0).toFixed(0)} ms\n`);
}
const sorted = [...times].sort((x, y) => x - y);
const medianMs = sorted[Math.floor(sorted.length / 2)] ?? 0;
console.log(
  `\nfuzz (seed ${seed}): ${count} inputs, median ${(medianMs / 1000).toFixed(1)} s over ${runs} run(s) ` +
    `(min ${((sorted[0] ?? 0) / 1000).toFixed(1)} s, max ${((sorted.at(-1) ?? 0) / 1000).toFixed(1)} s), ` +
    `${Math.round((count * 1000) / medianMs)} inputs/s`,
);
