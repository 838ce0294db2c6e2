/**
 * How a command ends: the lines and the exit code for each kind of error, and a daemon start that fails on a port
 * named as the setting to change.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Command } from 'commander';

import { EXIT_FAILED, EXIT_USAGE, UsageError, reportError } from '../../src/cli/exit.ts';
import { startFailure } from '../../src/cli/run.ts';
import { buildConfig } from '../../src/config/config.ts';
import { ConfigError, WorkerError } from '../../src/errors.ts';

function report(error: unknown, debug = false): { code: number; text: string } {
  const root = new Command('unified-worker');
  const dlq = root.command('dlq');
  const show = dlq.command('show').option('--sample <n>');
  let text = '';
  const code = reportError({ write: (chunk: string) => (text += chunk) }, error, { command: show, debug });
  return { code, text };
}

describe('reportError', () => {
  it('bad usage: what is wrong, then the usage line of that command; exit 2', () => {
    assert.deepEqual(report(new UsageError('--sample "x": expected a whole number, 0..100')), {
      code: EXIT_USAGE,
      text:
        'unified-worker dlq show: --sample "x": expected a whole number, 0..100\n' +
        'Usage: unified-worker dlq show [options]   (more: unified-worker help dlq show)\n',
    });
  });

  it('a setting: one line naming it, exit 1', () => {
    assert.deepEqual(report(new ConfigError('SMTP_PORT', '70000 is not a valid port (1..65535)')), {
      code: EXIT_FAILED,
      text: 'unified-worker: invalid configuration: SMTP_PORT: 70000 is not a valid port (1..65535)\n',
    });
  });

  it('a failed operation: one line, exit 1', () => {
    const error = new WorkerError('SQS_ERROR', 'ReceiveMessage q failed: connect ECONNREFUSED', {
      temporary: true,
    });
    assert.deepEqual(report(error), {
      code: EXIT_FAILED,
      text: 'unified-worker dlq show: ReceiveMessage q failed: connect ECONNREFUSED\n',
    });
  });

  it('an unexpected error: one line without its stack, unless --log-level debug asks for it', () => {
    const error = new TypeError('x is not a function');
    const plain = report(error);
    assert.equal(plain.code, EXIT_FAILED);
    assert.equal(
      plain.text,
      'unified-worker dlq show: TypeError: x is not a function (--log-level debug shows where)\n',
    );
    const debug = report(error, true);
    assert.match(debug.text, /^unified-worker dlq show: TypeError: x is not a function\n\s+at /);
  });
});

describe('a daemon that cannot bind its ports', () => {
  const config = buildConfig({
    DOMAINS: 'example.com',
    HEALTH_PORT: '8080',
    METRICS_PORT: '8000',
    HTTP_HOST: '127.0.0.1',
  });
  const listenError = (code: string, port: number) =>
    Object.assign(new Error(`listen ${code}: 127.0.0.1:${port}`), { code, port, address: '127.0.0.1' });

  it('names HEALTH_PORT or METRICS_PORT, whichever is taken or not allowed', () => {
    const health = startFailure(listenError('EADDRINUSE', 8080), config);
    assert.ok(health instanceof ConfigError);
    assert.equal(health.setting, 'HEALTH_PORT');
    assert.match(health.message, /127\.0\.0\.1:8080 is already in use/);
    const metrics = startFailure(listenError('EACCES', 8000), config);
    assert.ok(metrics instanceof ConfigError);
    assert.equal(metrics.setting, 'METRICS_PORT');
    assert.match(metrics.message, /permission denied \(a port below 1024 needs privileges\)/);
  });

  it('the same port for both, an address that is not this machine, and anything else as it is', () => {
    const same = buildConfig({ DOMAINS: 'example.com', HEALTH_PORT: '9000', METRICS_PORT: '9000' });
    const both = startFailure(listenError('EADDRINUSE', 9000), same);
    assert.ok(both instanceof ConfigError);
    assert.match(both.message, /METRICS_PORT: 9000 is HEALTH_PORT too/);
    const host = startFailure(listenError('EADDRNOTAVAIL', 8080), config);
    assert.ok(host instanceof ConfigError);
    assert.equal(host.setting, 'HTTP_HOST');
    const other = new Error('worker thread failed');
    assert.equal(startFailure(other, config), other);
  });
});
