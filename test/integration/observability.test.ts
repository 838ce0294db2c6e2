/**
 * The alerts and the dashboard, proven against a real Prometheus (Debian's `prometheus` package) scraping the BUILT
 * daemon while it processes mail: every alert and recording rule loads and evaluates without error, every dashboard
 * query parses and returns data, the template variables resolve to the domains and pods, every metric the rules and
 * panels name is one the daemon exports, and the metrics table of docs/metrics.md matches /metrics. Metrics that
 * are named before the daemon exports them (test/harness/metric-names.ts, AWAITED_METRICS) are excused only while
 * no registry declares them.
 *
 * Prometheus runs on a free 127.0.0.1 port with a temporary config and data directory, and is stopped in `after`.
 * Without the binary the file is skipped with the reason, except under CI=true, where it fails.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { parse } from 'yaml';
import { readBuildInfo } from '../../src/daemon/build-info.ts';
import { startStack, waitUntil, type TestStack } from '../harness/emulators.ts';
import { assertBuilt, killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { rawMail } from '../harness/faults.ts';
import { putMail, sesBounceDsn } from '../harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';
import { commandProblem, toolGate } from '../harness/required-tool.ts';
import { declaredMetrics, stillAwaited, type DeclaredMetric } from '../harness/metric-names.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RULES_FILE = path.join(ROOT, 'deploy/prometheus/alerts.yaml');
const DASHBOARD_FILE = path.join(ROOT, 'deploy/grafana/unified-worker.json');
const A = 'obs-a.test';
const B = 'obs-b.test';
const SCRAPE_SECONDS = 2;

const gate = toolGate(
  'prometheus',
  commandProblem('prometheus', ['--version']),
  'install it with `apt-get install -y --no-install-recommends prometheus` (Debian)',
);
const skip = { skip: gate.skip };

// ---------------------------------------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------------------------------------

interface PromResponse<T> {
  status: 'success' | 'error';
  data: T;
  error?: string;
  errorType?: string;
}
interface PromSeries {
  metric: Record<string, string>;
  value?: [number, string];
  values?: Array<[number, string]>;
}
interface PromRule {
  name: string;
  query: string;
  type: 'alerting' | 'recording';
  health: string;
  lastError?: string;
  lastEvaluation: string;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

class Prometheus {
  private readonly output: string[] = [];
  private constructor(
    readonly child: ChildProcess,
    readonly base: string,
    readonly dir: string,
  ) {
    child.stdout?.on('data', (c: Buffer) => this.output.push(c.toString()));
    child.stderr?.on('data', (c: Buffer) => this.output.push(c.toString()));
  }

  static async start(target: string): Promise<Prometheus> {
    const dir = mkdtempSync(path.join(tmpdir(), 'unified-worker-prometheus-'));
    const config = path.join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        `  scrape_interval: ${SCRAPE_SECONDS}s`,
        `  scrape_timeout: ${SCRAPE_SECONDS}s`,
        `  evaluation_interval: ${SCRAPE_SECONDS}s`,
        'rule_files:',
        `  - ${JSON.stringify(RULES_FILE)}`,
        'scrape_configs:',
        // The job name the rules' SesWorkerTargetDown expects.
        '  - job_name: unified-worker',
        '    static_configs:',
        `      - targets: [${JSON.stringify(target)}]`,
        '',
      ].join('\n'),
    );
    const port = await freePort();
    const child = spawn(
      'prometheus',
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const prometheus = new Prometheus(child, `http://127.0.0.1:${port}`, dir);
    process.once('exit', () => child.kill('SIGKILL'));
    await waitUntil(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited: ${prometheus.describe()}`);
        return fetch(`${prometheus.base}/-/ready`).then(
          (r) => r.ok,
          () => false,
        );
      },
      30_000,
      'prometheus ready',
      200,
    );
    return prometheus;
  }

  describe(): string {
    return this.output.join('').slice(-3000);
  }

  async api<T>(pathAndQuery: string, params: Record<string, string> = {}): Promise<PromResponse<T>> {
    const url = new URL(pathAndQuery, this.base);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const response = await fetch(url);
    return (await response.json()) as PromResponse<T>;
  }

  query(expr: string): Promise<PromResponse<{ resultType: string; result: PromSeries[] }>> {
    return this.api('/api/v1/query', { query: expr });
  }

  queryRange(
    expr: string,
    seconds: number,
  ): Promise<PromResponse<{ resultType: string; result: PromSeries[] }>> {
    const end = Date.now() / 1000;
    return this.api('/api/v1/query_range', {
      query: expr,
      start: String(end - seconds),
      end: String(end),
      step: String(SCRAPE_SECONDS),
    });
  }

  async rules(): Promise<PromRule[]> {
    const answer = await this.api<{ groups: Array<{ rules: PromRule[] }> }>('/api/v1/rules');
    return answer.data.groups.flatMap((g) => g.rules);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The dashboard and the rules as data
// ---------------------------------------------------------------------------------------------------------------------

interface Target {
  expr: string;
  refId: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query: unknown;
  definition?: string;
  datasource?: { type: string; uid: string };
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Variable[] };
  [key: string]: unknown;
}

const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = allPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, ...t })));
const rules = (
  parse(readFileSync(RULES_FILE, 'utf8')) as { groups: Array<{ rules: Array<Record<string, string>> }> }
).groups.flatMap((g) => g.rules);
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));

/** Grafana's own variables and what they stand for here: enough range for a rate over the mail just processed. */
function substitute(expr: string, rateInterval: string): string {
  return expr
    .replaceAll('$__rate_interval', rateInterval)
    .replaceAll('$__interval', `${SCRAPE_SECONDS}s`)
    .replaceAll('$__range', '5m')
    .replaceAll('$domain', '.+')
    .replaceAll('$instance', '.+');
}

