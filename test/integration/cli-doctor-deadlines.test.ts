/**
 * doctor and setup without AWS credentials, and doctor against peers that accept connections and never answer.
 *
 * Without credentials (the built binary, so no credentials leak in from this process): one FAIL that says how to
 * provide them, the AWS checks one [skip] line, the checks that need no AWS (settings, MX, mail server) still run;
 * setup stops with one line. Against silent peers (every AWS endpoint, the DNS server, the mail server ports),
 * doctor finishes within its per-call deadline and names what did not answer.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { CheckResult } from '../../src/cli/doctor.ts';
import { runBuiltCli, runCommand } from '../harness/cli-runner.ts';
import { startDnsServer, type DnsServer } from '../harness/dns-server.ts';
import { TEST_REGION } from '../harness/emulators.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

interface DoctorReport {
  failed: number;
  skipped: number;
  checks: CheckResult[];
}

let mailbox: SmtpSink;
let internal: SmtpSink;
let dns: DnsServer;
let home: string;

before(async () => {
  [mailbox, internal, dns] = await Promise.all([startSmtpSink(), startSmtpSink(), startDnsServer()]);
  dns.setMx('example.com', [{ exchange: `inbound-smtp.${TEST_REGION}.amazonaws.com`, priority: 10 }]);
  home = await mkdtemp(path.join(tmpdir(), 'uw-no-credentials-'));
});
after(async () => {
  await Promise.all([mailbox.stop(), internal.stop(), dns.stop()]);
  await rm(home, { recursive: true, force: true });
});

/** An environment with no credential anywhere the SDK looks: no keys, an empty home, no instance metadata. */
function noCredentials(): Record<string, string> {
  return {
    HOME: home,
    AWS_SHARED_CREDENTIALS_FILE: path.join(home, 'credentials'),
    AWS_CONFIG_FILE: path.join(home, 'config'),
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_REGION: TEST_REGION,
    DOMAINS: 'example.com',
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(mailbox.port),
    INTERNAL_SMTP_PORT: String(internal.port),
    LOOP_MARKER_SECRET: 'a-long-random-test-secret-0123456789',
    DOCTOR_DNS_SERVERS: dns.address,
  };
}

describe('without AWS credentials', () => {
  it('doctor: one FAIL saying how to provide them, the AWS checks skipped, the rest still checked', async () => {
    const run = await runBuiltCli(['doctor'], noCredentials());
    assert.equal(run.code, 1, run.stderr);
    const fails = run.stdout.split('\n').filter((l) => l.startsWith('[FAIL]'));
    assert.equal(fails.length, 1, run.stdout);
    assert.match(
      fails[0] ?? '',
      /^\[FAIL\] AWS caller +no AWS credentials found: the AWS checks are skipped$/,
    );
    assert.match(
      run.stdout,
      /fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \(e\.g\. in \.env\), or AWS_PROFILE naming a profile in ~\/\.aws\/credentials, or run with an IAM role/,
    );
    assert.match(run.stdout, /^\[skip\] AWS checks +skipped, they need credentials: receipt rules, /m);
    assert.match(
      run.stdout,
      /^\[ok\] +MX example\.com +inbound-smtp\.us-east-1\.amazonaws\.com \(priority 10\)$/m,
    );
    assert.match(run.stdout, /^\[ok\] +mail server SMTP 127\.0\.0\.1:\d+ +accepts RCPT TO/m);
    assert.match(run.stdout, /^1 check failed, 0 warnings, 1 skipped\.$/m);
    assert.doesNotMatch(run.stdout, /run doctor again|s3:ListBucket|sqs:GetQueueUrl/);
  });

  it('doctor --json: the same, as data', async () => {
    const run = await runBuiltCli(['doctor', '--json'], noCredentials());
    const report = JSON.parse(run.stdout) as DoctorReport;
    assert.deepEqual(
      report.checks.map((c) => `${c.status} ${c.check}`),
      [
        'ok settings',
        'ok LOOP_MARKER_SECRET',
        'fail AWS caller',
        'skip AWS checks',
        'ok MX example.com',
        `ok mail server SMTP 127.0.0.1:${mailbox.port}`,
        `ok mail server internal SMTP 127.0.0.1:${internal.port}`,
      ],
    );
    assert.equal(report.failed, 1);
    assert.equal(report.skipped, 1);
  });

  it('setup: one line naming what is missing and how to provide it, nothing created', async () => {
    const run = await runBuiltCli(['setup'], noCredentials());
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.match(
      run.stderr,
      /^unified-worker: invalid configuration: AWS credentials: none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY .*\n$/,
    );
  });
});

describe('against peers that accept and never answer', () => {
  let silent: Server;
  const sockets = new Set<Socket>();
  let silentDns: DnsServer;
  let port: number;

  before(async () => {
    silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    port = (silent.address() as { port: number }).port;
    silentDns = await startDnsServer({ silent: true });
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
    await silentDns.stop();
  });

  it('doctor finishes within its deadlines and names each peer that did not answer', async () => {
    const started = Date.now();
    const run = await runCommand(['doctor', '--timeout', '1', '--json'], {
      AWS_REGION: TEST_REGION,
      AWS_ENDPOINT_URL: `http://127.0.0.1:${port}`,
      S3_FORCE_PATH_STYLE: 'true',
      DOMAINS: 'example.com',
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(port),
      INTERNAL_SMTP_PORT: String(port),
      LOOP_MARKER_SECRET: 'a-long-random-test-secret-0123456789',
      DOCTOR_DNS_SERVERS: silentDns.address,
    });
    const seconds = (Date.now() - started) / 1000;
    // Calls run one after another only along a chain (caller, rule set, one call per check): a few deadlines.
    assert.ok(seconds < 15, `doctor took ${seconds} s`);
    assert.equal(run.code, 1);
    const report = run.json<DoctorReport>();
    const byName = new Map(report.checks.map((c) => [c.check, c]));
    assert.equal(byName.get('AWS caller')?.detail, 'no answer to STS GetCallerIdentity within 1 s');
    assert.equal(
      byName.get('AWS caller')?.fix,
      `check that http://127.0.0.1:${port} (the STS endpoint override) answers from this host`,
    );
    assert.equal(
      byName.get('receipt rule example.com')?.detail,
      'no answer to SES DescribeActiveReceiptRuleSet within 1 s',
    );
    assert.equal(
      byName.get('queue example-com-queue')?.detail,
      'no answer to SQS GetQueueUrl example-com-queue within 1 s',
    );
    assert.equal(
      byName.get('bucket example-com-emails')?.detail,
      'no answer to S3 HeadBucket example-com-emails within 1 s',
    );
    assert.equal(
      byName.get('table email-rules')?.detail,
      'no answer to DynamoDB DescribeTable email-rules within 1 s',
    );
    assert.equal(byName.get('SES account')?.detail, 'no answer to SES GetAccount within 1 s');
    assert.equal(
      byName.get('MX example.com')?.detail,
      'not checked: no answer to the MX lookup of example.com within 1 s',
    );
    assert.equal(
      byName.get(`mail server SMTP 127.0.0.1:${port}`)?.detail,
      'no answer to the greeting within 1000 ms',
    );
    assert.deepEqual(
      report.checks.filter((c) => c.status === 'ok').map((c) => c.check),
      ['settings', 'LOOP_MARKER_SECRET'],
      'nothing that needs a peer passed',
    );
    assert.ok(silentDns.queries >= 1, 'the DNS server was asked');
  });
});
