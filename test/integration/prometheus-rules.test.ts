/**
 * deploy/prometheus/alerts.yaml: `promtool check rules` and `promtool test rules` (alerts.test.yaml), every alert
 * tested both firing and not firing, each with a severity, a summary, a description and a runbook_url pointing to
 * its own section of docs/alerts.md (and every section there belongs to an alert).
 *
 * promtool comes with Debian's `prometheus` package (.ci/run installs it); without it the file is skipped with the
 * reason, except under CI=true, where it fails. Whether each expression runs against the daemon's real metrics is
 * test/integration/observability.test.ts's job.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { commandProblem, toolGate } from '../harness/required-tool.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RULES_DIR = path.join(ROOT, 'deploy/prometheus');
/** Where the alerts' runbook_url point: docs/alerts.md in the project's repository (alerts.yaml says how to change it). */
const RUNBOOK = 'https://github.com/your-org/unified-email-worker/blob/main/docs/alerts.md';
const gate = toolGate(
  'promtool',
  commandProblem('promtool', ['--version']),
  'install it with `apt-get install -y --no-install-recommends prometheus` (Debian)',
);
const skip = { skip: gate.skip };

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleTest {
  name: string;
  alert_rule_test?: Array<{ alertname: string; eval_time: string; exp_alerts: unknown[] }>;
}

const rules = (
  parse(readFileSync(path.join(RULES_DIR, 'alerts.yaml'), 'utf8')) as { groups: Array<{ rules: Rule[] }> }
).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r): r is Rule & { alert: string } => r.alert !== undefined);
const tests = (parse(readFileSync(path.join(RULES_DIR, 'alerts.test.yaml'), 'utf8')) as { tests: RuleTest[] })
  .tests;

function promtool(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync('promtool', args, { cwd: RULES_DIR, encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('Prometheus rules', () => {
  it('promtool check rules accepts alerts.yaml', skip, () => {
    gate.assertAvailable();
    const { status, output } = promtool('check', 'rules', 'alerts.yaml');
    assert.equal(status, 0, output);
    assert.match(output, new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('promtool test rules passes alerts.test.yaml', skip, () => {
    gate.assertAvailable();
    const { status, output } = promtool('test', 'rules', 'alerts.test.yaml');
    assert.equal(status, 0, output);
    assert.match(output, /SUCCESS/);
  });

  it('every alert has a unit test where it fires and one where it does not', () => {
    const cases = tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of alerts) {
      const mine = cases.filter((c) => c.alertname === alert);
      assert.ok(
        mine.some((c) => c.exp_alerts.length > 0),
        `${alert}: no test where it fires`,
      );
      assert.ok(
        mine.some((c) => c.exp_alerts.length === 0),
        `${alert}: no test where it stays quiet`,
      );
    }
    const known = new Set(alerts.map((a) => a.alert));
    for (const c of cases) assert.ok(known.has(c.alertname), `test of unknown alert ${c.alertname}`);
  });

  it('every alert has a severity, a summary, a description and a runbook_url to its section of docs/alerts.md', () => {
    const runbook = readFileSync(path.join(ROOT, 'docs/alerts.md'), 'utf8');
    const sections = [...runbook.matchAll(/^## (SesWorker\w+)$/gm)].map((m) => m[1]!);
    for (const a of alerts) {
      assert.match(a.labels?.severity ?? '', /^(critical|warning)$/, `${a.alert}: severity`);
      assert.ok((a.annotations?.summary ?? '').length > 10, `${a.alert}: summary`);
      assert.ok((a.annotations?.description ?? '').length > 30, `${a.alert}: description`);
      assert.ok(sections.includes(a.alert), `${a.alert}: no section in docs/alerts.md`);
      // GitHub's anchor of a heading made of one word is that word in lower case.
      assert.equal(
        a.annotations?.runbook_url,
        `${RUNBOOK}#${a.alert.toLowerCase()}`,
        `${a.alert}: runbook_url`,
      );
    }
    assert.deepEqual(sections.sort(), alerts.map((a) => a.alert).sort(), 'a section per alert, no other');
  });
});