/** Metric names an expression reads (histogram series map to their family). */
function metricNames(expr: string): string[] {
  const names =
    expr.match(/\b(?:domain:)?ses_worker_[a-z_:0-9]+|\bprocess_[a-z_]+|\bnodejs_[a-z_]+|\bup\b/g) ?? [];
  return [...new Set(names.map((n) => (recorded.has(n) ? n : n.replace(/_(bucket|sum|count)$/, ''))))];
}

// ---------------------------------------------------------------------------------------------------------------------
// /metrics as data
// ---------------------------------------------------------------------------------------------------------------------

interface Family {
  type: string;
  /** Label names seen on samples (without `le`). */
  labels: Set<string>;
  samples: number;
}

function families(text: string): Map<string, Family> {
  const out = new Map<string, Family>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      out.set(type[1]!, { type: type[2]!, labels: new Set(), samples: 0 });
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line);
    if (!sample) continue;
    const family = out.get(sample[1]!) ?? out.get(sample[1]!.replace(/_(bucket|sum|count)$/, ''));
    if (!family) continue;
    family.samples++;
    for (const match of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) {
      if (match[1] !== 'le') family.labels.add(match[1]!);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------

describe('alerts and dashboard against a real Prometheus scraping the daemon', () => {
  let stack: TestStack;
  let sink: SmtpSink;
  let daemon: DaemonProcess;
  let prometheus: Prometheus | undefined;
  let metricsText = '';
  let exported = new Map<string, Family>();
  let declared = new Map<string, DeclaredMetric>();
  let awaited = new Set<string>();
  let startedAt = 0;

  before(async () => {
    if (gate.skip) return;
    gate.assertAvailable();
    assertBuilt();
    // With dead-letter queues, as setup and the AWS app create them: the dashboard has panels for them.
    stack = await startStack({ tables: true, domains: [A, B], queueOptions: { withDlq: true } });
    sink = await startSmtpSink({
      rcptReplies: { [`nobody@${A}`]: { code: 550, message: '5.1.1 User unknown' } },
    });
    const put = (TableName: string, Item: Record<string, unknown>) =>
      stack.ddb.send(new PutCommand({ TableName, Item }));
    await put('email-rules', { email_address: `ooo@${A}`, ooo_active: true, ooo_message: 'Back on Monday.' });
    await put('email-rules', {
      email_address: `fwd@${A}`,
      ooo_active: false,
      forwards: [`team@${B}`, 'friend@elsewhere.test'],
    });
    await put('email-blocked-senders', { email_address: `blocks@${A}`, blocked_patterns: ['*@spam.test'] });
    await put('ses-outbound-messages', {
      MessageId: '0100018cabc-obs-1',
      original_source: `jane@${A}`,
      bouncedRecipients: ['failed@remote.test'],
    });
    daemon = await spawnDaemon({
      domains: [A, B],
      env: {
        ...stack.env,
        SMTP_HOST: '127.0.0.1',
        SMTP_PORT: String(sink.port),
        INTERNAL_SMTP_PORT: String(sink.port),
        RULES_CACHE_SECONDS: '0',
      },
    });
    prometheus = await Prometheus.start(`127.0.0.1:${daemon.metricsPort}`);
    startedAt = Date.now();
    // A first scrape before the mail, so the counters' increase is visible to rate().
    await waitUntil(
      async () => ((await prometheus!.query('ses_worker_poller_up')).data.result.length ?? 0) === 2,
      30_000,
      'the first scrape',
      200,
    );

    // Two waves with scrapes in between: a labelled counter appears at its first increment, so only the second
    // wave shows up in rate() and increase() — as it does for a worker that has been running for a while.
    let processed = 0;
    for (const wave of [1, 2]) {
      const ids = await sendWave(wave);
      for (const id of ids) {
        await daemon.waitForLog(
          (l) => l.sesMessageId === id && typeof l.disposition === 'string',
          30_000,
          id,
        );
      }
      processed += ids.length;
      await waitUntil(
        () => sink.messages.filter((m) => m.to.includes(`team@${B}`)).length === wave,
        10_000,
        'the internal forward',
      );
      await waitUntil(
        async () => {
          const answer = await prometheus!.query('sum(ses_worker_emails_processed_total)');
          return Number(answer.data.result[0]?.value?.[1] ?? 0) >= processed;
        },
        30_000,
        `Prometheus to scrape wave ${wave}`,
        200,
      );
      // Two more scrapes, so every new series has the two samples rate() needs.
      await new Promise((resolve) => setTimeout(resolve, 2 * SCRAPE_SECONDS * 1000 + 500));
    }
    const scrapedAt = Date.now();
    await waitUntil(
      async () => (await prometheus!.rules()).every((r) => Date.parse(r.lastEvaluation) > scrapedAt),
      30_000,
      'every rule evaluated after the last scrape',
      200,
    );
    metricsText = await daemon.metrics();
    exported = families(metricsText);
    declared = await declaredMetrics();
    awaited = stillAwaited(declared);
  });

  /** One mail of every kind the dashboard shows, plus plain deliveries (more for A than for B). */
  async function sendWave(wave: number): Promise<string[]> {
    const mails: Array<{ to: string; from?: string; raw?: Buffer }> = [
      ...Array.from({ length: 6 }, (_, i) => ({ to: `user${i}@${A}` })),
      ...Array.from({ length: 3 }, (_, i) => ({ to: `user${i}@${B}` })),
      { to: `nobody@${A}` },
      { to: `blocks@${A}`, from: 'offers@spam.test' },
      // A new sender each wave: a second reply to the same sender within the interval is suppressed.
      { to: `ooo@${A}`, from: `colleague${wave}@external.test` },
      { to: `fwd@${A}` },
      { to: `jane@${A}`, from: 'MAILER-DAEMON@amazonses.com', raw: sesBounce(`jane@${A}`, wave) },
    ];
    return Promise.all(
      mails.map(async (m, i) => {
        const from = m.from ?? 'sender@external.test';
        const result = await putMail(stack, {
          domain: m.to.split('@')[1]!,
          raw: m.raw ?? rawMail(`obs-${wave}-${i}`, m.to, { from }),
          recipients: [m.to],
          source: from,
          shape: 'sns-s3',
        });
        return result.messageId;
      }),
    );
  }

  after(async () => {
    await prometheus?.stop();
    await killAllDaemons();
    await sink?.stop();
    await stack?.stop();
  });

  it('Prometheus scrapes the daemon and loads every rule of alerts.yaml', skip, async () => {
    const targets = await prometheus!.api<{
      activeTargets: Array<{ health: string; labels: Record<string, string> }>;
    }>('/api/v1/targets');
    assert.deepEqual(
      targets.data.activeTargets.map((t) => [t.labels.job, t.health]),
      [['unified-worker', 'up']],
    );
    const loaded = await prometheus!.rules();
    assert.deepEqual(loaded.map((r) => r.name).sort(), rules.map((r) => r.alert ?? r.record).sort());
  });

  it(
    'every alert and recording rule evaluates without error, in the rule manager and through the query API',
    skip,
    async () => {
      for (const rule of await prometheus!.rules()) {
        assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError ?? ''}`);
        const answer = await prometheus!.query(rule.query);
        assert.equal(answer.status, 'success', `${rule.name}: ${answer.error ?? ''}`);
      }
      // The daemon is healthy: none of the alerts about a dead worker, poller or mail server may be firing or pending.
      const alerts = await prometheus!.api<{
        alerts: Array<{ labels: Record<string, string>; state: string }>;
      }>('/api/v1/alerts');
      const bad = alerts.data.alerts.filter((a) =>
        ['SesWorkerDown', 'SesWorkerTargetDown', 'SesWorkerPollerDown', 'SesWorkerMailServerDown'].includes(
          a.labels.alertname ?? '',
        ),
      );
      assert.deepEqual(bad, []);
    },
  );

  it(
    'every metric the rules and the dashboard read is one the daemon exports (or a recording rule)',
    skip,
    () => {
      const known = new Set([...exported.keys(), ...recorded, 'up', ...awaited]);
      const used = [...rules.map((r) => r.expr ?? ''), ...queries.map((q) => q.expr)].flatMap(metricNames);
      for (const name of new Set(used)) assert.ok(known.has(name), `${name} is not on /metrics`);
      // And the other way round: every worker metric is on the dashboard.
      const onDashboard = new Set(queries.flatMap((q) => metricNames(q.expr)));
      for (const name of exported.keys()) {
        if (name.startsWith('ses_worker_')) assert.ok(onDashboard.has(name), `${name} has no panel`);
      }
    },
  );

  it('the dashboard loads by file provisioning: a datasource variable, no __inputs, well-formed panels', () => {
    assert.equal(dashboard.__inputs, undefined, 'file provisioning does not resolve __inputs');
    assert.ok(dashboard.uid && dashboard.title && dashboard.schemaVersion >= 36);
    const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    assert.deepEqual(variables.get('datasource')?.type, 'datasource');
    assert.equal(variables.get('datasource')?.query, 'prometheus');
    const ids = allPanels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    for (const panel of allPanels) {
      assert.ok(panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title} fits the 24-column grid`);
      if (panel.type === 'row') continue;
      assert.ok(['timeseries', 'stat'].includes(panel.type), `${panel.title}: ${panel.type}`);
      assert.deepEqual(panel.datasource, { type: 'prometheus', uid: '${datasource}' }, panel.title);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title} has queries`);
      const refIds = (panel.targets ?? []).map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${panel.title}: refIds unique`);
      for (const t of panel.targets ?? []) {
        assert.deepEqual(t.datasource, panel.datasource, `${panel.title} ${t.refId}`);
        for (const [, name] of t.expr.matchAll(/\$(\w+)/g)) {
          assert.ok(
            variables.has(name!) || name!.startsWith('__'),
            `${panel.title}: $${name} is not defined`,
          );
        }
      }
    }
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      assert.deepEqual(v.datasource, { type: 'prometheus', uid: '${datasource}' }, v.name);
    }
    const titles = allPanels.map((p) => p.title.toLowerCase()).join(' | ');
    for (const topic of [
      'per domain',
      'outcomes',
      'processing time',
      'in flight',
      'byte budget',
      'smtp pool',
      'backlog',
      'restarts',
      'forwards',
      'effects',
      'dead-letter',
      'versions',
    ]) {
      assert.ok(titles.includes(topic), `a panel on ${topic}`);
    }
  });

  it('the template variables resolve to the domains and the pod', skip, async () => {
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      const match = /^label_values\((\w+), (\w+)\)$/.exec(v.definition ?? '');
      assert.ok(match, `${v.name}: ${v.definition}`);
      const answer = await prometheus!.api<string[]>(`/api/v1/label/${match[2]}/values`, {
        'match[]': match[1]!,
      });
      assert.equal(answer.status, 'success');
      assert.deepEqual(answer.data, v.name === 'domain' ? [A, B] : [`127.0.0.1:${daemon.metricsPort}`]);
    }
  });

  it('every dashboard query parses and returns data', skip, async () => {
    const missing: string[] = [];
    for (const q of queries) {
      const answer = await prometheus!.queryRange(substitute(q.expr, `${4 * SCRAPE_SECONDS}s`), 30);
      assert.equal(answer.status, 'success', `${q.panel} ${q.refId}: ${answer.error ?? ''}\n${q.expr}`);
      const waiting = metricNames(q.expr).some((name) => awaited.has(name));
      if (answer.data.result.length === 0 && !waiting) missing.push(`${q.panel} ${q.refId}: ${q.expr}`);
    }
    assert.deepEqual(missing, [], 'queries without data');
  });

  it(
    'the panels show the mail just processed: throughput, outcomes, latency, effects, faults at zero',
    skip,
    async () => {
      const window = `${Math.ceil((Date.now() - startedAt) / 1000) + 30}s`;
      const panel = (title: string, refId = 'A') => {
        const q = queries.find((x) => x.panel === title && x.refId === refId);
        assert.ok(q, `panel ${title} ${refId}`);
        return prometheus!.query(substitute(q.expr, window)).then((a) => a.data.result);
      };
      const value = (s: PromSeries | undefined) => Number(s?.value?.[1]);
      const byLabel = (series: PromSeries[], label: string) =>
        Object.fromEntries(series.map((s) => [s.metric[label], value(s)]));

      const throughput = byLabel(await panel('Messages finished per domain'), 'domain');
      assert.ok(throughput[A]! > 0 && throughput[B]! > 0, JSON.stringify(throughput));
      assert.ok(throughput[A]! > throughput[B]!, 'obs-a got more mail');
      const outcomes = byLabel(await panel('Outcomes'), 'outcome');
      for (const outcome of ['delivered', 'invalid', 'blocked'])
        assert.ok(outcomes[outcome]! > 0, `${outcome}: ${JSON.stringify(outcomes)}`);
      const p95 = value((await panel('Processing time', 'B'))[0]);
      assert.ok(p95 > 0 && p95 < 60, `p95 ${p95}`);
      const forwards = (await panel('Forwards and auto-replies sent')).map((s) => s.metric.route);
      assert.deepEqual(forwards.sort(), ['internal', 'ses']);
      assert.ok(value((await panel('Forwards and auto-replies sent', 'B'))[0]) > 0, 'auto-reply');
      assert.ok(value((await panel('Bounces rewritten, senders blocked'))[0]) > 0, 'bounce rewritten');
      assert.ok(value((await panel('Bounces rewritten, senders blocked', 'B'))[0]) > 0, 'blocked');
      const pool = await panel('SMTP pool', 'B');
      assert.equal(value(pool[0]), 5, 'SMTP_MAX_CONNECTIONS default');
      const restarts = byLabel(await panel('Poller restarts'), 'domain');
      assert.deepEqual(restarts, { [A]: 0, [B]: 0 });
    },
  );

  it(
    'docs/metrics.md documents every metric on /metrics with its type and labels, and nothing else',
    skip,
    () => {
      const page = readFileSync(path.join(ROOT, 'docs/metrics.md'), 'utf8');
      const documented = new Map<string, { type: string; labels: string[] }>();
      for (const [, name, type, labels] of page.matchAll(/^\| `(ses_worker_\w+)` \| (\w+) \| ([^|]*) \|/gm)) {
        documented.set(name!, {
          type: type!,
          labels: [...labels!.matchAll(/`(\w+)`/g)].map((m) => m[1]!).sort(),
        });
      }
      assert.ok(documented.size > 0, 'no metrics table in docs/metrics.md');
      const onMetrics = [...exported.keys()].filter((n) => n.startsWith('ses_worker_')).sort();
      const documentedNow = [...documented.keys()].filter((n) => !awaited.has(n)).sort();
      assert.deepEqual(documentedNow, onMetrics, 'docs/metrics.md table vs /metrics');
      assert.deepEqual([...declared.keys()].sort(), onMetrics, 'registries vs /metrics');
      for (const name of onMetrics) {
        const family = exported.get(name)!;
        const doc = documented.get(name)!;
        assert.equal(doc.type, family.type, `${name}: type`);
        assert.deepEqual(doc.labels, declared.get(name)!.labelNames, `${name}: labels`);
        if (family.samples > 0)
          assert.deepEqual([...family.labels].sort(), doc.labels, `${name}: labels on /metrics`);
      }
    },
  );

  it(
    'ses_worker_build_info names the running version, and promtool finds no naming problem on /metrics',
    skip,
    () => {
      const { version, commit } = readBuildInfo();
      assert.equal(
        version,
        (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
      );
      assert.match(
        metricsText,
        new RegExp(
          `^ses_worker_build_info\\{version="${version.replaceAll('.', '\\.')}",commit="(?:[0-9a-f]{7,40}|unknown)"\\} 1$`,
          'm',
        ),
      );
      assert.ok(commit.length > 0);
      // promtool's lint: counters end in _total, units are base units and in the name, no reserved suffixes.
      const lint = spawnSync('promtool', ['check', 'metrics'], { input: metricsText, encoding: 'utf8' });
      const problems = `${lint.stdout}${lint.stderr}`
        .split('\n')
        .filter((line) => line.startsWith('ses_worker_'));
      assert.deepEqual(problems, [], 'promtool check metrics');
    },
  );
});

/** An SES bounce (DSN) of mail `to` sent through SES; its original Message-ID is in the outbound table. */
function sesBounce(to: string, wave: number): Buffer {
  return sesBounceDsn({
    from: to,
    outboundMessageId: '0100018cabc-obs-1',
    bounceMessageId: `bounce-obs-${wave}`,
  });
}
