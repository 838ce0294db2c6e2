/**
 * "Never lose, never duplicate": fault injection against the real pipeline. Every test counts deliveries per mail at
 * the SMTP sink (and per forward at the SES recorder) and asserts nothing is missing and nothing arrived twice.
 *
 * Two groups run side by side (both mostly wait on timers: SQS visibility and the worker's retry schedule, whose
 * first step is 30 s and is not configurable):
 * - the BUILT daemon as child processes (kill -9, two replicas, 40 MB mail and the in-flight byte budget) —
 *   `npm run build` first;
 * - the in-process pipeline (`startRig`) with faults: mail server down, S3 and DynamoDB errors through a
 *   fault-injecting proxy (test/harness/faults.ts; a mock only where the emulators cannot produce the fault), SES
 *   throttling through the SES recorder's `failNext`.
 *
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it, type TestContext } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type DomainQueueOptions,
  type TestStack,
} from '../harness/emulators.ts';
import {
  bigMail,
  countBySeq,
  DDB_THROTTLING,
  DDB_THROUGHPUT_EXCEEDED,
  outcomeLines,
  putLargeMail,
  putLargeMails,
  rawMail,
  S3_INTERNAL_ERROR,
  S3_SLOW_DOWN,
  seqOf,
  startFaultProxy,
  tally,
  type FaultProxy,
  type ProxiedRequest,
} from '../harness/faults.ts';
import { killAllDaemons, spawnDaemon, waitReady } from '../harness/daemon-process.ts';
import { messageKey } from '../../src/aws/effect-ledger.ts';
import { startRig, type LogLine, type Rig } from '../harness/pipeline-rig.ts';
import { putMail, sesMessageId, type PutMailResult } from '../harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const SOURCE = 'sender@external.test';
const MiB = 1024 * 1024;

/** Numbers for the run's output (TAP `#` lines, spec reporter `ℹ` lines). */
function report(t: TestContext, message: string): void {
  t.diagnostic(message);
}

async function drained(stack: TestStack, queueUrl: string): Promise<boolean> {
  const c = await queueCounts(stack.sqs, queueUrl);
  return c.visible === 0 && c.inFlight === 0;
}

function put(
  stack: TestStack,
  domain: string,
  seq: string,
  to: string,
  raw = rawMail(seq, to),
  messageId?: string,
) {
  return putMail(stack, {
    domain,
    raw,
    recipients: [to],
    source: SOURCE,
    shape: 'sns-s3',
    ...(messageId !== undefined && { messageId }),
  });
}

async function putMany(
  stack: TestStack,
  domain: string,
  seqs: readonly string[],
  to: string,
): Promise<PutMailResult[]> {
  const results: PutMailResult[] = [];
  for (let i = 0; i < seqs.length; i += 25) {
    results.push(...(await Promise.all(seqs.slice(i, i + 25).map((seq) => put(stack, domain, seq, to)))));
  }
  return results;
}

/** Copies of `seq` the sink accepted. */
function copies(sink: SmtpSink, seq: string): number {
  return countBySeq(sink.messages).get(seq) ?? 0;
}

