/**
 * The BUILT daemon (`node dist/unified-worker.js`) as a child process against the emulators and an SMTP sink: two
 * domains delivering concurrently through one bounded pool, /metrics (checked by `promtool` when installed) and
 * /health, a crashing poller thread and its restart, SIGTERM in the middle of a batch (nothing lost, nothing
 * duplicated), SIGTERM during a restart backoff and during startup, a second signal, a domain without a queue, and
 * readiness following the mail server.
 *
 * Needs `npm run build` first (`npm test` does it). One stack and one SMTP sink per file; each test starts its own
 * daemon (the first group shares one) and every daemon still running is killed in `after`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, beforeEach, describe, it } from 'node:test';
import { ChangeMessageVisibilityCommand, PurgeQueueCommand } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { domainQueueName, queueCounts, startStack, waitUntil, type TestStack } from '../harness/emulators.ts';
import {
  assertBuilt,
  killAllDaemons,
  outlastDeadPoll,
  spawnDaemon,
  type DaemonProcess,
  type HttpAnswer,
} from '../harness/daemon-process.ts';
import { skipUnlessCi } from '../harness/ci.ts';
import { buildMime, putMail, sesMessageId } from '../harness/ses-events.ts';
import { startSmtpSink, type ReceivedMail, type SmtpSink } from '../harness/smtp-sink.ts';

const A = 'a.test';
const B = 'b.test';
const C = 'c.test';
const MAX_CONNECTIONS = 5;
const PROMTOOL_INSTALL = 'apt-get install -y --no-install-recommends prometheus';
const promtoolMissing =
  spawnSync('promtool', ['--version'], { stdio: 'ignore' }).error !== undefined
    ? `promtool is not installed (Debian: ${PROMTOOL_INSTALL})`
    : undefined;

let stack: TestStack;
/** The mail server: SMTP_PORT and INTERNAL_SMTP_PORT both point here, so its counters see every connection. */
let sink: SmtpSink;

// ---------------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------------

function daemonEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...stack.env,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(sink.port),
    INTERNAL_SMTP_PORT: String(sink.port),
    SMTP_MAX_CONNECTIONS: String(MAX_CONNECTIONS),
    SMTP_TIMEOUT_MS: '5000',
    RULES_CACHE_SECONDS: '0',
    UNSAFE_TEST_HOOKS: 'true',
    ...extra,
  };
}

/** Puts `count` mails on `domain`'s queue; the SES message id doubles as the `X-Test-Id` header of the mail. */
async function putMails(
  domain: string,
  count: number,
  recipientOf: (i: number) => string = () => `user@${domain}`,
): Promise<string[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const id = sesMessageId();
      const recipient = recipientOf(i);
      await putMail(stack, {
        domain,
        messageId: id,
        queueUrl: queueUrlOf(domain),
        raw: await buildMime({
          from: 'Sender <sender@external.test>',
          to: recipient,
          subject: `mail ${i} for ${domain}`,
          text: 'hello\r\n',
          headers: { 'X-Test-Id': id },
        }),
        recipients: [recipient],
        source: 'sender@external.test',
        shape: 'sns-s3',
      });
      return id;
    }),
  );
}

function queueUrlOf(domain: string): string {
  const queue = stack.queues[domain];
  if (!queue) throw new Error(`no queue for ${domain}`);
  return queue.queueUrl;
}

function testIdOf(mail: ReceivedMail): string | undefined {
  const head = mail.raw.subarray(0, mail.raw.indexOf('\r\n\r\n')).toString('latin1');
  return /^X-Test-Id: (\S+)\r?$/im.exec(head)?.[1];
}

