/**
 * `npm run bench`: the built daemon against the I/O floor and the one-at-a-time design, in the same run.
 *
 * Everything runs on this machine: the emulators of the test suite (fauxqs, dynalite, aws-ses-v2-local) in this
 * process, a latency proxy in front of each (every consumer goes through them; the preload does not), Postfix's
 * smtp-sink as the mail server, and each consumer as its own process, so /proc gives its CPU and peak RSS alone.
 * Variants alternate round by round (daemon, floor, one-at-a-time, daemon, ...) after a warm-up, and ratios are
 * taken per round, then their median: machine noise hits both sides of a ratio alike.
 *
 *   npm run bench                  full set (about 30 minutes on 2 cores)
 *   npm run bench -- --quick       the five headline variants, 300 mails, 3 rounds (under 4 minutes)
 *   npm run bench -- --smoke       a handful of mails, one round (the test suite's check that the harness works)
 *   options: --mails N --warmup N --runs R --latency-ms 0,20 --only name,name --out file.json
 *            --cpu-prof DIR   V8 CPU profiles of every daemon thread per run (summarise: bench/profile-summary.ts)
 *            --baseline DIR   also run `default` and `rcpt10` with the daemon built in DIR (another checkout after
 *                             `npm ci && npm run build`) as `base_default` and `base_rcpt10`: before and after a
 *                             change in the same run, alternating round by round
 *
 * Each measured run first lets its consumer process deliver --warmup mails (JIT compilation and heap growth of a
 * fresh process are start-up, not the cost of a mail), then measures the next --mails.
 *
 * Raw results: bench/results/<time>.json and bench/results/latest.json (or --out). BENCHMARKS.md quotes them.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startStack, type TestStack } from '../test/harness/emulators.ts';
import { assertBuilt } from '../test/harness/daemon-process.ts';
import type { Endpoints } from './lib/consumers.ts';
import { measureHeaderParsing, type HeaderParsingResult } from './header-parsing.bench.ts';
import { startLatencyProxy, type LatencyProxy } from './lib/latency-proxy.ts';
import {
  measureIdle,
  measureLargeForwards,
  measureLargeMail,
  measureSerialLatency,
  measureSesBurst,
  measureThroughput,
  type IdleResult,
  type LargeForwardsResult,
  type LargeMailResult,
  type SerialLatencyResult,
  type SesBurstResult,
  type RunResult,
  type ThroughputSpec,
} from './lib/measure.ts';
import { median, round } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    mails: { type: 'string' },
    runs: { type: 'string' },
    'latency-ms': { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
    warmup: { type: 'string' },
    'cpu-prof': { type: 'string' },
    baseline: { type: 'string' },
  },
});

const mode = values.smoke ? 'smoke' : values.quick ? 'quick' : 'full';
const mails = Number(values.mails ?? { smoke: 20, quick: 400, full: 1000 }[mode]);
const warmupMails = Number(values.warmup ?? { smoke: 0, quick: 200, full: 300 }[mode]);
const runs = Number(values.runs ?? { smoke: 1, quick: 3, full: 3 }[mode]);
const latencies = (values['latency-ms'] ?? (mode === 'smoke' ? '0' : '0,20')).split(',').map(Number);
const idleSeconds = mode === 'full' ? 60 : 15;
/** Seconds from the start before idle CPU counts (measure.ts says why). */
const IDLE_SETTLE_SECONDS = 120;
const LEDGER_OFF = { IDEMPOTENCY_TABLE: 'none' };

type Spec = Omit<ThroughputSpec, 'mails' | 'warmupMails'>;
const base: Spec = { kind: 'daemon', mailBytes: 10 * 1024, recipientsPerMail: 1, domains: 1 };
const THROUGHPUT: Record<string, Spec> = {
  default: base,
  io_floor: { ...base, kind: 'io-floor' },
  one_at_a_time: { ...base, kind: 'one-at-a-time' },
  no_ledger: { ...base, env: LEDGER_OFF },
  rcpt10: { ...base, recipientsPerMail: 10 },
  io_floor_rcpt10: { ...base, kind: 'io-floor', recipientsPerMail: 10 },
  domains20: { ...base, domains: 20 },
};
const baselineEntry =
  values.baseline === undefined ? undefined : join(resolve(values.baseline), 'dist', 'unified-worker.js');
if (baselineEntry !== undefined) {
  THROUGHPUT.base_default = { ...base, entry: baselineEntry };
  THROUGHPUT.base_rcpt10 = { ...base, recipientsPerMail: 10, entry: baselineEntry };
}
const HEADLINE = ['default', 'io_floor', 'one_at_a_time', 'base_default'];
const selected = values.only?.split(',');
const wanted = (name: string) =>
  selected ? selected.some((s) => name === s || name.startsWith(`${s}_`)) : true;

interface Summary {
  msgs_per_s: number;
  p50_ms: number;
  p99_ms: number;
  cpu_ms_per_msg: number;
  peak_rss_mb: number;
  runs: RunResult[];
}

