/**
 * One measured run: fresh queues, N preloaded mails, one consumer started, timed from the first to the last
 * delivery at the sink (start-up excluded), stopped once every queue is empty.
 */
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { createDomainQueue, type TestStack } from '../../test/harness/emulators.ts';
import { bigMail, putLargeMail } from '../../test/harness/faults.ts';
import { startSesQuota } from '../../test/harness/ses-quota.ts';
import { startSesSink } from './ses-sink.ts';
import { nameFromTemplate } from '../../src/aws/resources.ts';
import {
  startConsumer,
  type ConsumerInput,
  type ConsumerKind,
  type Endpoints,
  type RunningConsumer,
} from './consumers.ts';
import { preload } from './preload.ts';
import { cpuMs, peakRssMb, rssMb } from './proc.ts';
import { startBenchSink, type BenchSink } from './sink.ts';
import { percentile, round } from './stats.ts';

export interface ThroughputSpec {
  kind: ConsumerKind;
  mails: number;
  /**
   * Mails delivered before the measurement starts, by the same process: a fresh process compiles its hot code
   * and grows its heap during its first few hundred mails, which is start-up, not the cost of a mail.
   */
  warmupMails: number;
  mailBytes: number;
  recipientsPerMail: number;
  domains: number;
  /** Daemon settings (ignored by the yardsticks). */
  env?: Record<string, string>;
  cpuProfileDir?: string;
  /** Another build of the daemon to run (`--baseline`). */
  entry?: string;
}

export interface RunResult {
  msgs_per_s: number;
  p50_ms: number;
  p99_ms: number;
  cpu_ms_per_msg: number;
  peak_rss_mb: number;
  delivered: number;
  duplicates: number;
  sink: BenchSink['kind'];
}

let runCounter = 0;
let seqCounter = 0;

/** Preloads `mails` of `mailBytes` into `domain`'s bucket and queue, numbered on from every earlier preload. */
async function preloadDomain(
  stack: TestStack,
  domain: string,
  queueUrl: string,
  mails: number,
  shape: { mailBytes: number; recipientsPerMail: number } = { mailBytes: 10 * 1024, recipientsPerMail: 1 },
): Promise<void> {
  const firstSeq = seqCounter;
  seqCounter += mails;
  await preload(stack, {
    domain,
    queueUrl,
    bucket: nameFromTemplate('{domain}-emails', domain),
    mails,
    firstSeq,
    ...shape,
  });
}

type ConsumerSpec = Omit<ConsumerInput, 'baseEnv' | 'smtpPort' | 'endpoints'> & { endpoints?: Endpoints };

/** Starts a sink and a consumer delivering to it, runs `measure`, and stops both whatever happens. */
async function withConsumer<T>(
  stack: TestStack,
  endpoints: Endpoints,
  spec: ConsumerSpec,
  measure: (consumer: RunningConsumer, sink: BenchSink) => Promise<T>,
): Promise<T> {
  const sink = await startBenchSink();
  try {
    const consumer = await startConsumer({
      ...spec,
      endpoints: spec.endpoints ?? endpoints,
      baseEnv: stack.env,
      smtpPort: sink.port,
    });
    try {
      return await measure(consumer, sink);
    } finally {
      await consumer.kill();
    }
  } finally {
    await sink.stop();
  }
}

