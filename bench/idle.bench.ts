/**
 * Idle cost of the built daemon with many domains: memory and CPU from its start, and the SQS requests each domain's
 * long polls cost, for thread layouts side by side (`node --import tsx bench/idle.bench.ts`, after `npm run build`).
 *
 *   --variant label:domains[:SETTING=value;SETTING=value][@entry]   repeatable; e.g.
 *       --variant thread-per-domain:100:POLLER_THREADS=100 --variant shared:1000:POLLER_THREADS=8
 *       --variant before:100@dist-base/unified-worker.js   (another build of the daemon, for before/after tables)
 *   --seconds S   how long each run lasts (default 180); --runs R   rounds, variants alternating (default 1)
 *   --out FILE    results JSON (default bench/results/<time>-idle.json)
 *   --node-arg A  repeatable; a Node option for the daemon, e.g. --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/p
 *   --spread S    hold each domain's first long poll up to S seconds (random), so the polls end out of step as
 *                 they do after a day of mail (default 0: as started, in a few bursts); at most 9 (the poll's
 *                 deadline is its wait plus 10 s)
 *
 * Each run: fresh queues (each with a dead-letter queue, as deployed), the daemon started with the shipped defaults
 * and a 20 s long poll, sampled every second from /proc (RSS, CPU of all threads), /ready polled until it answers
 * 200. Reported per run: the peak RSS (VmHWM), RSS at 60 s / 120 s / the end, CPU as a share of one core in each
 * minute, and the ReceiveMessage requests per domain in the last minute (a counting proxy in front of the SQS
 * emulator), which with a 20 s long poll is 3 per idle domain.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createDomainQueue, type TestStack } from '../test/harness/emulators.ts';
import { spawnDaemon, type DaemonProcess } from '../test/harness/daemon-process.ts';
import { startSmtpSink } from '../test/harness/smtp-sink.ts';
import { cpuMs, peakRssMb, rssMb } from './lib/proc.ts';
import { startSqsCounter } from './lib/sqs-counter.ts';
import { parseVariantSpec, runRounds, writeBenchResults } from './lib/rounds.ts';
import { median, round } from './lib/stats.ts';

interface Variant {
  label: string;
  domains: number;
  env: Record<string, string>;
  entry?: string;
}

export interface IdleRun {
  label: string;
  domains: number;
  env: Record<string, string>;
  ready_s: number | null;
  peak_rss_mb: number;
  rss_mb_at: Record<string, number>;
  /** CPU of the whole process as a percentage of one core, per minute since the start ("0-60", "60-120", ...). */
  cpu_percent_of_core: Record<string, number>;
  cpu_percent_every_10s: number[];
  os_threads: number;
  /** ReceiveMessage requests per domain in the last minute: min / median / max over the domains. */
  receives_per_domain_last_minute: { min: number; median: number; max: number };
  /** Every SQS request of the last minute by action. */
  sqs_requests_last_minute: Record<string, number>;
}

function parseVariant(text: string): Variant {
  const { label, fields, env, entry } = parseVariantSpec(text, 1);
  const domains = Number(fields[0]);
  if (!label || !domains) throw new Error(`bad --variant ${text} (label:domains[:K=V;K=V][@entry])`);
  return { label, domains, env, ...(entry && { entry }) };
}

