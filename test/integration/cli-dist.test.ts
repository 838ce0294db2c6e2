/**
 * The built binary, as an admin runs it (`node dist/unified-worker.js <command>`, child processes, settings in
 * the environment), against the emulators, smtp-server sinks and the built daemon: exit codes 0, 1 and 2, and one
 * command of each kind — setup, doctor, rules, blocklist, inject (delivered by the daemon), replay, dlq.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { assertBuilt, killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { assertUsageError, runBuiltCli, type CliResult } from '../harness/cli-runner.ts';
import { startDnsServer, type DnsServer } from '../harness/dns-server.ts';
import { TEST_REGION, startStack, type TestStack } from '../harness/emulators.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const DOMAIN = 'dist-cli.test';
const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
let stack: TestStack;
let mailbox: SmtpSink;
let internal: SmtpSink;
let daemon: DaemonProcess;
let dns: DnsServer;
let env: Record<string, string>;

before(async () => {
  assertBuilt();
  stack = await startStack();
  mailbox = await startSmtpSink();
  internal = await startSmtpSink();
  // doctor's MX lookup and SES account check: what no emulator answers (see cli-setup-doctor.test.ts).
  dns = await startDnsServer();
  dns.setMx(DOMAIN, [{ exchange: `inbound-smtp.${TEST_REGION}.amazonaws.com`, priority: 10 }]);
  stack.ses.control.account = {
    SendingEnabled: true,
    ProductionAccessEnabled: true,
    SendQuota: { Max24HourSend: 50_000, MaxSendRate: 14, SentLast24Hours: 0 },
  };
  env = {
    ...stack.env,
    DOMAINS: DOMAIN,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(mailbox.port),
    INTERNAL_SMTP_PORT: String(internal.port),
    IDEMPOTENCY_TABLE: 'email-worker-idempotency',
    LOOP_MARKER_SECRET: 'dist-test-secret-0123456789abcdef',
    RULES_CACHE_SECONDS: '0',
    DOCTOR_DNS_SERVERS: dns.address,
  };
});
after(async () => {
  await killAllDaemons();
  await Promise.all([mailbox.stop(), internal.stop(), dns.stop()]);
  await stack.stop();
});

function cli(...argv: string[]): Promise<CliResult> {
  return runBuiltCli(argv, env);
}

describe('node dist/unified-worker.js', () => {
  it('--help lists the commands and every setting; bad usage is one line, the usage line and exit 2', async () => {
    const help = await cli('--help');
    assert.equal(help.code, 0);
    for (const command of [
      'run',
      'setup',
      'doctor',
      'rules',
      'blocklist',
      'inject',
      'replay',
      'dlq',
      'help',
    ]) {
      assert.match(help.stdout, new RegExp(`^  ${command}\\b`, 'm'), command);
    }
    assert.match(help.stdout, /LOOP_MARKER_SECRET/);
    for (const argv of [
      ['setup', '--bogus'],
      ['doctr'],
      ['rules'],
      ['rules', 'set', 'a@b\nc.test', '--ooo', 'off'],
    ]) {
      const run = await cli(...argv);
      assert.equal(run.code, 2, `${argv.join(' ')}: ${run.stderr}`);
      const lines = run.stderr.trim().split('\n');
      assert.equal(lines.length, 2, run.stderr);
      assert.match(lines[1] ?? '', /^Usage: unified-worker/, run.stderr);
    }
    const unknown = await cli('setup', '--bogus');
    assert.equal(
      unknown.stderr,
      "unified-worker setup: unknown option '--bogus'\n" +
        'Usage: unified-worker setup [options]   (more: unified-worker help setup)\n',
    );
    const typo = await cli('doctr');
    assert.match(typo.stderr, /^unified-worker: unknown command "doctr" \(did you mean doctor\?\)/);
    const group = await cli('rules');
    assert.match(
      group.stderr,
      /^unified-worker rules: which one\? show, set, delete, list\nUsage: unified-worker rules /,
    );
    const address = await cli('rules', 'set', 'a@b\nc.test', '--ooo', 'off');
    assert.match(
      address.stderr,
      /^unified-worker rules set: address "a@b\\nc\.test" contains a line break or NUL\nUsage: unified-worker rules set \[options\] <address>/,
    );
  });

  it('setup (exit 0), then the daemon, and doctor is green (exit 0)', async () => {
    const setup = await cli('setup');
    assert.equal(setup.code, 0, setup.stdout + setup.stderr);
    assert.match(
      setup.stdout,
      /queue dist-cli-test-queue +created: redrive to dist-cli-test-queue-dlq after 10 receives/,
    );
    daemon = await spawnDaemon({ domains: [DOMAIN], env });
    // SES finds the DKIM records setup printed (the stand-in for DNS).
    stack.ses.control.verify(DOMAIN);
    const doctor = await cli('doctor');
    assert.equal(doctor.code, 0, doctor.stdout);
    assert.match(doctor.stdout, /^All \d+ checks passed/m);
  });

  it('help <command>, -V and -v, global options before the command; a bad setting is exit 1', async () => {
    const help = await cli('help', 'dlq', 'purge');
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: unified-worker dlq purge \[options\]\n/);
    assert.match(help.stdout, /--never-redrivable/);
    assert.match(help.stdout, /Global Options:\n {2}-d, --domains <list>/);
    assertUsageError(
      await cli('help', 'dlq', 'nosuch'),
      /^unified-worker help: unknown command "nosuch"; the commands: show, redrive, purge$/,
    );
    for (const flag of ['-V', '--version', '-v']) {
      const version = await cli(flag);
      assert.deepEqual([version.code, version.stdout], [0, `${PACKAGE_VERSION}\n`], flag);
    }
    const before = await cli('--domains', DOMAIN, '--json', 'rules', 'list');
    assert.equal(before.code, 0, before.stderr);
    assert.deepEqual(before.json(), { rules: [], truncated: false });
    assertUsageError(await cli('run', '--json'), /^unified-worker run: --json is for the operator commands/);
    const setting = await runBuiltCli(['rules', 'list'], { ...env, SMTP_PORT: '70000' });
    assert.equal(setting.code, 1);
    assert.equal(
      setting.stderr,
      'unified-worker: invalid configuration: SMTP_PORT: 70000 is not a valid port (1..65535)\n',
    );
  });

  it('a taken health or metrics port: one line naming the setting, exit 1, no stack trace', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = String((taken.address() as AddressInfo).port);
    try {
      for (const [setting, ports] of [
        ['HEALTH_PORT', { HEALTH_PORT: port, METRICS_PORT: '0' }],
        ['METRICS_PORT', { HEALTH_PORT: '0', METRICS_PORT: port }],
      ] as const) {
        const run = await runBuiltCli([], { ...env, ...ports, HTTP_HOST: '127.0.0.1' });
        assert.equal(run.code, 1, run.stderr);
        // On Node 20 the AWS SDK prints its notice about Node 22 first; the worker's own output is the last line.
        const lines = run.stderr.trimEnd().split('\n');
        assert.equal(
          lines.at(-1),
          `unified-worker: invalid configuration: ${setting}: 127.0.0.1:${port} is already in use ` +
            '(another worker or program listens there): stop it or choose a free port',
        );
        assert.ok(!lines.some((line) => /^\s+at /.test(line)), `no stack trace:\n${run.stderr}`);
      }
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
  });

  it('doctor with the mail server port closed: exit 1 and the fix', async () => {
    await mailbox.down();
    try {
      const doctor = await runBuiltCli(['doctor'], env);
      assert.equal(doctor.code, 1);
      assert.match(
        doctor.stdout,
        new RegExp(`^\\[FAIL\\] mail server SMTP 127\\.0\\.0\\.1:${mailbox.port} +connect ECONNREFUSED`, 'm'),
      );
      assert.match(
        doctor.stdout,
        /fix: is the mail server running and reachable from here\? check SMTP_HOST and SMTP_PORT/,
      );
    } finally {
      await mailbox.up();
    }
  });

  it('rules and blocklist: set, show --json, test exit 0 / 1', async () => {
    const set = await cli('rules', 'set', `away@${DOMAIN}`, '--ooo-message', 'Back soon.');
    assert.equal(set.code, 0, set.stderr);
    const show = await cli('rules', 'show', `away@${DOMAIN}`, '--json');
    assert.deepEqual(show.json(), {
      email_address: `away@${DOMAIN}`,
      ooo_active: true,
      ooo_message: 'Back soon.',
      ooo_content_type: 'text',
      forwards: [],
    });
    assert.equal((await cli('blocklist', 'add', `away@${DOMAIN}`, '*@spam.test')).code, 0);
    assert.equal((await cli('blocklist', 'test', `away@${DOMAIN}`, 'x@spam.test')).code, 0);
    assert.equal((await cli('blocklist', 'test', `away@${DOMAIN}`, 'x@ham.test')).code, 1);
  });

  it('inject --wait: the running daemon delivers it', async () => {
    const run = await cli(
      'inject',
      '--to',
      `alice@${DOMAIN}`,
      '--from',
      'friend@external.test',
      '--wait',
      '20',
    );
    assert.equal(run.code, 0, run.stdout + run.stderr + daemon.describe());
    assert.match(
      run.stdout,
      /^injected SES message [a-z0-9]+ for alice@dist-cli\.test \(s3:\/\/dist-cli-test-emails\/[a-z0-9]+\)$/m,
    );
    assert.match(run.stdout, /^dist-cli\.test: status=delivered\n {2}delivered to alice@dist-cli\.test\n/m);
    assert.ok(mailbox.messages.some((m) => m.to.includes(`alice@${DOMAIN}`)));
  });

  it('replay --dry-run and dlq show / redrive', async () => {
    const replay = await cli('replay', '--status', 'invalid', '--dry-run');
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /^0 mails selected: 0 would be replayed, 0 not replayed$/m);
    const show = await cli('dlq', 'show');
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^dist-cli\.test: 0 messages waiting in dist-cli-test-queue-dlq$/m);
    const redrive = await cli('dlq', 'redrive');
    assert.equal(redrive.code, 0, redrive.stderr);
    assert.match(redrive.stdout, /receive → send → delete/);
  });
});
