/**
 * deploy/aws from the root suite: the real `cdk synth` runs offline and writes exactly the committed templates
 * (deploy/aws/templates: the example.com + another.com deployment), with the AwsSolutions checks passing; the app's
 * own suites (deploy/aws/test: assertions against src/aws/resources.ts, and every CloudFormation limit at 1, 5, 50
 * and 200 domains) pass; no domains, or a bad option, is one line naming it.
 *
 * deploy/aws has its own install (`npm ci --prefix deploy/aws`, which .ci/run does), so the daemon's stays lean.
 * Without it the file is skipped with the reason, except under CI=true, where it fails.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { toolGate } from '../harness/required-tool.ts';

const APP = fileURLToPath(new URL('../../deploy/aws', import.meta.url));
const CDK = path.join(APP, 'node_modules/.bin/cdk');
const gate = toolGate(
  'the deploy/aws install',
  existsSync(path.join(APP, 'node_modules/aws-cdk-lib/package.json')) && existsSync(CDK)
    ? undefined
    : 'deploy/aws/node_modules is missing',
  'run `npm ci --prefix deploy/aws`',
);
const skip = { skip: gate.skip };

/** The environment of a child that must not think it runs inside this test runner. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CDK_DISABLE_CLI_TELEMETRY: 'true' };
  delete env.NODE_OPTIONS;
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function run(command: string, args: string[], timeoutMs = 300_000) {
  const result = spawnSync(command, args, {
    cwd: APP,
    env: childEnv(),
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}`, error: result.error };
}

const outdirs: string[] = [];
after(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

describe('deploy/aws', () => {
  it(
    '`cdk synth -c domains=example.com,another.com` writes the committed templates, AwsSolutions checks passing',
    skip,
    () => {
      gate.assertAvailable();
      const outdir = mkdtempSync(path.join(tmpdir(), 'unified-worker-synth-'));
      outdirs.push(outdir);
      const synth = run(CDK, [
        'synth',
        '--quiet',
        '--output',
        outdir,
        '-c',
        'domains=example.com,another.com',
      ]);
      assert.equal(synth.status, 0, `cdk synth failed: ${synth.error?.message ?? ''}\n${synth.output}`);
      const written = readdirSync(outdir)
        .filter((f) => f.endsWith('.template.json'))
        .sort();
      assert.deepEqual(written, [
        'unified-worker-another-com.template.json',
        'unified-worker-example-com.template.json',
        'unified-worker-policy-1.template.json',
        'unified-worker.template.json',
      ]);
      assert.deepEqual(readdirSync(path.join(APP, 'templates')).sort(), written);
      for (const file of written) {
        const synthesized: unknown = JSON.parse(readFileSync(path.join(outdir, file), 'utf8'));
        const committed: unknown = JSON.parse(readFileSync(path.join(APP, 'templates', file), 'utf8'));
        assert.deepEqual(
          committed,
          synthesized,
          `deploy/aws/templates/${file} is stale: \`npm run synth\` there`,
        );
      }
      const report = JSON.parse(readFileSync(path.join(outdir, 'validation-report.json'), 'utf8')) as {
        pluginReports: Array<{ conclusion: string }>;
      };
      assert.deepEqual(
        report.pluginReports.filter((r) => r.conclusion !== 'success'),
        [],
      );
    },
  );

  it('`cdk synth` without domains stops with one line saying how to give them', skip, () => {
    gate.assertAvailable();
    const outdir = mkdtempSync(path.join(tmpdir(), 'unified-worker-synth-'));
    outdirs.push(outdir);
    const synth = run(CDK, ['synth', '--quiet', '--output', outdir]);
    assert.notEqual(synth.status, 0, synth.output);
    assert.equal(
      synth.output.split('\n')[0],
      'unified-worker CDK app: context domains: no domains given; add -c domains=example.com,another.org',
    );
    assert.equal(
      readdirSync(outdir).some((f) => f.endsWith('.template.json')),
      false,
      'nothing synthesized',
    );
  });

  it('the CDK app’s suites pass (typecheck + deploy/aws/test: assertions and sizes)', skip, () => {
    gate.assertAvailable();
    // Synthesizing 200 domains twice (213 stacks) is most of it: minutes on a shared CI machine.
    const suite = run('npm', ['test', '--silent'], 900_000);
    assert.equal(suite.status, 0, suite.output);
    const pass = Number(/^# pass (\d+)$/m.exec(suite.output)?.[1]);
    assert.ok(pass > 0, `no test ran:\n${suite.output}`);
    assert.match(suite.output, /^# fail 0$/m);
  });

  it('a bad option is refused with one line naming it', skip, () => {
    gate.assertAvailable();
    // The app as the CLI runs it (cdk.json's "app", context in CDK_CONTEXT_JSON), without the CLI's start-up cost.
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'bin/app.ts'], {
      cwd: APP,
      env: { ...childEnv(), CDK_CONTEXT_JSON: JSON.stringify({ domains: 'example.com,Not_A_Domain' }) },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(result.status, 2, result.stderr);
    assert.equal(result.stderr, 'unified-worker CDK app: context domains: "not_a_domain" is not valid\n');
  });
});