function osThreads(pid: number): number {
  return Number(/^Threads:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

let runCounter = 0;

async function measure(
  stack: TestStack,
  variant: Variant,
  seconds: number,
  execArgv: readonly string[],
  spreadSeconds: number,
): Promise<IdleRun> {
  const run = ++runCounter;
  const domains = Array.from({ length: variant.domains }, (_, i) => `i${run}d${i}.idle.test`);
  for (let i = 0; i < domains.length; i += 50) {
    await Promise.all(
      domains.slice(i, i + 50).map((domain) => createDomainQueue(stack.sqs, domain, { withDlq: true })),
    );
  }
  const counter = await startSqsCounter(stack.endpoints.sqs, spreadSeconds * 1000);
  const sink = await startSmtpSink();
  let daemon: DaemonProcess | undefined;
  try {
    const startedAt = Date.now();
    daemon = await spawnDaemon({
      domains,
      startTimeoutMs: 120_000,
      execArgv,
      ...(variant.entry && { entry: variant.entry }),
      env: {
        ...stack.env,
        AWS_ENDPOINT_URL_SQS: counter.endpoint,
        AWS_ENDPOINT_URL_S3: counter.endpoint,
        SMTP_HOST: '127.0.0.1',
        SMTP_PORT: String(sink.port),
        INTERNAL_SMTP_PORT: String(sink.port),
        WAIT_TIME_SECONDS: '20',
        LOG_LEVEL: 'info',
        ...variant.env,
      },
    });
    const pid = daemon.pid;
    const cpuAt = new Map<number, number>();
    const rssAt = new Map<number, number>();
    let readyAt: number | undefined;
    let threads = 0;
    for (let second = 1; second <= seconds; second++) {
      await new Promise((r) => setTimeout(r, Math.max(0, startedAt + second * 1000 - Date.now())));
      cpuAt.set(second, cpuMs(pid));
      rssAt.set(second, rssMb(pid));
      threads = Math.max(threads, osThreads(pid));
      if (second === seconds - 60) counter.reset();
      if (readyAt === undefined) {
        const answer = await daemon.request('GET', '/ready').catch(() => undefined);
        if (answer?.status === 200) readyAt = Date.now();
      }
    }
    const cpuPercent: Record<string, number> = {};
    for (let from = 0; from + 60 <= seconds; from += 60) {
      const used = (cpuAt.get(from + 60) ?? 0) - (from === 0 ? 0 : (cpuAt.get(from) ?? 0));
      cpuPercent[`${from}-${from + 60}`] = round((used / 60_000) * 100, 2);
    }
    // Ten-second steps show what a per-minute figure hides: a burst (a gauge read, a major GC) against a steady cost.
    const cpuEvery10s: number[] = [];
    for (let to = 10; to <= seconds; to += 10) {
      const used = (cpuAt.get(to) ?? 0) - (cpuAt.get(to - 10) ?? 0);
      cpuEvery10s.push(round((used / 10_000) * 100, 1));
    }
    const receives = counter.receivesByQueue();
    const perDomain = domains.map((d) => receives.get(`${d.replaceAll('.', '-')}-queue`) ?? 0);
    const peak = peakRssMb(pid);
    return {
      label: variant.label,
      domains: variant.domains,
      env: variant.env,
      ready_s: readyAt === undefined ? null : round((readyAt - startedAt) / 1000, 1),
      peak_rss_mb: round(peak, 0),
      rss_mb_at: Object.fromEntries(
        [60, 120, seconds].filter((s) => rssAt.has(s)).map((s) => [`${s}s`, round(rssAt.get(s)!, 0)]),
      ),
      cpu_percent_of_core: cpuPercent,
      cpu_percent_every_10s: cpuEvery10s,
      os_threads: threads,
      receives_per_domain_last_minute: {
        min: Math.min(...perDomain),
        median: median(perDomain),
        max: Math.max(...perDomain),
      },
      sqs_requests_last_minute: counter.byAction(),
    };
  } catch (error) {
    throw new Error(`${variant.label}: ${(error as Error).message}\n${daemon?.describe(20) ?? ''}`, {
      cause: error,
    });
  } finally {
    // A profiler writes its files only on a clean exit.
    if (daemon && execArgv.length > 0) {
      daemon.kill('SIGTERM');
      await Promise.race([daemon.exited, new Promise((r) => setTimeout(r, 30_000))]);
    }
    await daemon?.stop();
    await sink.stop();
    await counter.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      variant: { type: 'string', multiple: true },
      seconds: { type: 'string', default: '180' },
      runs: { type: 'string', default: '1' },
      out: { type: 'string' },
      'node-arg': { type: 'string', multiple: true },
      spread: { type: 'string', default: '0' },
    },
  });
  const variants = (values.variant ?? ['default:100']).map(parseVariant);
  const seconds = Number(values.seconds);
  const spreadSeconds = Number(values.spread);
  if (!(spreadSeconds >= 0 && spreadSeconds <= 9)) throw new Error('--spread must be 0..9 seconds');
  const runs = await runRounds(Number(values.runs), variants, (stack, variant) =>
    measure(stack, variant, seconds, values['node-arg'] ?? [], spreadSeconds),
  );
  await writeBenchResults('idle', values.out, { seconds, spread_s: spreadSeconds, runs });
}

await main();