function summarize(results: RunResult[]): Summary {
  const pick = (key: keyof RunResult) => median(results.map((r) => Number(r[key])));
  return {
    msgs_per_s: round(pick('msgs_per_s')),
    p50_ms: round(pick('p50_ms'), 0),
    p99_ms: round(pick('p99_ms'), 0),
    cpu_ms_per_msg: round(pick('cpu_ms_per_msg'), 2),
    peak_rss_mb: round(pick('peak_rss_mb'), 0),
    runs: results,
  };
}

async function withProxies<T>(stack: TestStack, latencyMs: number, work: (e: Endpoints) => Promise<T>) {
  const proxies: LatencyProxy[] = await Promise.all([
    startLatencyProxy(stack.endpoints.sqs, latencyMs),
    startLatencyProxy(stack.endpoints.dynamodb, latencyMs),
    startLatencyProxy(stack.endpoints.ses, latencyMs),
  ]);
  const [fauxqs, dynamo, ses] = proxies as [LatencyProxy, LatencyProxy, LatencyProxy];
  try {
    return await work({
      sqs: fauxqs.endpoint,
      s3: fauxqs.endpoint,
      dynamodb: dynamo.endpoint,
      ses: ses.endpoint,
    });
  } finally {
    await Promise.all(proxies.map((p) => p.stop()));
  }
}

