/**
 * Memory and time of large mails through the BUILT daemon (`npm run build` first), for BENCHMARKS.md:
 *
 * - one 40 MB mail (SES's inbound maximum): growth of the daemon's peak RSS (VmHWM from /proc/<pid>/status, all
 *   threads) over its size, and the time from the SQS notification to the SMTP sink having it;
 * - three 20 MB mails at once with IN_FLIGHT_BYTES=45MB: the same, plus how far apart they arrive (the budget lets
 *   two in at a time).
 *
 * Each run uses a fresh daemon, warmed up with one small mail first (module loading and JIT are not the mail's
 * cost). Run: `node --import tsx bench/large-mail.bench.ts [--runs 3] [--quick] [--entry dist-copy/unified-worker.js]`
 * (`--quick`: the 40 MB scenario only; `--entry`: measure another build, e.g. a patched copy of dist/).
 */
import { parseArgs } from 'node:util';
import { createDomainQueue, startStack, waitUntil, type TestStack } from '../test/harness/emulators.ts';
import { DAEMON_ENTRY, killAllDaemons, spawnDaemon } from '../test/harness/daemon-process.ts';
import { bigMail, countBySeq, putLargeMail, rawMail } from '../test/harness/faults.ts';
import { putMail } from '../test/harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../test/harness/smtp-sink.ts';

const MiB = 1024 * 1024;
const SOURCE = 'sender@external.test';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    entry: { type: 'string', default: DAEMON_ENTRY },
    quick: { type: 'boolean', default: false },
  },
});
const runs = Math.max(1, Number(values.runs));
const entry = values.entry ?? DAEMON_ENTRY;

interface Sample {
  mailBytes: number;
  peakBefore: number;
  peakAfter: number;
  deliverMs: number;
  spreadMs?: number;
}

let domainCounter = 0;

async function runOnce(
  stack: TestStack,
  sink: SmtpSink,
  sizes: readonly number[],
  env: Record<string, string>,
): Promise<Sample> {
  const domain = `bench${++domainCounter}.test`;
  const to = `user@${domain}`;
  await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 60 });
  const daemon = await spawnDaemon({
    domains: [domain],
    entry,
    env: {
      ...stack.env,
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(sink.port),
      INTERNAL_SMTP_PORT: String(sink.port),
      WAIT_TIME_SECONDS: '1',
      // spawnDaemon waits for the info-level "unified-worker started" line.
      LOG_LEVEL: 'info',
      ...env,
    },
  });
  try {
    const warm = `warm-${domain}`;
    await putMail(stack, {
      domain,
      raw: rawMail(warm, to),
      recipients: [to],
      source: SOURCE,
      shape: 'sns-s3',
    });
    await waitUntil(() => countBySeq(sink.messages).has(warm), 20_000, 'warm-up mail', 20);
    const peakBefore = daemon.peakRss();
    const seqs = sizes.map((_, i) => `big-${domain}-${i}`);
    const raws = sizes.map((size, i) => bigMail(seqs[i] ?? '', to, size));
    // Timed from the notifications: the upload to the emulator is not the worker's time. With several mails the
    // clock starts when the last notification is sent (the others may already be in progress).
    await Promise.all(
      raws.map((raw) => putLargeMail(stack, { domain, raw, recipients: [to], source: SOURCE })),
    );
    const started = Date.now();
    await waitUntil(() => seqs.every((s) => countBySeq(sink.messages).has(s)), 120_000, 'large mails', 20);
    const deliverMs = Date.now() - started;
    const times = sink.messages
      .filter((m) => seqs.some((s) => m.raw.includes(s)))
      .map((m) => m.receivedAt)
      .sort((a, b) => a - b);
    return {
      mailBytes: raws.reduce((sum, r) => sum + r.length, 0),
      peakBefore,
      peakAfter: daemon.peakRss(),
      deliverMs,
      ...(times.length > 1 && { spreadMs: (times.at(-1) ?? 0) - (times[0] ?? 0) }),
    };
  } finally {
    await daemon.stop();
    sink.clear();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

interface Scenario {
  name: string;
  sizes: number[];
  env: Record<string, string>;
  /** The size growth is compared with (one mail). */
  perMail: number;
  dataDelayMs?: number;
}

const SCENARIOS: Scenario[] = [
  { name: '1 x 40 MB', sizes: [40 * MiB - 64 * 1024], env: {}, perMail: 40 * MiB },
  {
    name: '3 x 20 MB, IN_FLIGHT_BYTES=45MB',
    sizes: [20 * MiB, 20 * MiB, 20 * MiB],
    env: { IN_FLIGHT_BYTES: String(45 * MiB) },
    perMail: 20 * MiB,
  },
  {
    name: '3 x 20 MB, IN_FLIGHT_BYTES=45MB, DATA delay 2.5 s',
    sizes: [20 * MiB, 20 * MiB, 20 * MiB],
    env: { IN_FLIGHT_BYTES: String(45 * MiB) },
    perMail: 20 * MiB,
    dataDelayMs: 2500,
  },
];

async function main(): Promise<void> {
  const stack = await startStack({ tables: true });
  const sink = await startSmtpSink({ size: 64 * MiB });
  const scenarios = values.quick ? SCENARIOS.slice(0, 1) : SCENARIOS;
  const rows: string[] = [];
  try {
    for (const scenario of scenarios) {
      sink.setDataDelay(scenario.dataDelayMs ?? 0);
      const samples: Sample[] = [];
      for (let i = 0; i < runs; i++) samples.push(await runOnce(stack, sink, scenario.sizes, scenario.env));
      const growth = samples.map((s) => s.peakAfter - s.peakBefore);
      const ratios = samples.map((s) => (s.peakAfter - s.peakBefore) / scenario.perMail);
      const spreads = samples.flatMap((s) => (s.spreadMs === undefined ? [] : [s.spreadMs]));
      rows.push(
        `| ${scenario.name} | ${(median(samples.map((s) => s.peakBefore)) / MiB).toFixed(0)} MiB | ` +
          `${(median(growth) / MiB).toFixed(0)} MiB (max ${(Math.max(...growth) / MiB).toFixed(0)}) | ` +
          `${median(ratios).toFixed(2)}x (max ${Math.max(...ratios).toFixed(2)}x) | ` +
          `${median(samples.map((s) => s.deliverMs))} ms | ${spreads.length > 0 ? `${median(spreads)} ms` : '-'} |`,
      );
      process.stderr.write(`${rows.at(-1)}\n`);
    }
  } finally {
    await killAllDaemons();
    await sink.stop();
    await stack.stop();
  }
  console.log(`\nLarge mails through the built daemon (${runs} run(s) each, median; entry ${entry})\n`);
  console.log(
    '| scenario | peak RSS before | peak RSS growth | growth / one mail | notification to delivered | first to last arrival |',
  );
  console.log('|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
}

await main();
