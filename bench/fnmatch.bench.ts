/**
 * Median time per match of our fnmatch against micromatch, on ordinary and hostile pattern/subject pairs
 * at RFC 5321 maximum length. Run: `node --import tsx bench/fnmatch.bench.ts`.
 *
 * micromatch backtracks exponentially on some of these inputs, so every micromatch case runs in its own
 * child process under a hard timeout; a timed-out case is reported as "> N s" rather than hanging the run.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import micromatch from 'micromatch';
import { compileFnmatch } from '../src/mail/fnmatch.ts';

interface BenchCase {
  readonly name: string;
  readonly pattern: string;
  readonly subject: string;
}

const CASES: readonly BenchCase[] = [
  { name: 'ordinary: `*@spam.com`, hit', pattern: '*@spam.com', subject: 'a'.repeat(246) + '@spam.com' },
  { name: 'ordinary: `*@spam.com`, miss', pattern: '*@spam.com', subject: 'a'.repeat(246) + '@spam.org' },
  {
    name: 'ordinary: `newsletter@example.*`',
    pattern: 'newsletter@example.*',
    subject: 'newsletter@example.' + 'c'.repeat(237),
  },
  { name: 'ordinary: `[!a-c]*@x.com`', pattern: '[!a-c]*@x.com', subject: 'd'.repeat(250) + '@x.com' },
  { name: 'hostile: `*a*a*a*b` vs a×254', pattern: '*a*a*a*b', subject: 'a'.repeat(254) },
  { name: 'hostile: `(*a)×11 *b` vs a×256', pattern: '*a'.repeat(11) + '*b', subject: 'a'.repeat(256) },
  { name: 'hostile: `(*a)×99 *b` vs a×254', pattern: '*a'.repeat(99) + '*b', subject: 'a'.repeat(254) },
  { name: 'hostile: `*`×1000 b vs a×256', pattern: '*'.repeat(1000) + 'b', subject: 'a'.repeat(256) },
  { name: 'hostile: `(*a)×128` vs a×255 b', pattern: '*a'.repeat(128), subject: 'a'.repeat(255) + 'b' },
  // Worst case for our algorithm (every restart re-reads a long run), harmless for a regex engine.
  {
    name: 'worst for ours: `*` a×127 b vs a×256',
    pattern: '*' + 'a'.repeat(127) + 'b',
    subject: 'a'.repeat(256),
  },
  {
    name: 'worst for ours: `*` [a-z]×100 b vs a×256',
    pattern: '*' + '[a-z]'.repeat(100) + 'b',
    subject: 'a'.repeat(256),
  },
];

const MICROMATCH_TIMEOUT_MS = 2_500;
/** Lets V8 optimise the matcher first; otherwise whichever case runs first looks several times slower. */
const WARMUP_MS = 50;
const SAMPLE_BUDGET_MS = 150;
const MAX_SAMPLES = 41;
/** Batch fast calls so one sample is long enough for the clock to resolve it. */
const MIN_SAMPLE_US = 200;

interface Measurement {
  readonly medianUs: number;
  readonly samples: number;
  readonly matched: boolean;
}

function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1_000;
}

function measure(match: (subject: string) => boolean, subject: string): Measurement {
  let t0 = nowUs();
  const matched = match(subject);
  const firstUs = nowUs() - t0;
  const warmupEnd = nowUs() + WARMUP_MS * 1_000;
  while (nowUs() < warmupEnd) match(subject);
  const batch = Math.max(1, Math.ceil(MIN_SAMPLE_US / Math.max(firstUs, 0.01)));
  const samples: number[] = [firstUs];
  const deadline = nowUs() + SAMPLE_BUDGET_MS * 1_000;
  while (samples.length < MAX_SAMPLES && nowUs() < deadline) {
    t0 = nowUs();
    for (let i = 0; i < batch; i++) match(subject);
    samples.push((nowUs() - t0) / batch);
  }
  samples.sort((a, b) => a - b);
  return { medianUs: samples[Math.floor(samples.length / 2)] ?? firstUs, samples: samples.length, matched };
}

function runMicromatchChild(index: number): void {
  const c = CASES[index];
  if (c === undefined) throw new Error(`no case ${index}`);
  const isMatch = micromatch.matcher(c.pattern, { dot: true, nocase: true });
  process.stdout.write(JSON.stringify(measure(isMatch, c.subject)));
}

function micromatchCell(index: number): string {
  const child = spawnSync(
    process.execPath,
    [...process.execArgv, fileURLToPath(import.meta.url), '--micromatch-child', String(index)],
    { timeout: MICROMATCH_TIMEOUT_MS, encoding: 'utf8', killSignal: 'SIGKILL' },
  );
  if (child.error !== undefined || child.signal !== null)
    return `> ${MICROMATCH_TIMEOUT_MS / 1000} s (killed)`;
  if (child.status !== 0) return `error: ${child.stderr.trim().split('\n')[0] ?? ''}`;
  const m = JSON.parse(child.stdout) as Measurement;
  return `${formatUs(m.medianUs)} (${m.matched ? 'match' : 'no match'})`;
}

function formatUs(us: number): string {
  return us >= 100 ? us.toFixed(0) : us.toPrecision(3);
}

function main(): void {
  const rows: string[] = [
    '| case | pattern len | subject len | ours: median µs (result, steps) | micromatch: median µs (result) |',
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  CASES.forEach((c, index) => {
    const compiled = compileFnmatch(c.pattern);
    const ours = measure(compiled.matches, c.subject);
    const { steps } = compiled.matchWithStats(c.subject);
    const oursCell = `${formatUs(ours.medianUs)} (${ours.matched ? 'match' : 'no match'}, ${steps})`;
    rows.push(
      `| ${c.name} | ${c.pattern.length} | ${c.subject.length} | ${oursCell} | ${micromatchCell(index)} |`,
    );
  });
  console.log(rows.join('\n'));
  console.log(
    `\nmicromatch runs with { dot: true, nocase: true }, one child process per case, killed after ${MICROMATCH_TIMEOUT_MS} ms.`,
  );
}

const childFlag = process.argv.indexOf('--micromatch-child');
if (childFlag >= 0) runMicromatchChild(Number(process.argv[childFlag + 1]));
else main();