/** One variant that fails is reported in the results and the log, and the others still run. */
async function guarded<T>(name: string, measure: () => Promise<T>): Promise<T | { error: string }> {
  try {
    const result = await measure();
    log(`${name}: ${JSON.stringify(result)}`);
    return result;
  } catch (error) {
    log(`${name} FAILED: ${error instanceof Error ? error.message : String(error)}`);
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

async function main(): Promise<void> {
  assertBuilt();
  const stack = await startStack({ tables: true });
  const variants: Record<
    string,
    | Summary
    | IdleResult
    | LargeMailResult
    | LargeForwardsResult
    | SesBurstResult
    | SerialLatencyResult
    | HeaderParsingResult
    | { error: string }
  > = {};
  const ratios: Record<string, number> = {};
  let sink = '';
  try {
    for (const latencyMs of latencies) {
      const names = Object.keys(THROUGHPUT).filter(
        (n) => (mode === 'full' || HEADLINE.includes(n)) && wanted(`${n}_${latencyMs}ms`),
      );
      const perRound: Record<string, RunResult[]> = Object.fromEntries(names.map((n) => [n, []]));
      await withProxies(stack, latencyMs, async (endpoints) => {
        if (mode !== 'smoke') {
          log(`${latencyMs} ms: warm-up`);
          for (const n of names.filter((x) => HEADLINE.includes(x)))
            await measureThroughput(stack, endpoints, { ...THROUGHPUT[n]!, mails: 50, warmupMails: 0 });
        }
        for (let round = 1; round <= runs; round++) {
          for (const name of names) {
            const result = await measureThroughput(stack, endpoints, {
              ...THROUGHPUT[name]!,
              mails,
              warmupMails,
              ...(values['cpu-prof'] !== undefined && {
                cpuProfileDir: join(values['cpu-prof'], `${name}_${latencyMs}ms_${round}`),
              }),
            });
            sink = result.sink;
            perRound[name]!.push(result);
            log(
              `${latencyMs} ms round ${round} ${name}: ${result.msgs_per_s} msg/s, ` +
                `${result.cpu_ms_per_msg} ms CPU/mail, ${result.peak_rss_mb} MB peak` +
                (result.duplicates > 0 ? `, ${result.duplicates} DUPLICATES` : ''),
            );
          }
        }
      });
      for (const name of names) variants[`${name}_${latencyMs}ms`] = summarize(perRound[name]!);
      Object.assign(ratios, roundRatios(perRound, latencyMs));
    }
    if (mode === 'full') {
      await withProxies(stack, 0, async (endpoints) => {
        if (wanted('idle_1_domain'))
          variants.idle_1_domain = await guarded('idle_1_domain', () =>
            measureIdle(stack, endpoints, 1, idleSeconds, IDLE_SETTLE_SECONDS),
          );
        if (wanted('idle_20_domains'))
          variants.idle_20_domains = await guarded('idle_20_domains', () =>
            measureIdle(stack, endpoints, 20, idleSeconds, IDLE_SETTLE_SECONDS),
          );
        if (wanted('large_40mb'))
          variants.large_40mb = await guarded('large_40mb', () =>
            measureLargeMail(stack, endpoints, 40 * 1024 * 1024),
          );
        if (wanted('ses_burst'))
          variants.ses_burst = await guarded('ses_burst', () => measureSesBurst(stack, endpoints, 500, 14));
        // 39 MiB is past what SES takes as a forward (40 MB after base64): each forward fails, once; 29 MiB is about
        // the largest mail SES forwards.
        for (const mb of [39, 29]) {
          const name = `large_forwards_${mb}mb`;
          if (wanted(name))
            variants[name] = await guarded(name, () =>
              measureLargeForwards(stack, endpoints, mb * 1024 * 1024, 20),
            );
          if (baselineEntry !== undefined && wanted(`base_${name}`))
            variants[`base_${name}`] = await guarded(`base_${name}`, () =>
              measureLargeForwards(stack, endpoints, mb * 1024 * 1024, 20, baselineEntry),
            );
        }
      });
      await withProxies(stack, 20, async (endpoints) => {
        for (const recipients of [1, 10]) {
          const name = `serial_rcpt${recipients}_20ms`;
          if (wanted(name))
            variants[name] = await guarded(name, () =>
              measureSerialLatency(stack, endpoints, 20, recipients, 40),
            );
        }
      });
      // In this process, no consumer: the header work of one mail is CPU alone (bench/header-parsing.bench.ts).
      if (wanted('header_parsing'))
        variants.header_parsing = await guarded('header_parsing', () => measureHeaderParsing());
      const one = variants.idle_1_domain;
      const twenty = variants.idle_20_domains;
      if (one && twenty && 'rss_mb' in one && 'rss_mb' in twenty)
        ratios.idle_rss_mb_per_domain_thread = round((twenty.rss_mb - one.rss_mb) / 19, 1);
    }
  } finally {
    await stack.stop();
  }
  await writeResults({ variants, ratios, sink });
}

/** Ratios of the same round (the machine was in the same state for both sides), then their median. */
function roundRatios(perRound: Record<string, RunResult[]>, latencyMs: number): Record<string, number> {
  const out: Record<string, number> = {};
  const ratio = (a: string, b: string, key: 'msgs_per_s' | 'cpu_ms_per_msg', label: string) => {
    const left = perRound[a];
    const right = perRound[b];
    if (!left?.length || !right?.length) return;
    const values = left.map((r, i) => r[key] / (right[i]?.[key] ?? NaN)).filter(Number.isFinite);
    if (values.length > 0) out[`${label}_${latencyMs}ms`] = round(median(values), 2);
  };
  ratio('default', 'io_floor', 'msgs_per_s', 'daemon_vs_io_floor');
  ratio('default', 'one_at_a_time', 'msgs_per_s', 'daemon_vs_one_at_a_time');
  ratio('default', 'io_floor', 'cpu_ms_per_msg', 'cpu_daemon_vs_io_floor');
  ratio('no_ledger', 'io_floor', 'cpu_ms_per_msg', 'cpu_no_ledger_vs_io_floor');
  ratio('no_ledger', 'io_floor', 'msgs_per_s', 'no_ledger_vs_io_floor');
  ratio('rcpt10', 'io_floor_rcpt10', 'msgs_per_s', 'rcpt10_vs_io_floor_rcpt10');
  ratio('domains20', 'default', 'msgs_per_s', 'domains20_vs_default');
  ratio('rcpt10', 'io_floor_rcpt10', 'cpu_ms_per_msg', 'cpu_rcpt10_vs_io_floor_rcpt10');
  ratio('default', 'base_default', 'msgs_per_s', 'daemon_vs_baseline');
  ratio('default', 'base_default', 'cpu_ms_per_msg', 'cpu_daemon_vs_baseline');
  ratio('base_default', 'io_floor', 'msgs_per_s', 'baseline_vs_io_floor');
  ratio('base_default', 'one_at_a_time', 'msgs_per_s', 'baseline_vs_one_at_a_time');
  ratio('base_default', 'io_floor', 'cpu_ms_per_msg', 'cpu_baseline_vs_io_floor');
  ratio('rcpt10', 'base_rcpt10', 'msgs_per_s', 'rcpt10_vs_baseline');
  ratio('base_rcpt10', 'io_floor_rcpt10', 'msgs_per_s', 'base_rcpt10_vs_io_floor_rcpt10');
  ratio('base_rcpt10', 'io_floor_rcpt10', 'cpu_ms_per_msg', 'cpu_base_rcpt10_vs_io_floor_rcpt10');
  return out;
}

async function writeResults(body: {
  variants: Record<string, unknown>;
  ratios: Record<string, number>;
  sink: string;
}): Promise<void> {
  const machine = {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    sink: body.sink,
    date: new Date().toISOString(),
  };
  const settings = {
    mode,
    mails,
    warmup_mails: warmupMails,
    runs,
    latencies_ms: latencies,
    mail_bytes: 10 * 1024,
  };
  const json = `${JSON.stringify({ machine, settings, variants: body.variants, ratios: body.ratios }, null, 2)}\n`;
  const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
  const targets = values.out
    ? [values.out]
    : [
        join(resultsDir, `${machine.date.replaceAll(':', '-')}-${mode}.json`),
        join(resultsDir, 'latest.json'),
      ];
  for (const target of targets) {
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, json);
  }
  process.stdout.write(json);
  log(`results: ${targets.join(', ')}`);
}

await main();
