/**
 * End-to-end throughput of the BUILT daemon (worker threads, shared pool) against the emulators and an
 * smtp-server sink, which — like a real MTA — makes every new connection wait ~100 ms for its greeting.
 *
 * Each round enqueues N mails on a fresh queue before the daemon starts, then measures from the daemon's
 * "started" line until the sink has them all. Two settings per round, alternating so machine noise hits both:
 *   pooled:     SMTP_MAX_CONNECTIONS=5, MESSAGE_CONCURRENCY=10 (the defaults)
 *   sequential: SMTP_MAX_CONNECTIONS=2 (one mailbox connection), MESSAGE_CONCURRENCY=1
 * Prints per-round msgs/s, the per-round ratio, medians, and the daemon's peak RSS.
 *
 * Run: npm run build && node --import tsx bench/throughput.bench.ts [mails=300] [rounds=3]
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { spawnDaemon, type DaemonProcess } from '../test/harness/daemon-process.ts';
import { createDomainQueue, startStack } from '../test/harness/emulators.ts';
import { buildMime, putMail } from '../test/harness/ses-events.ts';
import { startSmtpSink } from '../test/harness/smtp-sink.ts';

const MAILS = Number(process.argv[2] ?? 300);
const ROUNDS = Number(process.argv[3] ?? 3);

const SETTINGS = {
  pooled: { SMTP_MAX_CONNECTIONS: '5', MESSAGE_CONCURRENCY: '10' },
  sequential: { SMTP_MAX_CONNECTIONS: '2', MESSAGE_CONCURRENCY: '1' },
} as const;
type Mode = keyof typeof SETTINGS;

function peakRssMb(daemon: DaemonProcess): number {
  const status = readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

const stack = await startStack({ tables: true });
const sink = await startSmtpSink();
const raw = await buildMime({
  from: 'bench@external.test',
  to: 'user@bench.test',
  subject: 'throughput',
  text: 'x'.repeat(4000),
});
const results: Record<Mode, number[]> = { pooled: [], sequential: [] };
const rss: Record<Mode, number[]> = { pooled: [], sequential: [] };

try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of (round % 2 === 0 ? ['pooled', 'sequential'] : ['sequential', 'pooled']) as Mode[]) {
      const domain = `r${round}-${mode}.bench.test`;
      const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 120 });
      for (let i = 0; i < MAILS; i++) {
        await putMail(stack, {
          domain,
          raw,
          recipients: [`user@${domain}`],
          source: 'bench@external.test',
          shape: 'sns-s3',
          queueUrl,
        });
      }
      sink.clear();
      const daemon = await spawnDaemon({
        domains: [domain],
        env: {
          ...stack.env,
          SMTP_HOST: '127.0.0.1',
          SMTP_PORT: String(sink.port),
          INTERNAL_SMTP_PORT: String(sink.port),
          ...SETTINGS[mode],
        },
      });
      const started = performance.now();
      await sink.waitFor(MAILS, 300_000);
      const seconds = (performance.now() - started) / 1000;
      results[mode].push(MAILS / seconds);
      rss[mode].push(peakRssMb(daemon));
      daemon.kill('SIGTERM');
      await daemon.exited;
      process.stdout.write(`round ${round + 1} ${mode}: ${(MAILS / seconds).toFixed(0)} msgs/s\n`);
    }
  }
} finally {
  await sink.stop();
  await stack.stop();
}

console.log(`\n| round | pooled msgs/s | sequential msgs/s | ratio |\n|---|---|---|---|`);
for (let i = 0; i < ROUNDS; i++) {
  const p = results.pooled[i] as number;
  const s = results.sequential[i] as number;
  console.log(`| ${i + 1} | ${p.toFixed(0)} | ${s.toFixed(0)} | ${(p / s).toFixed(1)}× |`);
}
const ratios = results.pooled.map((p, i) => p / (results.sequential[i] as number));
console.log(
  `| median | ${median(results.pooled).toFixed(0)} | ${median(results.sequential).toFixed(0)} | ${median(ratios).toFixed(1)}× |`,
);
console.log(
  `\npeak RSS of the daemon (MB): pooled ${rss.pooled.join(', ')}; sequential ${rss.sequential.join(', ')}`,
);