export async function measureThroughput(
  stack: TestStack,
  endpoints: Endpoints,
  spec: ThroughputSpec,
): Promise<RunResult> {
  const run = ++runCounter;
  const domains = Array.from({ length: spec.domains }, (_, i) => `r${run}d${i}.bench.test`);
  const queueUrls: string[] = [];
  const perDomain = Math.ceil((spec.mails + spec.warmupMails) / spec.domains);
  for (const domain of domains) {
    const { queueUrl } = await createDomainQueue(stack.sqs, domain);
    queueUrls.push(queueUrl);
    await preloadDomain(stack, domain, queueUrl, perDomain, {
      mailBytes: spec.mailBytes,
      recipientsPerMail: spec.recipientsPerMail,
    });
  }
  const expected = perDomain * spec.domains;
  const warmup = Math.min(spec.warmupMails, expected - 2);
  return withConsumer(
    stack,
    endpoints,
    {
      kind: spec.kind,
      domains,
      queueUrls,
      ...(spec.env && { env: spec.env }),
      ...(spec.cpuProfileDir !== undefined && { cpuProfileDir: spec.cpuProfileDir }),
      ...(spec.entry !== undefined && { entry: spec.entry }),
    },
    async (consumer, sink) => {
      try {
        const { cpuAtStart, countAtStart, cpuAtLast } = await waitForDeliveries(
          sink,
          consumer.pid,
          Math.max(1, warmup),
          expected,
        );
        await waitForEmptyQueues(stack, queueUrls);
        const peak = peakRssMb(consumer.pid);
        const deliveries = (await sink.deliveries()).sort((a, b) => a.deliveredAt - b.deliveredAt);
        const measured = deliveries.slice(Math.max(0, warmup - 1));
        const first = measured[0]?.deliveredAt ?? 0;
        const last = measured[measured.length - 1]?.deliveredAt ?? 0;
        const measuredSince = warmup > 0 ? first : consumer.startedAt;
        const latencies = measured.map((d) => d.deliveredAt - Math.max(d.enqueuedAt, measuredSince));
        const seqs = new Set(deliveries.map((d) => d.seq));
        return {
          msgs_per_s: round(((measured.length - 1) * 1000) / Math.max(1, last - first)),
          p50_ms: round(percentile(latencies, 50), 0),
          p99_ms: round(percentile(latencies, 99), 0),
          cpu_ms_per_msg: round((cpuAtLast - cpuAtStart) / Math.max(1, expected - countAtStart), 2),
          peak_rss_mb: round(peak, 0),
          delivered: seqs.size,
          duplicates: deliveries.length - seqs.size,
          sink: sink.kind,
        };
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${consumer.describe()}`, { cause: error });
      }
    },
  );
}

/** Samples the consumer's CPU when `start` mails have arrived and when all `expected` have. */
async function waitForDeliveries(
  sink: BenchSink,
  pid: number,
  start: number,
  expected: number,
): Promise<{ cpuAtStart: number; countAtStart: number; cpuAtLast: number }> {
  const deadline = Date.now() + 15 * 60_000;
  let cpuAtStart: number | undefined;
  let countAtStart = 0;
  for (;;) {
    const count = await sink.count();
    if (cpuAtStart === undefined && count >= start) {
      cpuAtStart = cpuMs(pid);
      countAtStart = count;
    }
    if (count >= expected) return { cpuAtStart: cpuAtStart ?? 0, countAtStart, cpuAtLast: cpuMs(pid) };
    if (Date.now() > deadline) throw new Error(`only ${count} of ${expected} mails arrived`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function waitForEmptyQueues(stack: TestStack, queueUrls: readonly string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const counts = await Promise.all(
      queueUrls.map(async (QueueUrl) => {
        const { Attributes = {} } = await stack.sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl,
            AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
          }),
        );
        return (
          Number(Attributes.ApproximateNumberOfMessages ?? 0) +
          Number(Attributes.ApproximateNumberOfMessagesNotVisible ?? 0)
        );
      }),
    );
    if (counts.every((c) => c === 0)) return;
    if (Date.now() > deadline)
      throw new Error(`queues not empty after the last delivery: ${counts.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface IdleResult {
  /** Steady idle: after `settle_s`, over `window_s`. */
  cpu_percent_of_core: number;
  /** The settling time before it (5 s after the start until `settle_s`): the garbage collector's start-up tail. */
  settling_cpu_percent_of_core: number;
  settle_s: number;
  window_s: number;
  rss_mb: number;
  domains: number;
}

/**
 * CPU and RSS of the daemon long-polling empty queues. A fresh process keeps collecting garbage for a minute or
 * more (V8's memory reducer, once per thread's heap: 20 domains are 20 heaps), so the steady figure is taken only
 * after `settleSeconds`; the settling time is reported beside it.
 */
export async function measureIdle(
  stack: TestStack,
  endpoints: Endpoints,
  domainCount: number,
  seconds: number,
  settleSeconds: number,
): Promise<IdleResult> {
  const run = ++runCounter;
  const domains = Array.from({ length: domainCount }, (_, i) => `idle${run}d${i}.bench.test`);
  const queueUrls: string[] = [];
  for (const domain of domains) queueUrls.push((await createDomainQueue(stack.sqs, domain)).queueUrl);
  return withConsumer(
    stack,
    endpoints,
    {
      kind: 'daemon',
      domains,
      queueUrls,
    },
    async (consumer) => {
      // Start-up work (module loading, JIT, the first polls) is not idling.
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      const percent = (usedMs: number, overMs: number) => round((usedMs / overMs) * 100, 2);
      await sleep(5_000);
      const settling = cpuMs(consumer.pid);
      await sleep(Math.max(0, settleSeconds - 5) * 1000);
      const before = cpuMs(consumer.pid);
      await sleep(seconds * 1000);
      const used = cpuMs(consumer.pid) - before;
      return {
        cpu_percent_of_core: percent(used, seconds * 1000),
        settling_cpu_percent_of_core: percent(before - settling, Math.max(1, settleSeconds - 5) * 1000),
        settle_s: settleSeconds,
        window_s: seconds,
        rss_mb: round(rssMb(consumer.pid), 0),
        domains: domainCount,
      };
    },
  );
}

export interface LargeMailResult {
  mail_mb: number;
  peak_rss_before_mb: number;
  peak_rss_growth_mb: number;
  growth_per_mail_size: number;
  deliver_ms: number;
}

/** Peak RSS growth of the daemon for one mail of `bytes` (SES's maximum is 40 MB), after a small warm-up mail. */
export async function measureLargeMail(
  stack: TestStack,
  endpoints: Endpoints,
  bytes: number,
): Promise<LargeMailResult> {
  const run = ++runCounter;
  const domain = `large${run}.bench.test`;
  const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 120 });
  return withConsumer(
    stack,
    endpoints,
    {
      kind: 'daemon',
      domains: [domain],
      queueUrls: [queueUrl],
    },
    async (consumer, sink) => {
      await preloadDomain(stack, domain, queueUrl, 1);
      await waitForDeliveries(sink, consumer.pid, 1, 1);
      const before = peakRssMb(consumer.pid);
      const started = Date.now();
      // Over fauxqs's single-request body limit: uploaded in parts, as SES's own writes of large mail are.
      await putLargeMail(stack, {
        domain,
        raw: bigMail(`large-${run}`, `user0@${domain}`, bytes),
        recipients: [`user0@${domain}`],
        source: 'bench-sender@external.test',
      });
      await waitForDeliveries(sink, consumer.pid, 2, 2);
      const deliverMs = Date.now() - started;
      const growth = peakRssMb(consumer.pid) - before;
      const mailMb = bytes / (1024 * 1024);
      return {
        mail_mb: round(mailMb, 0),
        peak_rss_before_mb: round(before, 0),
        peak_rss_growth_mb: round(growth, 0),
        growth_per_mail_size: round(growth / mailMb, 2),
        deliver_ms: deliverMs,
      };
    },
  );
}

export interface LargeForwardsResult {
  mail_mb: number;
  forwards: number;
  /** Forwards SES took, and the most any one target got (1: each sent once). */
  ses_sends: number;
  max_sends_per_target: number;
  /** Forwards whose outcome was `failed` (a mail too large for SES's 40 MB, measured after base64); -1: no outcome. */
  forwards_failed: number;
  peak_rss_before_mb: number;
  peak_rss_growth_mb: number;
  growth_per_mail_size: number;
  /** `ses_worker_in_flight_peak_bytes`: what the byte budget held at most, and the budget. */
  budget_peak_mb: number;
  budget_mb: number;
  thread_restarts: number;
  /** From the notification to the last forward (or the outcome, when none could be sent); -1: never finished. */
  done_ms: number;
  /** Transactions of the large mail at the mail server (1: delivered once). */
  local_copies: number;
}

/**
 * One large mail to a recipient whose rule forwards it to `forwards` outside addresses, SES paced at 14/s (a
 * `startSesQuota` in front of an SES endpoint that takes bodies of any size): the peak RSS growth of the daemon,
 * whether its thread survived, and how often each target got the forward.
 */
export async function measureLargeForwards(
  stack: TestStack,
  endpoints: Endpoints,
  bytes: number,
  forwards: number,
  entry?: string,
): Promise<LargeForwardsResult> {
  const run = ++runCounter;
  const domain = `fwd${run}.bench.test`;
  const to = `user0@${domain}`;
  const targets = Array.from({ length: forwards }, (_, i) => `f${i}@elsewhere.test`);
  const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 120 });
  await stack.ddb.send(
    new PutCommand({
      TableName: 'email-rules',
      Item: { email_address: to, ooo_active: false, forwards: targets },
    }),
  );
  const ses = await startSesSink();
  const quota = await startSesQuota(ses.endpoint, 14);
  try {
    return await withConsumer(
      stack,
      endpoints,
      {
        kind: 'daemon',
        domains: [domain],
        queueUrls: [queueUrl],
        endpoints: { ...endpoints, ses: quota.endpoint },
        ...(entry !== undefined && { entry }),
      },
      async (consumer, sink) => {
        // A small mail first: the heap, the JIT and the connections are start-up, not the large mail's cost.
        await preloadDomain(stack, domain, queueUrl, 1);
        await waitForDeliveries(sink, consumer.pid, 1, 1);
        await waitForSends(ses, forwards, 60_000);
        const before = peakRssMb(consumer.pid);
        const started = Date.now();
        const put = await putLargeMail(stack, {
          domain,
          raw: bigMail(`large-fwd-${run}`, to, bytes),
          recipients: [to],
          source: 'bench-sender@external.test',
        });
        // A daemon whose thread dies on the mail never finishes it: measured over three minutes then.
        const outcome = await waitForOutcome(consumer, put.messageId, 3 * 60_000);
        if (outcome) await waitForEmptyQueues(stack, [queueUrl]);
        const doneMs = outcome ? Math.max(ses.sends.at(-1)?.at ?? 0, outcome.at) - started : -1;
        const growth = peakRssMb(consumer.pid) - before;
        const mailMb = bytes / (1024 * 1024);
        const large = ses.sends.slice(forwards);
        const perTarget = new Map<string, number>();
        for (const send of large) for (const t of send.to) perTarget.set(t, (perTarget.get(t) ?? 0) + 1);
        const metrics = await consumer.metrics();
        const gauge = (name: string) =>
          Number(
            new RegExp(`^${name}\\{domain="${domain.replaceAll('.', '\\.')}"\\} (\\S+)$`, 'm').exec(
              metrics,
            )?.[1],
          );
        return {
          mail_mb: round(mailMb, 1),
          forwards,
          ses_sends: large.length,
          max_sends_per_target: Math.max(0, ...perTarget.values()),
          forwards_failed: outcome?.effects.filter((e) => e.status === 'failed').length ?? -1,
          local_copies: (await sink.deliveries()).filter((d) => d.seq === -1).length,
          peak_rss_before_mb: round(before, 0),
          peak_rss_growth_mb: round(growth, 0),
          growth_per_mail_size: round(growth / mailMb, 2),
          budget_peak_mb: round(gauge('ses_worker_in_flight_peak_bytes') / 1048576, 0),
          budget_mb: round(gauge('ses_worker_in_flight_limit_bytes') / 1048576, 0),
          thread_restarts: consumer.logs().filter((l) => l.msg === 'poller thread died; restarting').length,
          done_ms: doneMs,
        };
      },
    );
  } finally {
    await quota.stop();
    await ses.stop();
  }
}

async function waitForSends(
  ses: { sends: readonly unknown[] },
  count: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (ses.sends.length < count) {
    if (Date.now() > deadline) throw new Error(`only ${ses.sends.length} of ${count} SES sends`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The effects of the message's outcome line that ends it (deleted), and when it came; undefined if none came. */
async function waitForOutcome(
  consumer: RunningConsumer,
  sesMessageId: string,
  timeoutMs: number,
): Promise<{ effects: Array<{ status: string }>; at: number } | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = consumer.logs().find((l) => l.sesMessageId === sesMessageId && l.disposition === 'delete');
    if (line) {
      const effects = Array.isArray(line.effects) ? (line.effects as Array<{ status: string }>) : [];
      return { effects, at: Date.parse(String(line.time)) };
    }
    if (Date.now() > deadline) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface SesBurstResult {
  forwards: number;
  ses_quota_per_s: number;
  ses_sends_per_s: number;
  throttled_by_ses: number;
  /** Forwards whose outcome was not `sent` (failed or deferred): what the pacing must keep at 0. */
  effects_not_sent: number;
  local_msgs_per_s: number;
  /** From the first local delivery: when the last local copy and the last forward went out. */
  local_done_ms: number;
  forwards_done_ms: number;
}

/**
 * A burst of mail to an address that forwards outside (through SES) against an SES account with a sending quota
 * (test/harness/ses-quota.ts): the forwards go out at the quota, none fails, and the local copies are not slowed
 * down by the forwards waiting for their turn.
 */
export async function measureSesBurst(
  stack: TestStack,
  endpoints: Endpoints,
  mails: number,
  quotaPerSecond: number,
): Promise<SesBurstResult> {
  const run = ++runCounter;
  const domain = `burst${run}.bench.test`;
  const { queueUrl } = await createDomainQueue(stack.sqs, domain);
  await stack.ddb.send(
    new PutCommand({
      TableName: 'email-rules',
      Item: { email_address: `user0@${domain}`, ooo_active: false, forwards: ['friend@elsewhere.test'] },
    }),
  );
  await preloadDomain(stack, domain, queueUrl, mails);
  const quota = await startSesQuota(endpoints.ses, quotaPerSecond);
  try {
    return await withConsumer(
      stack,
      endpoints,
      {
        kind: 'daemon',
        domains: [domain],
        queueUrls: [queueUrl],
        endpoints: { ...endpoints, ses: quota.endpoint },
      },
      async (consumer, sink) => {
        const deadline = Date.now() + 10 * 60_000;
        while ((await sink.count()) < mails || quota.accepted.length < mails) {
          if (Date.now() > deadline)
            throw new Error(`burst: ${quota.accepted.length} of ${mails} forwards sent`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await waitForEmptyQueues(stack, [queueUrl]);
        const local = (await sink.deliveries()).map((d) => d.deliveredAt).sort((a, b) => a - b);
        const sends = [...quota.accepted].sort((a, b) => a - b);
        const first = local[0] ?? 0;
        const effects = consumer
          .logs()
          .flatMap((line) =>
            Array.isArray(line.effects) ? (line.effects as Array<{ status: string }>) : [],
          );
        return {
          forwards: sends.length,
          ses_quota_per_s: quotaPerSecond,
          ses_sends_per_s: round(((sends.length - 1) * 1000) / Math.max(1, sends.at(-1)! - sends[0]!)),
          throttled_by_ses: quota.throttled,
          effects_not_sent: effects.filter((e) => e.status !== 'sent').length,
          local_msgs_per_s: round(((local.length - 1) * 1000) / Math.max(1, local.at(-1)! - first)),
          local_done_ms: Math.round(local.at(-1)! - first),
          forwards_done_ms: Math.round(sends.at(-1)! - first),
        };
      },
    );
  } finally {
    await quota.stop();
  }
}

export interface SerialLatencyResult {
  recipients_per_mail: number;
  mails: number;
  /** Median time a message spends in the daemon (receive to outcome), one message at a time. */
  p50_processing_ms: number;
  /** The same divided by the proxies' latency per AWS call: sequential round trips per mail, roughly. */
  round_trips_per_mail: number;
}

/**
 * One message at a time (MESSAGE_CONCURRENCY=1) behind the latency proxies: the time a message spends in the
 * pipeline is then its sequential round trips, so 1 and 10 recipients per mail show whether claims and completes
 * add round trips per recipient.
 */
export async function measureSerialLatency(
  stack: TestStack,
  endpoints: Endpoints,
  latencyMs: number,
  recipientsPerMail: number,
  mails: number,
): Promise<SerialLatencyResult> {
  const run = ++runCounter;
  const domain = `serial${run}.bench.test`;
  const { queueUrl } = await createDomainQueue(stack.sqs, domain);
  await preloadDomain(stack, domain, queueUrl, mails, { mailBytes: 10 * 1024, recipientsPerMail });
  return withConsumer(
    stack,
    endpoints,
    {
      kind: 'daemon',
      domains: [domain],
      queueUrls: [queueUrl],
      env: { MESSAGE_CONCURRENCY: '1', RULES_CACHE_SECONDS: '0' },
    },
    async (consumer, sink) => {
      await waitForDeliveries(sink, consumer.pid, 1, mails);
      await waitForEmptyQueues(stack, [queueUrl]);
      const durations = consumer
        .logs()
        .filter((line) => line.msg === 'message processed' && typeof line.durationMs === 'number')
        .map((line) => line.durationMs as number)
        // The first mails pay for connections and JIT.
        .slice(5);
      const p50 = percentile(durations, 50);
      return {
        recipients_per_mail: recipientsPerMail,
        mails,
        p50_processing_ms: round(p50, 0),
        round_trips_per_mail: round(p50 / Math.max(1, latencyMs), 1),
      };
    },
  );
}