/** How many times each id reached the sink's mailbox route (forwarded copies are told apart by their envelope). */
function deliveryCounts(ids: readonly string[]): Map<string, number> {
  const wanted = new Set(ids);
  const counts = new Map<string, number>();
  for (const mail of sink.messages) {
    const id = testIdOf(mail);
    if (id !== undefined && wanted.has(id) && !mail.to.includes(`team@${A}`))
      counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

async function waitDelivered(ids: readonly string[], timeoutMs: number, what: string): Promise<void> {
  await waitUntil(
    () => deliveryCounts(ids).size === ids.length,
    timeoutMs,
    `${what} (${deliveryCounts(ids).size}/${ids.length})`,
    50,
  );
}

async function emptyQueue(domain: string, timeoutMs = 5_000): Promise<void> {
  await waitUntil(
    async () => {
      const counts = await queueCounts(stack.sqs, queueUrlOf(domain));
      return counts.visible === 0 && counts.inFlight === 0;
    },
    timeoutMs,
    `queue of ${domain} to be empty`,
    100,
  );
}

interface QueuedMessage {
  /** The X-Test-Id / SES message id the notification carries. */
  id: string | undefined;
  /** Set for messages handed out and not yet deleted (in flight). */
  receiptHandle?: string;
}

/** A non-destructive look at a domain's queue (fauxqs internals): which of our mails are waiting or in flight. */
function queuedMessages(
  domain: string,
  ids: readonly string[],
): { waiting: QueuedMessage[]; inFlight: QueuedMessage[] } {
  const inspected = stack.fauxqs.server.inspectQueue(domainQueueName(domain));
  assert.ok(inspected, `queue of ${domain}`);
  const idIn = (body: string) => ids.find((candidate) => body.includes(candidate));
  return {
    waiting: [...inspected.messages.ready, ...inspected.messages.delayed].map((m) => ({ id: idIn(m.body) })),
    inFlight: inspected.messages.inflight.map((f) => ({
      id: idIn(f.message.body),
      receiptHandle: f.receiptHandle,
    })),
  };
}

/** SIGTERM and wait: exit code 0 proves the drain worked, and no delete is left unsent (as SIGKILL could). */
async function stopGracefully(daemon: DaemonProcess): Promise<void> {
  daemon.kill('SIGTERM');
  assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.describe());
}

interface HealthBody {
  status: string;
  ready: boolean;
  draining: boolean;
  mailServer: string;
  domains: Array<{
    domain: string;
    state: string;
    lastPollAt: string | null;
    restarts: number;
    lastError?: string;
    pausedReason?: string;
  }>;
}

function healthBody(answer: HttpAnswer): HealthBody {
  return JSON.parse(answer.body) as HealthBody;
}

function domainHealth(answer: HttpAnswer, domain: string): HealthBody['domains'][number] {
  const entry = healthBody(answer).domains.find((d) => d.domain === domain);
  assert.ok(entry, `/health lists ${domain}: ${answer.body}`);
  return entry;
}

/** Polls an endpoint until `accept` holds; returns that answer. */
async function pollEndpoint(
  daemon: DaemonProcess,
  path: string,
  accept: (answer: HttpAnswer) => boolean,
  timeoutMs: number,
  what: string,
): Promise<HttpAnswer> {
  let last: HttpAnswer | undefined;
  await waitUntil(
    async () => {
      last = await daemon.request('GET', path);
      return accept(last);
    },
    timeoutMs,
    `${what}; last ${path}: ${last?.status} ${last?.body}`,
    50,
  );
  return last as HttpAnswer;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, samples only (comments dropped). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    assert.ok(match, `unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key as string] = value as string;
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample of `name` whose labels are exactly `labels`. */
function metric(
  samples: readonly Sample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const found = samples.filter(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${name}${JSON.stringify(labels)} appears ${found.length} times`);
  return found[0]?.value;
}

async function scrape(daemon: DaemonProcess): Promise<{ text: string; samples: Sample[] }> {
  const answer = await daemon.request('GET', '/metrics', 'metrics');
  assert.equal(answer.status, 200, answer.body);
  assert.match(answer.contentType, /^text\/plain/);
  return { text: answer.body, samples: parseMetrics(answer.body) };
}

// ---------------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------------

describe('the built daemon as a child process', () => {
  before(async () => {
    assertBuilt();
    stack = await startStack({ tables: true, domains: [A, B], queueOptions: { visibilityTimeout: 30 } });
    sink = await startSmtpSink();
    // A forward rule, so the internal-port pool carries traffic too (same server, so the bound covers both pools).
    await stack.ddb.send(
      new PutCommand({
        TableName: stack.tables?.rules ?? 'email-rules',
        Item: { email_address: `fwd@${B}`, ooo_active: false, forwards: [`team@${A}`] },
      }),
    );
  });
  after(async () => {
    await killAllDaemons();
    await sink?.stop();
    await stack?.stop();
  });
  // A mail a failed test left behind (hidden until its 30 s visibility timeout) would fail the next tests' "queue
  // is empty" and "only this test's messages" checks too: each test starts from empty queues.
  beforeEach(async () => {
    for (const domain of [A, B])
      await stack.sqs.send(new PurgeQueueCommand({ QueueUrl: queueUrlOf(domain) }));
  });

  describe('two domains, one shared pool', () => {
    let daemon: DaemonProcess;
    const ids: Record<string, string[]> = {};
    const FORWARDS = 5;

    before(async () => {
      daemon = await spawnDaemon({ domains: [A, B], env: daemonEnv() });
      await pollEndpoint(daemon, '/ready', (r) => r.status === 200, 10_000, 'the daemon to become ready');
    });
    after(() => daemon?.stop());

    it('delivers 20 mails per domain concurrently, with at most SMTP_MAX_CONNECTIONS connections', async (t) => {
      sink.clear();
      // Busy connections: with 2 × 10 messages in flight the pool is the bottleneck, so its bound is tested.
      sink.setDataDelay(100);
      try {
        [ids[A], ids[B]] = await Promise.all([
          putMails(A, 20),
          putMails(B, 20, (i) => (i < FORWARDS ? `fwd@${B}` : `user@${B}`)),
        ]);
        const all = [...(ids[A] ?? []), ...(ids[B] ?? [])];
        await waitDelivered(all, 20_000, 'all 40 mails at the sink');
        await waitUntil(
          () => sink.messages.filter((m) => m.to.includes(`team@${A}`)).length === FORWARDS,
          5_000,
          'forwards',
        );
      } finally {
        sink.setDataDelay(0);
      }
      const counts = deliveryCounts([...(ids[A] ?? []), ...(ids[B] ?? [])]);
      assert.ok(
        [...counts.values()].every((n) => n === 1),
        'every mail delivered exactly once',
      );
      const byDomain = (domain: string) =>
        sink.messages.filter(
          (m) => testIdOf(m) && m.to.every((to) => to.endsWith(`@${domain}`)) && !m.to.includes(`team@${A}`),
        ).length;
      assert.equal(byDomain(A), 20);
      assert.equal(byDomain(B), 20);
      assert.ok(
        sink.maxConcurrentConnections <= MAX_CONNECTIONS,
        `at most ${MAX_CONNECTIONS} connections to the mail server, saw ${sink.maxConcurrentConnections}`,
      );
      assert.ok(sink.maxConcurrentConnections >= 2, 'the pool was actually used in parallel');
      t.diagnostic(
        `connections: at most ${sink.maxConcurrentConnections} open at once, ${sink.connections} opened in all`,
      );
      await Promise.all([emptyQueue(A), emptyQueue(B)]);
    });

    it('leaks no mail addresses or contents on /health or /metrics', async () => {
      const { text } = await scrape(daemon);
      const health = await daemon.request('GET', '/health');
      // Every mail of this group went to user@<domain> from sender@external.test with a known subject.
      for (const body of [text, health.body]) {
        assert.doesNotMatch(body, /@/, 'no address');
        assert.doesNotMatch(body, /external\.test|Subject|X-Test/i, 'no sender domain or mail content');
      }
    });

    it('reports what it processed on /metrics, process metrics once', async () => {
      const { text, samples } = await scrape(daemon);
      for (const domain of [A, B]) {
        assert.equal(
          metric(samples, 'ses_worker_emails_processed_total', { domain, outcome: 'delivered' }),
          20,
          domain,
        );
        assert.equal(metric(samples, 'ses_worker_processing_seconds_count', { domain }), 20, domain);
        assert.equal(metric(samples, 'ses_worker_in_flight_messages', { domain }), 0, domain);
        assert.notEqual(
          metric(samples, 'ses_worker_queue_messages', { domain }),
          undefined,
          `queue size of ${domain}`,
        );
        assert.equal(
          metric(samples, 'ses_worker_processing_seconds_bucket', { domain, le: '+Inf' }),
          20,
          domain,
        );
      }
      assert.equal(
        metric(samples, 'ses_worker_forwards_sent_total', { domain: B, route: 'internal' }),
        FORWARDS,
      );
      assert.equal(metric(samples, 'ses_worker_smtp_connections_max'), MAX_CONNECTIONS);
      assert.notEqual(metric(samples, 'ses_worker_smtp_connections_in_use'), undefined);
      // Default metrics come from the main thread only, not once per thread (or summed over threads).
      assert.equal(samples.filter((s) => s.name === 'process_resident_memory_bytes').length, 1);
      assert.equal(text.match(/^# TYPE process_resident_memory_bytes /gm)?.length, 1);
      const rss = metric(samples, 'process_resident_memory_bytes') ?? 0;
      assert.ok(rss > 10e6 && rss < 4e9, `plausible RSS, got ${rss}`);
      for (const name of [
        'ses_worker_emails_processed_total',
        'ses_worker_bounces_rewritten_total',
        'ses_worker_autoreplies_sent_total',
        'ses_worker_forwards_sent_total',
        'ses_worker_blocked_total',
        'ses_worker_in_flight_messages',
        'ses_worker_queue_messages',
        'ses_worker_processing_seconds',
        'ses_worker_poller_restarts_total',
      ]) {
        assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is declared`);
      }
    });

    // Skipped without promtool on a developer's machine; in CI (`.ci/run` installs it) a missing promtool fails.
    it('serves /metrics that promtool accepts', { skip: skipUnlessCi(promtoolMissing) }, async () => {
      assert.equal(promtoolMissing, undefined, `CI is set, so this check must run, but ${promtoolMissing}`);
      const { text } = await scrape(daemon);
      const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      assert.equal(result.status, 0, `promtool check metrics:\n${result.stdout}${result.stderr}`);
    });

    it('reports a crashed poller thread as unhealthy, restarts it and delivers again', async () => {
      const healthy = await daemon.request('GET', '/health');
      assert.equal(healthy.status, 200, healthy.body);
      for (const domain of [A, B]) {
        const entry = domainHealth(healthy, domain);
        assert.equal(entry.state, 'polling');
        assert.ok(
          entry.lastPollAt && Date.now() - Date.parse(entry.lastPollAt) < 10_000,
          `recent poll: ${entry.lastPollAt}`,
        );
      }

      const crash = await daemon.request('POST', `/debug/crash?domain=${A}`);
      const crashedAt = Date.now();
      assert.equal(crash.status, 202, crash.body);
      const down = await pollEndpoint(
        daemon,
        '/health',
        (r) => r.status === 503,
        5_000,
        'a 503 after the crash',
      );
      assert.match(domainHealth(down, A).state, /^(dead|restarting)$/);
      assert.equal(domainHealth(down, B).state, 'polling', 'the other domain is not affected');
      await daemon.waitForLog(
        (l) => l.msg === 'poller thread died; restarting' && l.domain === A,
        5_000,
        'the restart log',
      );

      const up = await pollEndpoint(
        daemon,
        '/health',
        (r) => r.status === 200,
        15_000,
        'a 200 after the restart',
      );
      assert.equal(domainHealth(up, A).state, 'polling');
      assert.equal(domainHealth(up, A).restarts, 1);
      const { samples } = await scrape(daemon);
      assert.equal(metric(samples, 'ses_worker_poller_restarts_total', { domain: A }), 1);

      await outlastDeadPoll(crashedAt);
      const [id] = await putMails(A, 1);
      await waitDelivered([id as string], 10_000, 'mail for the restarted domain');
      await emptyQueue(A);
      assert.equal(daemon.exit, undefined, 'the daemon itself kept running');
    });

    it('does not sit out a restart backoff when told to stop', async () => {
      // A second crash within two minutes backs off 1-2 s; SIGTERM during that pause must not wait for it.
      const crash = await daemon.request('POST', `/debug/crash?domain=${A}`);
      assert.equal(crash.status, 202, crash.body);
      const died = await daemon.waitForLog(
        (l) => l.msg === 'poller thread died; restarting' && l.domain === A && l.restarts === 2,
        5_000,
        'the second restart log',
      );
      const restartInMs = Number(died.restartInMs);
      assert.ok(restartInMs >= 1_000, `second backoff is at least 1 s, got ${restartInMs}`);
      daemon.kill('SIGTERM');
      assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.describe());
      const stopped = daemon.logs.find((l) => l.msg === 'stopped');
      assert.ok(stopped?.time && died.time, 'timestamps');
      const shutdownMs = Date.parse(stopped.time) - Date.parse(died.time);
      assert.ok(
        shutdownMs < restartInMs,
        `stopped after ${shutdownMs} ms, before the ${restartInMs} ms backoff ended`,
      );
      assert.ok(
        !daemon.logs.some(
          (l) =>
            l.msg ===
            'grace period over: stopping threads; unfinished messages reappear after their visibility timeout',
        ),
      );
    });
  });

  it('reports SMTP connections in use, not sends waiting for a connection', async (t) => {
    // Its own daemon and mail server, so what it sees does not depend on an earlier test. 15 mails per domain with
    // 10 in flight per domain and a 200 ms DATA keep more sends than connections (4 mailbox + 1 internal) going.
    const busy = await startSmtpSink({ dataDelayMs: 200 });
    const daemon = await spawnDaemon({
      domains: [A, B],
      env: daemonEnv({ SMTP_PORT: String(busy.port), INTERNAL_SMTP_PORT: String(busy.port) }),
    });
    try {
      const ids = [...(await putMails(A, 15)), ...(await putMails(B, 15))];
      const scrapes: Array<{ inUse: number; waiting: number }> = [];
      const allDelivered = () =>
        new Set(busy.messages.map(testIdOf).filter((id) => id !== undefined)).size >= ids.length;
      while (!allDelivered()) {
        const { samples } = await scrape(daemon);
        const inUse = metric(samples, 'ses_worker_smtp_connections_in_use');
        const waiting = metric(samples, 'ses_worker_smtp_sends_waiting');
        assert.ok(inUse !== undefined && waiting !== undefined, 'both pool gauges are exported');
        scrapes.push({ inUse, waiting });
        assert.ok(
          scrapes.length < 2_000,
          `not all ${ids.length} mails delivered after ${scrapes.length} scrapes`,
        );
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const maxInUse = Math.max(...scrapes.map((s) => s.inUse));
      const contended = scrapes.filter((s) => s.waiting > 0 && s.inUse + s.waiting > MAX_CONNECTIONS);
      t.diagnostic(
        `${scrapes.length} scrapes: in use at most ${maxInUse}; ${contended.length} with sends waiting beyond ` +
          `${MAX_CONNECTIONS} connections`,
      );
      // The gauge moved (a zero-only gauge passes any upper bound) and stayed within the pool's bound ...
      assert.ok(maxInUse >= 1, 'no scrape saw a connection in use');
      assert.ok(
        maxInUse <= MAX_CONNECTIONS,
        `in use reached ${maxInUse} with ${MAX_CONNECTIONS} connections`,
      );
      // ... while sends were waiting: a gauge that counted them would have gone over the bound in those scrapes.
      assert.ok(contended.length > 0, 'no scrape saw more sends than connections; the bound was not tested');
      await Promise.all([emptyQueue(A), emptyQueue(B)]);
    } finally {
      await daemon.stop();
      await busy.stop();
    }
  });

  it('finishes in-flight mail on SIGTERM, exits 0, and loses or duplicates nothing', async (t) => {
    const GRACE_SECONDS = 10;
    sink.clear();
    sink.setDataDelay(300);
    let daemon: DaemonProcess | undefined;
    try {
      daemon = await spawnDaemon({
        domains: [A, B],
        // Fewer slots than mails, so the stop comes while some are still queued and some in flight.
        env: daemonEnv({ SHUTDOWN_GRACE_SECONDS: String(GRACE_SECONDS), MESSAGE_CONCURRENCY: '5' }),
      });
      const ids = [...(await putMails(A, 15)), ...(await putMails(B, 15))];
      await waitUntil(() => deliveryCounts(ids).size >= 5, 15_000, 'the first deliveries', 20);

      const signalledAt = Date.now();
      daemon.kill('SIGTERM');
      // While in-flight messages drain (300 ms per DATA), /ready says no.
      const draining = await pollEndpoint(
        daemon,
        '/ready',
        (r) => r.status === 503,
        2_000,
        '/ready 503 while draining',
      );
      assert.equal(healthBody(draining).draining, true);
      const exit = await Promise.race([
        daemon.exited,
        new Promise<undefined>((resolve) =>
          setTimeout(() => resolve(undefined), (GRACE_SECONDS + 5) * 1000).unref(),
        ),
      ]);
      assert.ok(exit, `exited within the grace period\n${daemon.describe()}`);
      assert.deepEqual(exit, { code: 0, signal: null }, daemon.describe());
      assert.ok(Date.now() - signalledAt < GRACE_SECONDS * 1000, 'drained before the grace period ran out');
      assert.ok(
        daemon.logs.some((l) => l.msg === 'stopped'),
        'logged its final line',
      );
      assert.ok(!daemon.logs.some((l) => /grace period over/.test(l.msg)), 'nothing was cut off');

      // Nothing duplicated; whatever was delivered is gone from the queue, whatever was not is still there.
      const delivered = deliveryCounts(ids);
      assert.ok(delivered.size < ids.length, 'SIGTERM came in the middle of the batch');
      assert.ok(
        [...delivered.values()].every((n) => n === 1),
        'no mail delivered twice',
      );
      const remaining = new Set<string>();
      const stranded: Array<{ queueUrl: string; receiptHandle: string }> = [];
      for (const domain of [A, B]) {
        const { waiting, inFlight } = queuedMessages(domain, ids);
        for (const { id, receiptHandle } of [...waiting, ...inFlight]) {
          assert.ok(id, `only this test's messages are queued on ${domain}`);
          remaining.add(id);
          if (receiptHandle !== undefined) stranded.push({ queueUrl: queueUrlOf(domain), receiptHandle });
        }
      }
      for (const id of ids) {
        assert.ok(
          delivered.has(id) !== remaining.has(id),
          `${id} is either delivered (and deleted) or still queued`,
        );
      }
      // A long poll cut short by the shutdown may leave what SQS had already handed out in flight; the second
      // daemon should not have to wait for the visibility timeout to get it.
      if (stranded.length > 0)
        t.diagnostic(`${stranded.length} message(s) left in flight by the aborted long poll`);
      for (const { queueUrl, receiptHandle } of stranded) {
        await stack.sqs.send(
          new ChangeMessageVisibilityCommand({
            QueueUrl: queueUrl,
            ReceiptHandle: receiptHandle,
            VisibilityTimeout: 0,
          }),
        );
      }

      // A second daemon delivers the rest: every mail exactly once overall.
      sink.setDataDelay(0);
      const second = await spawnDaemon({ domains: [A, B], env: daemonEnv() });
      await waitDelivered(ids, 15_000, 'the rest, by a second daemon');
      await Promise.all([emptyQueue(A), emptyQueue(B)]);
      assert.ok(
        [...deliveryCounts(ids).values()].every((n) => n === 1),
        'no mail delivered twice overall',
      );
      second.kill('SIGTERM');
      assert.equal((await second.exited).code, 0);
    } finally {
      sink.setDataDelay(0);
      await daemon?.stop();
    }
  });

  it('keeps serving the other domains when a queue does not exist', async () => {
    sink.clear();
    const daemon = await spawnDaemon({ domains: [A, B, C], env: daemonEnv() });
    try {
      const logged = await daemon.waitForLog(
        (l) => l.level === 'error' && l.domain === C && JSON.stringify(l).includes('c-test-queue'),
        10_000,
        'an error naming the missing queue',
      );
      assert.match(JSON.stringify(logged), /queue c-test-queue does not exist/);

      const answer = await pollEndpoint(
        daemon,
        '/health',
        (r) => healthBody(r).domains.every((d) => d.state === (d.domain === C ? 'error' : 'polling')),
        10_000,
        'a and b polling, c in error',
      );
      // A missing queue is a configuration problem a restart does not fix: /health stays 200 (liveness) and
      // names it; /ready says no.
      assert.equal(answer.status, 200, answer.body);
      assert.match(domainHealth(answer, C).lastError ?? '', /queue c-test-queue does not exist/);
      const ready = await daemon.request('GET', '/ready');
      assert.equal(ready.status, 503, ready.body);

      const ids = [...(await putMails(A, 3)), ...(await putMails(B, 3))];
      await waitDelivered(ids, 10_000, 'mail of the domains that have a queue');
      await Promise.all([emptyQueue(A), emptyQueue(B)]);
      assert.equal(daemon.exit, undefined, 'the daemon is still running');
      await stopGracefully(daemon);
    } finally {
      await daemon.stop();
    }
  });

  it('is ready only once the mail server answers', async () => {
    const late = await startSmtpSink();
    await late.down();
    const daemon = await spawnDaemon({
      domains: [A, B],
      env: daemonEnv({ SMTP_PORT: String(late.port), INTERNAL_SMTP_PORT: String(late.port) }),
    });
    try {
      const notReady = await pollEndpoint(
        daemon,
        '/ready',
        // Mail received now could only fail, so the pollers wait without receiving until the server answers.
        (r) => healthBody(r).domains.every((d) => d.state === 'paused'),
        10_000,
        'both pollers paused for the mail server',
      );
      assert.equal(notReady.status, 503, notReady.body);
      assert.equal(healthBody(notReady).mailServer, 'down');
      assert.ok(
        healthBody(notReady).domains.every((d) => d.pausedReason === 'mail server unreachable'),
        notReady.body,
      );
      assert.equal((await daemon.request('GET', '/health')).status, 200, 'alive, just not ready');

      await late.up();
      const upAt = Date.now();
      const ready = await pollEndpoint(
        daemon,
        '/ready',
        (r) => r.status === 200,
        6_000,
        '/ready 200 after the server came up',
      );
      assert.equal(healthBody(ready).mailServer, 'up');
      assert.ok(Date.now() - upAt < 5_000, 'noticed within a few seconds');
      await daemon.waitForLog((l) => l.msg === 'mail server answered', 1_000);
      await stopGracefully(daemon);
    } finally {
      await daemon.stop();
      await late.stop();
    }
  });

  it('stops promptly when signalled while its pollers are still starting', async () => {
    const daemon = await spawnDaemon({ domains: [A, B], env: daemonEnv({ SHUTDOWN_GRACE_SECONDS: '8' }) });
    try {
      // The threads are still loading and resolving their queues: a stop must not be lost on the way.
      const signalledAt = Date.now();
      await stopGracefully(daemon);
      const tookMs = Date.now() - signalledAt;
      assert.ok(
        tookMs < 5_000,
        `stopped after ${tookMs} ms, not at the end of the grace period\n${daemon.describe()}`,
      );
      assert.ok(!daemon.logs.some((l) => /grace period over/.test(l.msg)), daemon.describe());
    } finally {
      await daemon.stop();
    }
  });

  it('exits at once on a second signal, leaving unfinished mail in the queue', async () => {
    const slow = await startSmtpSink({ dataDelayMs: 5_000 });
    const daemon = await spawnDaemon({
      domains: [A, B],
      env: daemonEnv({
        SMTP_PORT: String(slow.port),
        INTERNAL_SMTP_PORT: String(slow.port),
        SHUTDOWN_GRACE_SECONDS: '20',
      }),
    });
    try {
      const ids = await putMails(A, 3);
      await waitUntil(() => slow.openConnections > 0, 10_000, 'a delivery in progress', 20);
      await waitUntil(
        () => queuedMessages(A, ids).inFlight.filter((m) => m.id).length === ids.length,
        5_000,
        'all three received',
        20,
      );
      daemon.kill('SIGTERM');
      await daemon.waitForLog((l) => l.msg.startsWith('shutting down'), 2_000);
      const secondAt = Date.now();
      daemon.kill('SIGINT');
      const exit = await daemon.exited;
      assert.ok(Date.now() - secondAt < 1_500, 'exited at once');
      assert.equal(exit.code, 130, daemon.describe());
      assert.equal(slow.messages.length, 0, 'nothing was delivered');
      // Not lost: the three messages are still in the queue, in flight until their visibility timeout.
      const { waiting, inFlight } = queuedMessages(A, ids);
      const queued = [...waiting, ...inFlight].map((m) => m.id).filter((id) => id !== undefined);
      assert.deepEqual(queued.sort(), [...ids].sort());
    } finally {
      await daemon.stop();
      await slow.stop();
    }
  });
});