/** The delivered bytes without the delivery id and the five X-SES-*-Verdict lines the worker prepends. */
function withoutVerdicts(raw: Buffer): Buffer {
  assert.match(raw.toString('latin1', 0, 100), /^X-SES-Worker-Delivery-Id: /);
  let offset = raw.indexOf('\r\n') + 2;
  for (let i = 0; i < 5; i++) {
    const end = raw.indexOf('\r\n', offset);
    assert.match(raw.toString('latin1', offset, end), /^X-SES-[A-Za-z]+-Verdict: /);
    offset = end + 2;
  }
  return raw.subarray(offset);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Environment of a daemon child serving `domain` against `stack`, delivering to `sink`. */
function daemonEnv(
  stack: TestStack,
  domain: string,
  sink: SmtpSink,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ...stack.env,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(sink.port),
    INTERNAL_SMTP_PORT: String(sink.port),
    WAIT_TIME_SECONDS: '1',
    RULES_CACHE_SECONDS: '0',
    SHUTDOWN_GRACE_SECONDS: '5',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

describe('never lose, never duplicate', () => {
  after(() => killAllDaemons());

  // -------------------------------------------------------------------------------------------------------------------
  // Large mails through the built daemon. First and alone: building, uploading, serving and receiving 40 MB happens
  // in this process too, and would stall the event loop under the in-process pollers below (whose heartbeats and
  // timings are measured in seconds).
  // -------------------------------------------------------------------------------------------------------------------
  describe('large mails through the built daemon', () => {
    let stack: TestStack;
    before(async () => {
      stack = await startStack({ tables: true });
    });
    after(async () => {
      await killAllDaemons();
      await stack?.stop();
    });

    // Peak RSS (the 8x target) and the delivery time are measured in bench/large-mail.bench.ts (BENCHMARKS.md), not
    // limited here: they depend on the machine and its load, which a test must not.
    it('6a. a 40 MB mail is delivered byte for byte, once', async (t) => {
      const domain = 'big.test';
      const to = `user@${domain}`;
      const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 30 });
      const sink = await startSmtpSink({ size: 64 * MiB });
      t.after(() => sink.stop());
      const daemon = await spawnDaemon({ domains: [domain], env: daemonEnv(stack, domain, sink) });
      t.after(() => daemon.stop());

      const raw = bigMail('big-40', to, 40 * MiB - 64 * 1024);
      await putLargeMail(stack, { domain, raw, recipients: [to], source: SOURCE });
      await waitUntil(() => copies(sink, 'big-40') > 0, 90_000, 'the 40 MB mail', 50);
      const delivered = sink.messages.find((m) => seqOf(m.raw) === 'big-40');
      assert.ok(delivered);
      assert.equal(sha(withoutVerdicts(delivered.raw)), sha(raw), 'delivered bytes differ');
      await waitUntil(() => drained(stack, queueUrl), 20_000, 'queue drained', 100);
      assert.equal(copies(sink, 'big-40'), 1);
    });

    it('6b. three 20 MB mails with IN_FLIGHT_BYTES=45MB: the budget never holds more than 45 MB', async (t) => {
      const domain = 'budget.test';
      const to = `user@${domain}`;
      const limit = 45 * MiB;
      const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 30 });
      const sink = await startSmtpSink({ size: 64 * MiB });
      t.after(() => sink.stop());
      const daemon = await spawnDaemon({
        domains: [domain],
        env: daemonEnv(stack, domain, sink, { IN_FLIGHT_BYTES: String(limit) }),
      });
      t.after(() => daemon.stop());

      // Every DATA takes 2.5 s and all three notifications are sent together, after the uploads: without the budget
      // all three mails (60 MB) would be held at once while their DATA waits.
      sink.setDataDelay(2_500);
      const seqs = ['b20-1', 'b20-2', 'b20-3'];
      const raws = seqs.map((seq) => bigMail(seq, to, 20 * MiB));
      await putLargeMails(
        stack,
        raws.map((raw) => ({ domain, raw, recipients: [to], source: SOURCE })),
      );
      await waitUntil(() => seqs.every((s) => copies(sink, s) > 0), 60_000, 'three 20 MB mails', 50);
      await waitUntil(() => drained(stack, queueUrl), 30_000, 'queue drained', 100);
      const metrics = await daemon.metrics();
      const gauge = (name: string) =>
        Number(new RegExp(`^${name}\\{domain="budget\\.test"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
      const peak = gauge('ses_worker_in_flight_peak_bytes');
      report(t, `in-flight bytes peaked at ${(peak / MiB).toFixed(1)} MiB (limit ${limit / MiB} MiB)`);
      assert.equal(gauge('ses_worker_in_flight_limit_bytes'), limit);
      // Two mails fit together, so the budget was contended (not just three mails arriving one by one) ...
      const oneMail = raws[0]?.length ?? 0;
      assert.ok(peak >= 2 * oneMail, `at most one mail was ever held (peak ${peak} bytes)`);
      // ... and the third had to wait for room. The copies count too: when both mails held wait for their delivery
      // copy and nothing else could free memory, the first gets it past the budget, by at most that one copy.
      const copy = oneMail + 64 * 1024;
      assert.ok(peak <= limit + copy, `the budget held ${peak} bytes, over its ${limit} and one copy`);
      assert.equal(gauge('ses_worker_in_flight_bytes'), 0, 'every share was given back');
      for (const [i, seq] of seqs.entries()) {
        assert.equal(copies(sink, seq), 1, seq);
        const m = sink.messages.find((x) => seqOf(x.raw) === seq);
        assert.equal(sha(withoutVerdicts(m?.raw ?? Buffer.alloc(0))), sha(raws[i] ?? Buffer.alloc(0)), seq);
      }
    });
  });

  describe('under faults', { concurrency: true }, () => {
    // -----------------------------------------------------------------------------------------------------------------
    // The built daemon, as child processes
    // -----------------------------------------------------------------------------------------------------------------
    describe('the built daemon', () => {
      let stack: TestStack;
      before(async () => {
        stack = await startStack({ tables: true });
      });
      after(async () => {
        await killAllDaemons();
        await stack?.stop();
      });

      it('1. kill -9 in the middle of 200 messages, restart: none missing, duplicates <= 2 %', async (t) => {
        const domain = 'kill.test';
        const to = `user@${domain}`;
        // Short visibility: the restarted daemon sees the killed one's unfinished messages after 3 s. The ledger lease
        // is derived from it (domain-runtime.ts: max(5, VisibilityTimeout) = 5 s), not the 120 s default.
        const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3 });
        const sink = await startSmtpSink();
        t.after(() => sink.stop());
        const seqs = Array.from({ length: 200 }, (_, i) => `kill-${i}`);
        await putMany(stack, domain, seqs, to);
        // A duplicate is a mail the sink accepted whose ledger record was not yet COMPLETED at the kill, so at most one
        // per message in flight: MESSAGE_CONCURRENCY. (Not one per SMTP connection: a connection takes the next mail
        // while the previous one's DynamoDB UpdateItem is still on its way.) 4 in flight = 2 % of 200 even when the
        // kill lands right after an acceptance, as it does here; the default of 100 would allow half the batch.
        const env = daemonEnv(stack, domain, sink, { MESSAGE_CONCURRENCY: '4' });
        assert.equal(env.IDEMPOTENCY_TABLE, 'email-worker-idempotency');

        const first = await spawnDaemon({ domains: [domain], env });
        await sink.waitFor(50, 30_000);
        await first.kill9();
        const deliveredAtKill = new Set(countBySeq(sink.messages).keys());
        const messagesAtKill = sink.messages.length;
        // Precondition: the kill landed mid-run, so the restart has work left that only it can do.
        assert.ok(
          deliveredAtKill.size > 0 && deliveredAtKill.size < seqs.length,
          `the kill did not land mid-run: ${deliveredAtKill.size}/${seqs.length} delivered by then`,
        );
        const killedAt = Date.now();
        // Restart at once: a message whose claim the killed process left INPROGRESS comes back after the claim
        // lease (the queue's visibility timeout), not after the longer retry schedule.
        const second = await spawnDaemon({ domains: [domain], env });
        t.after(() => second.stop());

        await waitUntil(
          () => countBySeq(sink.messages).size === seqs.length,
          60_000,
          'all 200 delivered',
          50,
        );
        await waitUntil(() => drained(stack, queueUrl), 60_000, 'queue drained', 100);
        const result = tally(seqs, countBySeq(sink.messages));
        report(
          t,
          `killed after ${deliveredAtKill.size} deliveries; after restart: missing ${result.missing.length}, duplicates ` +
            `${result.extraCopies}/${seqs.length} (${((100 * result.extraCopies) / seqs.length).toFixed(1)} %) ` +
            `${JSON.stringify(result.duplicated)}; kill to drained ${Date.now() - killedAt} ms`,
        );
        assert.deepEqual(result.missing, []);
        // The rest came from the restarted daemon: the first one was dead, so everything the sink accepted after the
        // kill is the second one's, and it covers every mail missing at the kill.
        const afterKill = countBySeq(sink.messages.slice(messagesAtKill));
        const rest = seqs.filter((seq) => !deliveredAtKill.has(seq));
        assert.deepEqual(
          rest.filter((seq) => !afterKill.has(seq)),
          [],
          'mails missing at the kill that the restart did not deliver',
        );
        const deliveredBySecond = outcomeLines(second.logs).filter((l) => l.status === 'delivered');
        assert.ok(
          deliveredBySecond.length >= rest.length,
          `the restarted daemon logged ${deliveredBySecond.length} delivered outcomes for ${rest.length} mails`,
        );
        assert.ok(
          result.extraCopies <= seqs.length * 0.02,
          `${result.extraCopies} duplicates: over 2 % of the batch`,
        );
        assert.ok(!second.logs.some((l) => l.msg === 'poller thread died; restarting'));
      });

      it('8. kill -9 after SES accepted a forward and before the ledger recorded it: the restart does not send it again', async (t) => {
        const domain = 'seskill.test';
        const to = `alice@${domain}`;
        const target = 'far@seskill-external.test';
        const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3 });
        await stack.ddb.send(
          new PutCommand({ TableName: 'email-rules', Item: { email_address: to, forwards: [target] } }),
        );
        const sink = await startSmtpSink();
        const ddb = await startFaultProxy(stack.endpoints.dynamodb);
        const s3 = await startFaultProxy(stack.endpoints.s3);
        t.after(async () => {
          await sink.stop();
          await Promise.all([ddb.stop(), s3.stop()]);
        });
        const id = sesMessageId();
        // The attempt's last write records the forward as sent (visibility 3 s: lease 5 s, so an UpdateItem giving the
        // lease back). Held long enough for the kill; passed on afterwards, it finds the record no longer the dead
        // worker's and changes nothing. The audit beside it is held too: the restart must be stopped by the ledger's
        // mark, not by an S3 object that already says processed.
        const held = ddb.delay(
          (r) =>
            r.operation === 'UpdateItem' &&
            (r.body ?? '').includes(`${id}|`) &&
            (r.body ?? '').includes('REMOVE'),
          20_000,
        );
        const audit = s3.delay((r) => r.operation === 'CopyObject' && r.path.endsWith(`/${id}`), 20_000);
        const env = daemonEnv(stack, domain, sink, {
          AWS_ENDPOINT_URL_DYNAMODB: ddb.endpoint,
          AWS_ENDPOINT_URL_S3: s3.endpoint,
        });
        const sentTo = () => stack.ses.sent.filter((m) => m.destinations.includes(target)).length;
        const first = await spawnDaemon({ domains: [domain], env });
        await put(stack, domain, 'ses-kill', to, undefined, id);
        await waitUntil(
          // The audit, if the last write gives up before the kill, is held too: S3 never says processed.
          () => sentTo() > 0 && held.hits > 0,
          30_000,
          'the forward sent and its record held',
          20,
        );
        await first.kill9();
        ddb.clear(held);
        s3.clear(audit);
        // Precondition: the kill came after SES answered and before the ledger heard of it. (A slow machine may let
        // the 3 s visibility lapse meanwhile: a second receive is then deferred by the claim and logs a retry.)
        assert.equal(sentTo(), 1);
        assert.deepEqual(
          outcomeLines(first.logs)
            .filter((l) => l.sesMessageId === id && l.disposition !== 'retry')
            .map((l) => l.disposition),
          [],
          'no attempt finished',
        );

        const second = await spawnDaemon({ domains: [domain], env });
        t.after(() => second.stop());
        const outcome = await second.waitForLog(
          (l) => l.sesMessageId === id && l.disposition === 'delete',
          30_000,
          'the restarted daemon finishing the mail',
        );
        await waitUntil(() => drained(stack, queueUrl), 10_000, 'queue drained', 100);
        const effects = (outcome.effects ?? []) as Array<{ status: string; reason?: string }>;
        report(t, `after the restart: ${JSON.stringify(effects)}; SES sends to the target: ${sentTo()}`);
        assert.equal(effects[0]?.status, 'failed');
        assert.match(String(effects[0]?.reason), /SES_OUTCOME_UNKNOWN: .*not resent/);
        assert.equal(sentTo(), 1, 'the forward SES accepted was sent again');
        assert.equal(copies(sink, 'ses-kill'), 1, 'the delivery was recorded with the mark before the send');
      });

      it('7. two daemons on the same queue (and SNS delivering 20 notifications twice): 100 mails, each once', async (t) => {
        const domain = 'pair.test';
        const to = `user@${domain}`;
        const { queueUrl } = await createDomainQueue(stack.sqs, domain, { visibilityTimeout: 3 });
        const sink = await startSmtpSink({ dataDelayMs: 10 });
        t.after(() => sink.stop());
        // Both polling before the first mail, and fewer slots than mails: otherwise the first one up can take the
        // whole batch (100 slots by default) and the second never gets to deliver.
        const env = daemonEnv(stack, domain, sink, { MESSAGE_CONCURRENCY: '10' });
        const [a, b] = await Promise.all([
          spawnDaemon({ domains: [domain], env }),
          spawnDaemon({ domains: [domain], env }),
        ]);
        t.after(() => Promise.all([a?.stop(), b?.stop()]));
        await Promise.all([waitReady(a), waitReady(b)]);
        const seqs = Array.from({ length: 100 }, (_, i) => `pair-${i}`);
        // SNS → SQS is at-least-once: the same notification can arrive twice, and the two copies can be received by
        // the two replicas at the same moment. Each of the first 20 gets its second copy right behind it, so the
        // copies are worked on at once and race for the ledger's claim: only the ledger keeps that to one delivery.
        const doubled = await Promise.all(
          seqs.slice(0, 20).map(async (seq) => {
            const original = await put(stack, domain, seq, to);
            await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: original.body }));
            return original;
          }),
        );
        const puts = [...doubled, ...(await putMany(stack, domain, seqs.slice(20), to))];
        await waitUntil(
          () => countBySeq(sink.messages).size === seqs.length,
          60_000,
          'all 100 delivered',
          50,
        );
        await waitUntil(() => drained(stack, queueUrl), 60_000, 'queue drained', 200);
        const result = tally(seqs, countBySeq(sink.messages));
        const outcomes = [...outcomeLines(a.logs), ...outcomeLines(b.logs)];
        const byA = outcomeLines(a.logs).filter((l) => l.status === 'delivered').length;
        const byB = outcomeLines(b.logs).filter((l) => l.status === 'delivered').length;
        const busy = outcomes.filter((l) =>
          (l.recipients ?? []).some((r) => r.detail === 'being delivered by another worker'),
        ).length;
        // Each duplicated notification is its own SQS message (own SQS id) carrying the same SES id.
        const sqsIdsOf = (sesId: string) =>
          new Set(outcomes.filter((l) => l.sesMessageId === sesId).map((l) => l.sqsMessageId)).size;
        const duplicatedNotReceived = puts
          .slice(0, 20)
          .filter((p) => sqsIdsOf(p.messageId) < 2)
          .map((p) => p.messageId);
        report(
          t,
          `delivered outcomes: daemon A ${byA}, daemon B ${byB} (${byA + byB - seqs.length} answered by the ledger ` +
            `without a new delivery); deferred as "being delivered by another worker": ${busy}; ` +
            `missing ${result.missing.length}; duplicates ${result.extraCopies}`,
        );
        // Preconditions: both replicas consumed, both copies of every duplicated notification were received, and some
        // copies met at the claim, so "each once" below is the ledger's doing and not one replica doing everything,
        // a copy never read, or copies that came one after the other.
        assert.ok(byA > 0 && byB > 0, `one replica did all the work (A ${byA}, B ${byB})`);
        assert.deepEqual(duplicatedNotReceived, [], 'duplicated notifications received only once');
        assert.deepEqual(result.missing, []);
        assert.deepEqual(result.duplicated, []);
        // Last, so that a ledger letting both copies through fails on the duplicates above, not here.
        assert.ok(
          busy > 0,
          'no two copies of a notification were worked on at once: the claim race was not set up',
        );
      });
    });

    // -------------------------------------------------------------------------------------------------------------------
    // The in-process pipeline with faults; each test has its own emulators, so faults cannot leak between tests
    // -------------------------------------------------------------------------------------------------------------------
    describe('the pipeline with injected faults', { concurrency: true }, () => {
      interface FaultRig {
        rig: Rig;
        stack: TestStack;
        s3?: FaultProxy;
        ddb?: FaultProxy;
        sqs?: FaultProxy;
      }

      /** A stack for `domain`, optional fault proxies in front of S3 / DynamoDB / SQS, and a rig using them. */
      async function faultRig(
        t: TestContext,
        domain: string,
        options: {
          proxies?: Array<'s3' | 'ddb' | 'sqs'>;
          env?: Record<string, string>;
          queue?: DomainQueueOptions;
        } = {},
      ): Promise<FaultRig> {
        const stack = await startStack({
          tables: true,
          domains: [domain],
          queueOptions: options.queue ?? { visibilityTimeout: 3 },
        });
        const proxies = options.proxies ?? [];
        const s3 = proxies.includes('s3') ? await startFaultProxy(stack.endpoints.s3) : undefined;
        const ddb = proxies.includes('ddb') ? await startFaultProxy(stack.endpoints.dynamodb) : undefined;
        const sqs = proxies.includes('sqs') ? await startFaultProxy(stack.endpoints.sqs) : undefined;
        const rig = await startRig({
          stack,
          domains: [domain],
          env: {
            ...(s3 && { AWS_ENDPOINT_URL_S3: s3.endpoint }),
            ...(ddb && { AWS_ENDPOINT_URL_DYNAMODB: ddb.endpoint }),
            ...(sqs && { AWS_ENDPOINT_URL_SQS: sqs.endpoint }),
            ...options.env,
          },
        });
        t.after(async () => {
          await rig.stop();
          await Promise.all([s3?.stop(), ddb?.stop(), sqs?.stop()]);
          await stack.stop();
        });
        return { rig, stack, ...(s3 && { s3 }), ...(ddb && { ddb }), ...(sqs && { sqs }) };
      }

      /** Waits for the `n`-th outcome line of a message (one per receive). */
      async function nthOutcome(rig: Rig, id: string, n: number, timeoutMs = 45_000): Promise<LogLine> {
        await waitUntil(() => rig.outcomes(id).length >= n, timeoutMs, `outcome #${n} of ${id}`, 50);
        return rig.outcomes(id)[n - 1] as LogLine;
      }

      it('2. mail server down for many retry periods: nothing dead-lettered, every mail delivered once when it is back', async (t) => {
        const domain = 'down.test';
        const to = `user@${domain}`;
        // The redrive gives up at the 2nd receive and a retry waits 1 s: an outage of 14 s is seven give-up counts
        // long. Mail received before the monitor knew is parked; mail sent later is not received at all.
        const { rig, stack, sqs } = await faultRig(t, domain, {
          proxies: ['sqs'],
          queue: { visibilityTimeout: 6, withDlq: true, maxReceiveCount: 2 },
          env: { MAX_RECEIVES: '2', RETRY_DELAYS_SECONDS: '1', OUTAGE_PROBE_SECONDS: '5' },
        });
        assert.ok(sqs);
        const queue = stack.queues[domain];
        assert.ok(queue?.dlqUrl);
        const poller = rig.runtimes.get(domain)?.poller;
        await waitUntil(
          () => poller?.getStatus().lastPollAt !== undefined,
          10_000,
          'polling (the server answered)',
        );
        await rig.mailbox.down();
        const downAt = Date.now();
        const early = await putMany(stack, domain, ['down-0', 'down-1', 'down-2'], to);
        const earlyIds = early.map((p) => p.messageId);
        await waitUntil(
          () => earlyIds.every((id) => rig.outcomes(id).length > 0),
          20_000,
          'first attempts',
          50,
        );
        const first = rig.outcomes(earlyIds[0] ?? '')[0];
        assert.equal(first?.disposition, 'park', 'held for the outage');
        assert.equal(first?.recipients?.[0]?.code, undefined, 'no reply code: unreachable');
        const late = await putMany(
          stack,
          domain,
          Array.from({ length: 17 }, (_, i) => `down-${i + 3}`),
          to,
        );
        const puts = [...early, ...late];
        const seqs = puts.map((_, i) => `down-${i}`);
        const ids = puts.map((p) => p.messageId);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, 14_000 - (Date.now() - downAt))));
        // Attempts while down are the first receive and the probes, which retry in place: one receive each.
        const receivesWhileDown = Math.max(
          0,
          ...ids.flatMap((id) => rig.outcomes(id).map((l) => Number(l.receiveCount))),
        );
        const probes = ids.reduce((n, id) => n + Math.max(0, rig.outcomes(id).length - 1), 0);
        const lateReceived = late.filter((p) => rig.outcomes(p.messageId).length > 0).length;
        const deadLettered = (await queueCounts(stack.sqs, queue.dlqUrl)).visible;
        await rig.mailbox.up();
        const upAt = Date.now();
        await waitUntil(
          () => countBySeq(rig.mailbox.messages).size === seqs.length,
          30_000,
          'all 20 delivered',
          100,
        );
        const recoveredMs = Date.now() - upAt;
        await waitUntil(() => drained(stack, queue.queueUrl), 10_000, 'queue drained', 100);
        const finalReceiveCounts = ids.map((id) => Number(rig.outcomes(id).at(-1)?.receiveCount));
        report(
          t,
          `server down 14 s (7 give-up periods): ${receivesWhileDown} receive(s) per message at most while down ` +
            `(${probes} probes in place), ` +
            `${lateReceived} of 17 later mails received while down, ${deadLettered} dead-lettered; after recovery all ` +
            `delivered in ${recoveredMs} ms; receive count at delivery ${Math.max(...finalReceiveCounts)} at most`,
        );
        const result = tally(seqs, countBySeq(rig.mailbox.messages));
        assert.deepEqual(result.missing, []);
        assert.deepEqual(result.duplicated, []);
        assert.equal(deadLettered, 0, 'the outage sent mail to the dead-letter queue');
        assert.equal((await queueCounts(stack.sqs, queue.dlqUrl)).visible, 0);
        assert.equal(receivesWhileDown, 1, 'a message was received more than once while the server was down');
        assert.ok(Math.max(...finalReceiveCounts) <= 1, 'the outage counted against a mail');
      });

      it('3a. S3 GetObject SlowDown / InternalError: retried, then temporary; delivered once when it clears', async (t) => {
        const domain = 's3fault.test';
        const to = `user@${domain}`;
        const { rig, stack, s3 } = await faultRig(t, domain, { proxies: ['s3'] });
        assert.ok(s3);
        const slow = sesMessageId();
        const flaky = sesMessageId();
        const slowRule = s3.fail(
          (r) => r.operation === 'GetObject' && r.path.endsWith(`/${slow}`),
          S3_SLOW_DOWN,
        );
        const flakyRule = s3.fail(
          (r) => r.operation === 'GetObject' && r.path.endsWith(`/${flaky}`),
          S3_INTERNAL_ERROR,
          2,
        );
        const slowPut = await put(stack, domain, 's3-slow', to, undefined, slow);
        await put(stack, domain, 's3-flaky', to, undefined, flaky);

        // Two 500s are absorbed by the retries inside one receive.
        const flakyOutcome = await nthOutcome(rig, flaky, 1);
        assert.equal(flakyRule.hits, 2, 'both injected 500s were answered');
        assert.equal(flakyOutcome.status, 'delivered');
        assert.equal(flakyOutcome.receiveCount, 1);

        // SlowDown on every attempt: retried, then given up for this receive as temporary — the message stays.
        const deferred = await nthOutcome(rig, slow, 1);
        const attempts = s3.count('GetObject', (r) => r.path.endsWith(`/${slow}`));
        assert.equal(slowRule.hits, attempts, 'every GetObject of the first receive got SlowDown');
        assert.equal(deferred.disposition, 'retry');
        assert.equal(deferred.status, 'deferred');
        assert.match(String(deferred.reason), /GetObject|reduce your request rate|SlowDown/);
        assert.ok(attempts >= 3, `GetObject tried ${attempts} times in one receive`);
        const meta = await stack.s3.send(new HeadObjectCommand({ Bucket: slowPut.bucket, Key: slowPut.key }));
        assert.equal(
          meta.Metadata?.status,
          undefined,
          'a temporary S3 failure must not mark the mail failed',
        );
        assert.equal(copies(rig.mailbox, 's3-slow'), 0);

        s3.clear(slowRule);
        const delivered = await nthOutcome(rig, slow, 2);
        report(
          t,
          `SlowDown: ${attempts} GetObject attempts in the first receive, delivered at receive ${delivered.receiveCount}`,
        );
        assert.equal(delivered.status, 'delivered');
        await waitUntil(() => drained(stack, slowPut.queueUrl), 10_000, 'queue drained', 100);
        assert.equal(copies(rig.mailbox, 's3-slow'), 1);
        assert.equal(copies(rig.mailbox, 's3-flaky'), 1);
      });

      it('3b. MAX_RECEIVES: a mail still failing at the last receive is marked status=failed in S3', async (t) => {
        const domain = 'maxrecv.test';
        const to = `user@${domain}`;
        const { rig, stack, s3 } = await faultRig(t, domain, { proxies: ['s3'], env: { MAX_RECEIVES: '1' } });
        assert.ok(s3);
        const id = sesMessageId();
        const rule = s3.fail((r) => r.operation === 'GetObject' && r.path.endsWith(`/${id}`), S3_SLOW_DOWN);
        const p = await put(stack, domain, 'maxrecv', to, undefined, id);
        const outcome = await nthOutcome(rig, id, 1);
        assert.ok(rule.hits > 0, 'the SlowDown rule never fired');
        assert.equal(outcome.disposition, 'retry');
        await waitUntil(
          async () => {
            const head = await stack.s3.send(new HeadObjectCommand({ Bucket: p.bucket, Key: p.key }));
            return head.Metadata?.status === 'failed';
          },
          5_000,
          'status=failed metadata',
        );
        const head = await stack.s3.send(new HeadObjectCommand({ Bucket: p.bucket, Key: p.key }));
        assert.match(head.Metadata?.failure_reason ?? '', /gave up after 1 receives/);
        assert.ok(rig.logs.some((l) => l.msg.includes('MAX_RECEIVES')));
      });

      it('3c. DynamoDB throttling (rules read, ledger claim): temporary; delivered once when it clears', async (t) => {
        const domain = 'ddbfault.test';
        const { rig, stack, ddb } = await faultRig(t, domain, { proxies: ['ddb'] });
        assert.ok(ddb);
        const rulesTo = `rules@${domain}`;
        const claimTo = `claim@${domain}`;
        const claimId = sesMessageId();
        const rulesRule = ddb.fail(
          (r) => r.operation === 'BatchGetItem' && (r.body ?? '').includes(rulesTo),
          DDB_THROUGHPUT_EXCEEDED,
        );
        // The claim: the UpdateItem that takes the message's lease and reads its record back.
        const claimRule = ddb.fail(
          (r) =>
            r.operation === 'UpdateItem' &&
            (r.body ?? '').includes(`${claimId}|`) &&
            (r.body ?? '').includes('ALL_NEW'),
          DDB_THROTTLING,
        );
        const rulesPut = await put(stack, domain, 'ddb-rules', rulesTo);
        await put(stack, domain, 'ddb-claim', claimTo, undefined, claimId);

        const [rulesFirst, claimFirst] = await Promise.all([
          nthOutcome(rig, rulesPut.messageId, 1),
          nthOutcome(rig, claimId, 1),
        ]);
        assert.ok(rulesRule.hits > 0, 'the BatchGetItem throttle never fired');
        assert.ok(claimRule.hits > 0, 'the claim PutItem throttle never fired');
        for (const outcome of [rulesFirst, claimFirst]) {
          assert.equal(outcome.disposition, 'retry');
          assert.equal(outcome.status, 'deferred');
        }
        assert.match(String(rulesFirst.reason), /BatchGetItem/);
        assert.match(String(claimFirst.reason), /UpdateItem/);
        assert.equal(copies(rig.mailbox, 'ddb-rules') + copies(rig.mailbox, 'ddb-claim'), 0);
        const throttled = rulesRule.hits + claimRule.hits;

        ddb.clear();
        const [rulesDone, claimDone] = await Promise.all([
          nthOutcome(rig, rulesPut.messageId, 2),
          nthOutcome(rig, claimId, 2),
        ]);
        report(t, `${throttled} throttled DynamoDB calls; both delivered at receive 2`);
        assert.equal(rulesDone.status, 'delivered');
        assert.equal(claimDone.status, 'delivered');
        await waitUntil(() => drained(stack, rulesPut.queueUrl), 10_000, 'queue drained', 100);
        assert.equal(copies(rig.mailbox, 'ddb-rules'), 1);
        assert.equal(copies(rig.mailbox, 'ddb-claim'), 1);
      });

      it('4. SES throttled: the forward keeps backing off until SES takes it; the local copy is not delivered again', async (t) => {
        const domain = 'sesfault.test';
        const to = `alice@${domain}`;
        const target = 'fwd@external.test';
        const { rig, stack } = await faultRig(t, domain);
        await stack.ddb.send(
          new PutCommand({ TableName: 'email-rules', Item: { email_address: to, forwards: [target] } }),
        );
        // SES throttles every send until cleared: the forward waits and tries again (the pacer would slow down),
        // within the same receive, instead of failing or deferring the effect.
        stack.ses.failNext(1000, { status: 429, code: 'TooManyRequestsException' });
        const p = await put(stack, domain, 'ses-throttled', to);
        await waitUntil(
          () => stack.ses.sendAttempts >= 4,
          30_000,
          'several throttled SendEmail attempts',
          50,
        );
        assert.equal(stack.ses.sent.length, 0, 'a send got past the injected 429s');
        assert.equal(copies(rig.mailbox, 'ses-throttled'), 1, 'the local copy went out before the forward');
        const throttledAttempts = stack.ses.sendAttempts;
        stack.ses.clear();

        const first = await nthOutcome(rig, p.messageId, 1);
        assert.equal(first.disposition, 'delete', 'finished on its first receive');
        assert.equal(first.recipients?.[0]?.state, 'delivered');
        assert.equal(first.effects?.[0]?.kind, 'forward');
        assert.equal(first.effects?.[0]?.status, 'sent');
        await waitUntil(() => drained(stack, p.queueUrl), 10_000, 'queue drained', 100);
        const forwards = stack.ses.sent.filter((m) => m.destinations.includes(target));
        report(
          t,
          `${throttledAttempts} throttled SendEmail attempts, then the forward was sent, in receive 1`,
        );
        assert.equal(copies(rig.mailbox, 'ses-throttled'), 1, 'the local copy was delivered again');
        assert.equal(forwards.length, 1, 'SES forwards recorded');
        assert.equal(seqOf(forwards[0]?.raw ?? Buffer.alloc(0)), 'ses-throttled');
      });

      it('heartbeat: a delivery slower than the visibility timeout is not handed to a second poller', async (t) => {
        const domain = 'heartbeat.test';
        const to = `user@${domain}`;
        // Visibility 4 s, DATA takes 9 s: only the heartbeat (every 1.3 s) keeps the other poller from receiving it.
        // The SQS proxy (both rigs go through it) only counts, no rule: it shows the heartbeat ran during the delivery.
        const { rig, stack, sqs } = await faultRig(t, domain, {
          proxies: ['sqs'],
          queue: { visibilityTimeout: 4 },
        });
        assert.ok(sqs);
        const other = await startRig({
          stack,
          domains: [domain],
          env: { AWS_ENDPOINT_URL_SQS: sqs.endpoint },
        });
        t.after(() => other.stop());
        rig.mailbox.setDataDelay(9_000);
        other.mailbox.setDataDelay(9_000);
        const p = await put(stack, domain, 'slow', to);
        const total = () => copies(rig.mailbox, 'slow') + copies(other.mailbox, 'slow');
        await waitUntil(() => total() > 0, 30_000, 'the slow delivery', 50);
        await waitUntil(() => drained(stack, p.queueUrl), 10_000, 'queue drained', 100);
        const receives = rig.outcomes(p.messageId).length + other.outcomes(p.messageId).length;
        const heartbeats = sqs.count('ChangeMessageVisibility', (r) =>
          /"VisibilityTimeout":4[,}]/.test(r.body ?? ''),
        );
        report(
          t,
          `9 s delivery with 4 s visibility: ${heartbeats} heartbeat(s), ${receives} receive(s), ${total()} copy`,
        );
        // Precondition: a 9 s delivery spans several heartbeat periods (1.3 s); without them the single receive
        // below would be luck (the other poller not polling at the right moment), not the heartbeat's doing.
        assert.ok(heartbeats >= 2, `${heartbeats} heartbeat(s) during a 9 s delivery`);
        assert.equal(receives, 1, 'the message was received again while it was being delivered');
        assert.equal(total(), 1);
      });

      it('a late visibility heartbeat must not undo the retry visibility of a deferred message', async (t) => {
        const domain = 'hbrace.test';
        const to = `user@${domain}`;
        // Visibility 9 s: the heartbeat renews it every 3 s. The proxy holds every heartbeat for 3.5 s (a slow SQS
        // call): each still lands well inside the 9 s, so the message never becomes visible while it is processed,
        // but the last one before processing ends is still on its way then: unless settle() waits for it, it lands
        // after the retry visibility (30 s) and hides the message for 9 s only. The mail server takes 3.5 s to answer
        // DATA with a 451, so at least one heartbeat fires.
        const { rig, stack, sqs } = await faultRig(t, domain, {
          proxies: ['sqs'],
          queue: { visibilityTimeout: 9 },
        });
        assert.ok(sqs);
        const lateHeartbeat = sqs.delay(
          (r) => r.operation === 'ChangeMessageVisibility' && /"VisibilityTimeout":9[,}]/.test(r.body ?? ''),
          3_500,
        );
        rig.mailbox.setDataDelay(3_500);
        rig.mailbox.setDataReply(to, { code: 451, message: '4.3.0 Try again later' });
        const p = await put(stack, domain, 'hb-race', to);
        const first = await nthOutcome(rig, p.messageId, 1);
        // Precondition: a heartbeat was held by the proxy while the message was processed (it reached the proxy
        // before the retry visibility did); without one the race is never set up and the test proves nothing.
        const isRetryVisibility = (r: ProxiedRequest) =>
          r.operation === 'ChangeMessageVisibility' && /"VisibilityTimeout":30[,}]/.test(r.body ?? '');
        assert.ok(
          lateHeartbeat.hits > 0,
          'no heartbeat met the delay rule while the delayed DATA was in progress',
        );
        await waitUntil(
          () => sqs.count('ChangeMessageVisibility', isRetryVisibility) > 0,
          10_000,
          'retry visibility',
        );
        const retryAt = sqs.requests.find(isRetryVisibility)?.at ?? 0;
        assert.ok(
          sqs.requests.some((r) => lateHeartbeat.match(r) && r.at <= retryAt),
          'no heartbeat was on its way when the retry visibility was set',
        );
        assert.equal(first.disposition, 'retry');
        assert.equal(first.recipients?.[0]?.code, 451);
        await new Promise((resolve) => setTimeout(resolve, 16_000));
        const receives = rig.outcomes(p.messageId);
        report(
          t,
          `deferred with a 30 s retry visibility; received ${receives.length} time(s) within 16 s ` +
            `(${receives.map((l) => `#${String(l.receiveCount)}`).join(', ')})`,
        );
        rig.mailbox.setDataReply(to, undefined);
        // A heartbeat landing last would reset the visibility to the queue's timeout: retries would come back early
        // and burn receives towards MAX_RECEIVES / the DLQ.
        assert.equal(receives.length, 1, 'the message came back long before its 30 s retry visibility');
      });

      it('a claim left by a crashed worker delays the message by the rest of the lease, not the retry schedule', async (t) => {
        const domain = 'lease.test';
        const to = `user@${domain}`;
        const { rig, stack } = await faultRig(t, domain);
        const id = sesMessageId();
        // What a worker killed right after claiming leaves behind, with 10 s of its lease left: long enough that the
        // first receive finds it live on a slow machine too (leases are whole seconds: taken over from now + 11 s).
        const now = Math.floor(Date.now() / 1000);
        await stack.ddb.send(
          new PutCommand({
            TableName: 'email-worker-idempotency',
            Item: {
              pk: messageKey(id, domain),
              owner: 'a-dead-worker',
              lease_until: now + 10,
              expires_at: now + 86_400,
              effects: {},
              legacy: false,
            },
          }),
        );
        const started = Date.now();
        const p = await put(stack, domain, 'lease', to, undefined, id);
        const first = await nthOutcome(rig, id, 1);
        assert.equal(
          first.recipients?.[0]?.detail,
          'being delivered by another worker',
          `precondition: the first receive must find the claim live (${JSON.stringify(first.recipients)})`,
        );
        await waitUntil(() => copies(rig.mailbox, 'lease') > 0, 45_000, 'delivery', 100);
        const delayMs = Date.now() - started;
        report(t, `a claim with 10 s of lease left delayed the delivery by ${delayMs} ms`);
        await waitUntil(() => drained(stack, p.queueUrl), 10_000, 'queue drained', 100);
        assert.equal(copies(rig.mailbox, 'lease'), 1);
        // A message held up only by live claims comes back after the lease (+ 1 s, plus receive latency), not after
        // the retry schedule's 30 s: the bound sits between the two. (A timer is the behaviour under test here.)
        assert.ok(delayMs < 25_000, `delivered after ${delayMs} ms; the lease had 10 s left`);
      });

      it('a throttled ledger "complete" after a successful delivery must not deliver the mail again', async (t) => {
        const domain = 'complete.test';
        const to = `user@${domain}`;
        const { rig, stack, ddb } = await faultRig(t, domain, { proxies: ['ddb'] });
        assert.ok(ddb);
        const id = sesMessageId();
        // The attempt's last ledger write (it records the delivery and gives the lease back: REMOVE owner); throttle
        // it for this mail until the first receive ends.
        const rule = ddb.fail(
          (r) =>
            r.operation === 'UpdateItem' &&
            (r.body ?? '').includes(`${id}|`) &&
            (r.body ?? '').includes('REMOVE'),
          DDB_THROUGHPUT_EXCEEDED,
        );
        const p = await put(stack, domain, 'complete', to, undefined, id);
        const first = await nthOutcome(rig, id, 1);
        ddb.clear(rule);
        assert.ok(rule.hits > 0, "the throttle on the delivery's complete() never fired");
        assert.equal(copies(rig.mailbox, 'complete'), 1, 'delivered once in the first receive');
        // Were the failed complete() turned into a retry, the claim would expire after the 5 s lease and the second
        // receive (30 s later) would deliver again: wait for that second receive if there is one.
        if (first.disposition === 'retry') await nthOutcome(rig, id, 2);
        await waitUntil(() => drained(stack, p.queueUrl), 10_000, 'queue drained', 100);
        report(
          t,
          `first receive: ${first.disposition} (${String(first.reason)}); copies delivered: ${copies(rig.mailbox, 'complete')}`,
        );
        // Once the mail server accepted the mail, a failing complete() is retried and logged, and the recipient stays
        // delivered: the SQS delete is then what prevents a repeat.
        assert.equal(copies(rig.mailbox, 'complete'), 1, 'the mail was delivered again');
      });

      it('a throttled ledger "complete" after a successful SES forward / auto-reply must not send it again', async (t) => {
        const domain = 'fwdcomplete.test';
        const to = `alice@${domain}`;
        const target = 'fwd@external.test';
        const { rig, stack, ddb } = await faultRig(t, domain, { proxies: ['ddb'] });
        assert.ok(ddb);
        await stack.ddb.send(
          new PutCommand({
            TableName: 'email-rules',
            Item: {
              email_address: to,
              forwards: [target],
              ooo_active: true,
              ooo_message: 'Away until Monday.',
            },
          }),
        );
        const id = sesMessageId();
        // The attempt's last write, which records the forward and the auto-reply (the marks before each send pass).
        const rule = ddb.fail(
          (r) =>
            r.operation === 'UpdateItem' &&
            (r.body ?? '').includes(`${id}|`) &&
            (r.body ?? '').includes('REMOVE'),
          DDB_THROUGHPUT_EXCEEDED,
        );
        const p = await put(stack, domain, 'fwd-complete', to, undefined, id);
        const first = await nthOutcome(rig, id, 1);
        ddb.clear();
        assert.ok(rule.hits > 0, 'the throttle on the last write never fired');
        if (first.disposition === 'retry') await nthOutcome(rig, id, 2);
        await waitUntil(() => drained(stack, p.queueUrl), 10_000, 'queue drained', 100);
        const forwards = stack.ses.sent.filter((m) => m.destinations.includes(target));
        const replies = stack.ses.sent.filter((m) => m.destinations.includes(SOURCE));
        report(
          t,
          `first receive: ${first.disposition}, effects ${JSON.stringify(first.effects?.map((e) => `${e.kind}:${e.status}`))}; ` +
            `SES forwards: ${forwards.length}, auto-replies: ${replies.length}; local copies ${copies(rig.mailbox, 'fwd-complete')}`,
        );
        assert.equal(copies(rig.mailbox, 'fwd-complete'), 1);
        assert.deepEqual(
          first.effects?.map((e) => e.kind).sort(),
          ['autoreply', 'forward'],
          'precondition: both effects ran in the first receive',
        );
        // After a successful send, a failing complete() must leave the effect `sent`, never released (which would let
        // the next receive claim it again and send a second copy).
        assert.equal(forwards.length, 1, 'the forward was sent more than once');
        assert.equal(replies.length, 1, 'the auto-reply was sent more than once');
      });
    });
  });
});
