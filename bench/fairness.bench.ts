/**
 * Fairness between domains (`node --import tsx bench/fairness.bench.ts`, after `npm run build`): one domain has
 * 5,000 mails queued, the mail server takes 20 ms per DATA, and single mails to another domain arrive while the
 * backlog drains. Reported per run: how long each single mail took from enqueue to the mail server (median and
 * worst of the probes; the first mail apart, since its thread loads the pipeline with it), and the backlog's
 * delivery rate meanwhile.
 *
 *   --variant label[:SETTING=value;SETTING=value][@entry]   repeatable, e.g.
 *       --variant before@/tmp/base/dist/unified-worker.js --variant thread-per-domain --variant one-thread:POLLER_THREADS=1
 *   --backlog N (5000)  --probes N (5)  --data-delay-ms N (20)  --runs R (1, variants alternating)  --out FILE
 *
 * The mail server is the test suite's smtp-server sink (in this process) answering every DATA after the delay; the
 * AWS emulators answer at once, so the mail server is the bottleneck, as in the scenario.
 */
import { parseArgs } from 'node:util';
import { DeleteQueueCommand } from '@aws-sdk/client-sqs';
import { nameFromTemplate } from '../src/aws/resources.ts';
import { createDomainQueue, type TestStack } from '../test/harness/emulators.ts';
import { spawnDaemon, type DaemonProcess } from '../test/harness/daemon-process.ts';
import { startSmtpSink, type SmtpSink } from '../test/harness/smtp-sink.ts';
import { preload } from './lib/preload.ts';
import { parseVariantSpec, runRounds, writeBenchResults } from './lib/rounds.ts';
import { median, round } from './lib/stats.ts';

interface Variant {
  label: string;
  env: Record<string, string>;
  entry?: string;
}

interface FairnessRun {
  label: string;
  env: Record<string, string>;
  /**
   * The quiet domain's first mail, ms: its thread loads the pipeline with it (lazy loading), so it is reported
   * apart from the probes.
   */
  first_mail_ms: number;
  /** Enqueue to delivery of each further single mail to the quiet domain, ms. */
  probe_ms: number[];
  probe_median_ms: number;
  probe_max_ms: number;
  /** The busy domain's deliveries per second while the probes ran. */
  backlog_msgs_per_s: number;
  /** Busy mails still queued when the last probe was delivered (the backlog never ran dry). */
  backlog_left: number;
}

let runCounter = 0;
let seq = 1_000_000;

function parseVariant(text: string): Variant {
  const { label, env, entry } = parseVariantSpec(text, 0);
  if (!label) throw new Error(`bad --variant ${text}`);
  return { label, env, ...(entry && { entry }) };
}

/** Bench mails carry `X-Bench-Seq`; the sink keeps the raw bytes. */
function seqOf(raw: Buffer): number {
  return Number(/^X-Bench-Seq: (\d+)/im.exec(raw.subarray(0, 4096).toString('latin1'))?.[1] ?? -1);
}

async function load(stack: TestStack, domain: string, queueUrl: string, mails: number): Promise<number[]> {
  const bucket = nameFromTemplate('{domain}-emails', domain);
  const chunk = 500;
  const seqs: number[] = [];
  const work: Array<Promise<void>> = [];
  for (let start = 0; start < mails; start += chunk) {
    const count = Math.min(chunk, mails - start);
    const firstSeq = seq;
    seq += count;
    for (let i = 0; i < count; i++) seqs.push(firstSeq + i);
    work.push(
      preload(stack, {
        domain,
        queueUrl,
        bucket,
        mails: count,
        mailBytes: 10 * 1024,
        recipientsPerMail: 1,
        firstSeq,
      }),
    );
  }
  await Promise.all(work);
  return seqs;
}

