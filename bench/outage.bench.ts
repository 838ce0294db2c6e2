/**
 * Field figures of the BUILT daemon (`npm run build` first), for BENCHMARKS.md:
 *
 * - recovery: the mail server goes down, 20 mails arrive, it stays down for `--down-seconds` (10), then comes back:
 *   how long after its return the last of the 20 is in the mailbox, and the largest receive count a mail had;
 * - shutdown: an idle daemon (nothing in flight, its long poll open) gets SIGTERM: how long until it has exited.
 *
 * Each run uses a fresh daemon. `--entry` (repeatable) measures other builds side by side, run by run (e.g. an older
 * commit's dist/ against this one's).
 * Run: `node --import tsx bench/outage.bench.ts [--runs 3] [--entry a/unified-worker.js --entry b/...] [--down-seconds 10]`
 */
import { parseArgs } from 'node:util';
import { createDomainQueue, startStack, waitUntil, type TestStack } from '../test/harness/emulators.ts';
import { DAEMON_ENTRY, killAllDaemons, spawnDaemon, waitReady } from '../test/harness/daemon-process.ts';
import { countBySeq, rawMail } from '../test/harness/faults.ts';
import { putMail } from '../test/harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../test/harness/smtp-sink.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    entry: { type: 'string', multiple: true },
    'down-seconds': { type: 'string', default: '10' },
  },
});
const runs = Math.max(1, Number(values.runs));
/** Builds measured side by side, run by run (the first is this checkout's dist/ unless named). */
const entries = values.entry ?? [DAEMON_ENTRY];
const downMs = Number(values['down-seconds']) * 1000;
const MAILS = 20;

let counter = 0;

async function daemonFor(entry: string, stack: TestStack, sink: SmtpSink, env: Record<string, string> = {}) {
  const domain = `outage${++counter}.test`;
  await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 30, withDlq: true, maxReceiveCount: 10 });
  const daemon = await spawnDaemon({
    domains: [domain],
    entry,
    env: {
      ...stack.env,
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(sink.port),
      INTERNAL_SMTP_PORT: String(sink.port),
      HEALTH_PORT: '0',
      METRICS_PORT: '0',
      ...env,
    },
  });
  await waitReady(daemon);
  return { daemon, domain };
}

async function recovery(
  entry: string,
  stack: TestStack,
  sink: SmtpSink,
): Promise<{ lastAfterUpMs: number; maxReceives: number }> {
  const { daemon, domain } = await daemonFor(entry, stack, sink);
  try {
    sink.clear();
    await sink.down();
    const to = `user@${domain}`;
    const seqs = Array.from({ length: MAILS }, (_, i) => `${domain}-${i}`);
    await Promise.all(
      seqs.map((seq) =>
        putMail(stack, {
          domain,
          raw: rawMail(seq, to),
          recipients: [to],
          source: 'a@external.test',
          shape: 'sns-s3',
        }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, downMs));
    await sink.up();
    const upAt = Date.now();
    await waitUntil(() => countBySeq(sink.messages).size >= MAILS, 120_000, 'all delivered', 20);
    const lastAfterUpMs = Date.now() - upAt;
    const delivered = () =>
      daemon.logs.filter((l) => typeof l.disposition === 'string' && l.status === 'delivered');
    await waitUntil(() => delivered().length >= MAILS, 10_000, 'the outcome lines');
    const counts = delivered().map((l) => Number(l.receiveCount));
    return { lastAfterUpMs, maxReceives: Math.max(0, ...counts) };
  } finally {
    await daemon.stop();
  }
}

async function shutdown(entry: string, stack: TestStack, sink: SmtpSink): Promise<number> {
  const { daemon } = await daemonFor(entry, stack, sink, { WAIT_TIME_SECONDS: '20' });
  // Its long poll is open by now: /ready says every domain polled once.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const signalledAt = Date.now();
  daemon.kill('SIGTERM');
  await daemon.exited;
  return Date.now() - signalledAt;
}

async function main(): Promise<void> {
  const stack = await startStack({ tables: true });
  const sink = await startSmtpSink();
  try {
    const samples = entries.map(() => ({
      recoveries: [] as Array<{ lastAfterUpMs: number; maxReceives: number }>,
      shutdowns: [] as number[],
    }));
    for (let run = 0; run < runs; run++) {
      for (const [i, entry] of entries.entries()) {
        samples[i]!.recoveries.push(await recovery(entry, stack, sink));
        samples[i]!.shutdowns.push(await shutdown(entry, stack, sink));
      }
    }
    const result = entries.map((entry, i) => {
      const { recoveries, shutdowns } = samples[i]!;
      return {
        entry,
        downSeconds: downMs / 1000,
        mails: MAILS,
        recoveryLastAfterUpMs: recoveries.map((r) => r.lastAfterUpMs),
        recoveryMedianMs: median(recoveries.map((r) => r.lastAfterUpMs)),
        maxReceiveCount: Math.max(...recoveries.map((r) => r.maxReceives)),
        shutdownMs: shutdowns,
        shutdownMedianMs: median(shutdowns),
      };
    });
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await killAllDaemons();
    await sink.stop();
    await stack.stop();
  }
}

await main();
