/**
 * `npm run local:send` as a user runs it (a child process), with the same exit codes as unified-worker: 2 and the
 * usage line for bad usage, 1 when there is no stack or the outcome is not final, 0 when the mail went in. The
 * "running stack" is a state file pointing at the emulators (its pid is this test's, so it counts as running).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { GetQueueUrlCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';

import { parseSqsBody } from '../../src/pipeline/notification.ts';
import { runCommand } from '../harness/cli-runner.ts';
import { createDomainQueue, startStack, type TestStack } from '../harness/emulators.ts';
import { writeStateFiles, type LocalStackState } from '../../scripts/local-stack-state.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DOMAIN = 'local-send.test';
let stack: TestStack;
let mailDir: string;
let emptyDir: string;

before(async () => {
  stack = await startStack();
  await createDomainQueue(stack.sqs, DOMAIN);
  const env = { ...stack.env, DOMAINS: DOMAIN };
  const setup = await runCommand(['setup'], env);
  assert.equal(setup.code, 0, setup.stdout + setup.stderr);
  mailDir = await mkdtemp(path.join(tmpdir(), 'local-send-'));
  emptyDir = await mkdtemp(path.join(tmpdir(), 'local-send-none-'));
  const state: LocalStackState = {
    pid: process.pid,
    startedAt: new Date().toISOString(),
    domains: [DOMAIN],
    mailDir,
    env,
    endpoints: { ...stack.endpoints },
    smtp: { mailboxPort: 0, internalPort: 0, lmtpPort: 0 },
    healthUrl: '',
    readyUrl: '',
    metricsUrl: '',
  };
  await writeStateFiles(state);
});
after(async () => {
  await stack.stop();
  await rm(mailDir, { recursive: true, force: true });
  await rm(emptyDir, { recursive: true, force: true });
});

async function localSend(
  ...argv: string[]
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/local-send.ts', ...argv], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

describe('npm run local:send', () => {
  it('bad usage: exit 2, one line, then the usage line', async () => {
    for (const [argv, problem] of [
      [['--bogus'], /^local:send: Unknown option '--bogus'/],
      [['--to', 'not an address'], /^local:send: --to "not an address" is not a mailbox/],
      [
        ['--shape', 'carrier-pigeon'],
        /^local:send: --shape "carrier-pigeon": expected one of sns-s3, raw-s3, sns-inline$/,
      ],
      [['--wait', 'soon'], /^local:send: --wait "soon": expected a duration/],
      [
        ['--mail-dir', mailDir, '--to', 'x@elsewhere.test'],
        /is not served by the stack \(domains: local-send\.test\)$/,
      ],
      [
        ['--mail-dir', mailDir, '--to', `x@${DOMAIN}`, '--eml', '/nonexistent.eml'],
        /^local:send: --eml \/nonexistent\.eml: no such file$/,
      ],
    ] as const) {
      const run = await localSend(...argv);
      assert.equal(run.code, 2, `${argv.join(' ')}: ${run.stderr}`);
      const lines = run.stderr.trim().split('\n');
      assert.equal(lines.length, 2, run.stderr);
      assert.match(lines[0] ?? '', problem);
      assert.match(lines[1] ?? '', /^Usage: npm run local:send -- --to <address>/);
    }
  });

  it('no running stack: exit 1 and how to start one', async () => {
    const run = await localSend('--mail-dir', emptyDir);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^local:send: no local stack found .*npm run local/);
  });

  it('sends as SES would (exit 0 with --no-wait), and a verdict that does not come is exit 1', async () => {
    const sent = await localSend('--mail-dir', mailDir, '--to', `Alice <alice@${DOMAIN}>`, '--no-wait');
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(
      sent.stdout,
      /^queued SES message \S+ for alice@local-send\.test \(s3:\/\/local-send-test-emails\//,
    );
    const url = (await stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'local-send-test-queue' })))
      .QueueUrl;
    const { Messages = [] } = await stack.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
    );
    assert.equal(Messages.length, 1);
    const parsed = parseSqsBody(Messages[0]?.Body);
    assert.ok(parsed.kind === 'receipt');
    assert.deepEqual(parsed.receipt.recipients, [`alice@${DOMAIN}`]);

    const waited = await localSend('--mail-dir', mailDir, '--to', `bob@${DOMAIN}`, '--wait', '1');
    assert.equal(waited.code, 1, waited.stderr);
    assert.match(waited.stdout, /^local-send\.test: no final outcome within 1 s/m);
  });
});