async function until(what: string, predicate: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function measure(
  stack: TestStack,
  variant: Variant,
  options: { backlog: number; probes: number; dataDelayMs: number },
): Promise<FairnessRun> {
  const run = ++runCounter;
  const busy = `busy${run}.fair.test`;
  const quiet = `quiet${run}.fair.test`;
  const busyQueue = (await createDomainQueue(stack.sqs, busy, { visibilityTimeout: 300 })).queueUrl;
  const quietQueue = (await createDomainQueue(stack.sqs, quiet, { visibilityTimeout: 300 })).queueUrl;
  const busySeqs = new Set(await load(stack, busy, busyQueue, options.backlog));
  const sink: SmtpSink = await startSmtpSink({ dataDelayMs: options.dataDelayMs });
  let daemon: DaemonProcess | undefined;
  // What arrived, read once per message: the sink keeps every mail's bytes.
  const arrivedAt = new Map<number, number>();
  let scanned = 0;
  let busyDelivered = 0;
  const delivered = () => {
    for (; scanned < sink.messages.length; scanned++) {
      const message = sink.messages[scanned]!;
      const number = seqOf(message.raw);
      arrivedAt.set(number, message.receivedAt);
      if (busySeqs.has(number)) busyDelivered++;
    }
    return busyDelivered;
  };
  try {
    daemon = await spawnDaemon({
      domains: [busy, quiet],
      startTimeoutMs: 60_000,
      ...(variant.entry && { entry: variant.entry }),
      env: {
        ...stack.env,
        SMTP_HOST: '127.0.0.1',
        SMTP_PORT: String(sink.port),
        INTERNAL_SMTP_PORT: String(sink.port),
        WAIT_TIME_SECONDS: '20',
        LOG_LEVEL: 'info',
        ...variant.env,
      },
    });
    await until('the backlog to flow', () => delivered() >= 300, 120_000);
    const probeMs: number[] = [];
    const busyAtFirst = { count: delivered(), at: Date.now() };
    for (let p = 0; p <= options.probes; p++) {
      const [probe] = await load(stack, quiet, quietQueue, 1);
      const enqueuedAt = Date.now();
      await until(`probe ${p}`, () => delivered() >= 0 && arrivedAt.has(probe!), 120_000);
      probeMs.push(arrivedAt.get(probe!)! - enqueuedAt);
      const next = delivered() + 200;
      await until('200 more of the backlog', () => delivered() >= next, 120_000);
    }
    const busyAtLast = { count: delivered(), at: Date.now() };
    return {
      label: variant.label,
      env: variant.env,
      first_mail_ms: probeMs[0]!,
      probe_ms: probeMs.slice(1),
      probe_median_ms: median(probeMs.slice(1)),
      probe_max_ms: Math.max(...probeMs.slice(1)),
      backlog_msgs_per_s: round(
        ((busyAtLast.count - busyAtFirst.count) * 1000) / Math.max(1, busyAtLast.at - busyAtFirst.at),
      ),
      backlog_left: options.backlog - busyAtLast.count,
    };
  } catch (error) {
    throw new Error(`${variant.label}: ${(error as Error).message}\n${daemon?.describe(10) ?? ''}`, {
      cause: error,
    });
  } finally {
    await daemon?.stop();
    await sink.stop();
    for (const QueueUrl of [busyQueue, quietQueue])
      await stack.sqs.send(new DeleteQueueCommand({ QueueUrl })).catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      variant: { type: 'string', multiple: true },
      backlog: { type: 'string', default: '5000' },
      probes: { type: 'string', default: '5' },
      'data-delay-ms': { type: 'string', default: '20' },
      runs: { type: 'string', default: '1' },
      out: { type: 'string' },
    },
  });
  const variants = (values.variant ?? ['default']).map(parseVariant);
  const options = {
    backlog: Number(values.backlog),
    probes: Number(values.probes),
    dataDelayMs: Number(values['data-delay-ms']),
  };
  const runs = await runRounds(Number(values.runs), variants, (stack, variant) =>
    measure(stack, variant, options),
  );
  await writeBenchResults('fairness', values.out, { options, runs });
}

await main();
