/**
 * Docker Compose beside docker-mailserver, offline: docker-compose.yml, the three env examples (.env.example for
 * compose's own `${...}`, worker.env.example for the worker, mailserver.env.example for docker-mailserver), the
 * docker-mailserver overrides it mounts, and the Dockerfile's build-info. What each file promises in its comments is
 * checked against the daemon's settings; user-patches.sh's SES configuration-set header runs against a scratch
 * Postfix configuration with the real postconf and postmap (Debian's postfix; .ci/run installs it: without it that
 * test is skipped with the reason, except under CI=true, where it fails).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { SETTINGS } from '../../src/config/settings.ts';
import { readBuildInfo } from '../../src/daemon/build-info.ts';
import { commandProblem, toolGate } from '../harness/required-tool.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

interface Service {
  image?: string;
  build?: { context: string; args?: Record<string, string> };
  hostname?: string;
  env_file?: string | string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  read_only?: boolean;
  tmpfs?: string[];
  stop_grace_period?: string;
  cap_drop?: string[];
}

const composeText = read('docker-compose.yml');
const compose = parse(composeText) as { services: Record<string, Service> };
const worker = compose.services.worker!;
const mailserver = compose.services.mailserver!;

/** `KEY=value` lines of an env file; `#KEY=value` lines too when `commented`. */
function envFile(file: string, commented = false): Map<string, string> {
  const pattern = commented ? /^#?([A-Z][A-Z0-9_]*)=(.*)$/ : /^([A-Z][A-Z0-9_]*)=(.*)$/;
  const entries = read(file)
    .split('\n')
    .flatMap((line) => {
      const match = pattern.exec(line);
      return match ? [[match[1]!, match[2]!] as const] : [];
    });
  return new Map(entries);
}

const seconds = (duration: string | undefined) => Number(/^(\d+)s$/.exec(duration ?? '')?.[1] ?? NaN);

describe('docker-compose.yml and its env files', () => {
  it('.env.example names exactly the variables compose substitutes, and nothing reaches a container from it', () => {
    const uncommented = composeText
      .split('\n')
      .filter((line) => !line.trimStart().startsWith('#'))
      .join('\n');
    const used = new Set(
      [...uncommented.matchAll(/\$\{([A-Z][A-Z0-9_]*)(?::?-[^}]*)?\}/g)].map((m) => m[1]!),
    );
    assert.deepEqual([...envFile('.env.example').keys()].sort(), [...used].sort());
    for (const service of Object.values(compose.services)) {
      assert.notDeepEqual(service.env_file, '.env', 'compose interpolation stays out of the containers');
    }
  });

  it("the worker: its own env file, only the mail server's host forced, read-only with a writable /tmp", () => {
    assert.equal(worker.env_file, 'worker.env');
    assert.deepEqual(worker.environment, { SMTP_HOST: 'mailserver' });
    for (const key of envFile('worker.env.example', true).keys()) assert.ok(key in SETTINGS, key);
    assert.equal(worker.read_only, true);
    assert.ok(
      worker.tmpfs?.some((t) => t.split(':')[0] === '/tmp'),
      'read_only needs a tmpfs /tmp (Node writes reports there)',
    );
    assert.deepEqual(worker.cap_drop, ['ALL']);
    assert.ok(seconds(worker.stop_grace_period) > Number(SETTINGS.SHUTDOWN_GRACE_SECONDS.default));
    const published = (worker.ports ?? []).map((p) => p.split(':'));
    assert.deepEqual(
      published.map(([host, , container]) => [host, Number(container)]),
      [
        ['127.0.0.1', Number(SETTINGS.HEALTH_PORT.default)],
        ['127.0.0.1', Number(SETTINGS.METRICS_PORT.default)],
      ],
      'health and metrics on the loopback only',
    );
    assert.match(worker.build?.args?.GIT_COMMIT ?? '', /^\$\{GIT_COMMIT/);
    assert.match(read('Dockerfile'), /^ARG GIT_COMMIT=unknown$/m);
  });

  it("the mail server: docker-mailserver's own env file with what the worker needs, the three overrides mounted", () => {
    assert.equal(mailserver.env_file, 'mailserver.env');
    const env = envFile('mailserver.env.example');
    assert.equal(env.get('PERMIT_DOCKER'), 'connected-networks', 'the worker network is trusted');
    assert.ok(
      Number(env.get('POSTFIX_MESSAGE_SIZE_LIMIT')) >= Number(SETTINGS.MAX_MAIL_BYTES.default),
      'Postfix takes the largest mail SES accepts',
    );
    const relay = envFile('mailserver.env.example', true);
    assert.equal(relay.get('SES_CONFIGURATION_SET'), SETTINGS.SES_CONFIGURATION_SET.default);
    for (const key of ['DEFAULT_RELAY_HOST', 'RELAY_USER', 'RELAY_PASSWORD']) assert.ok(relay.has(key), key);
    for (const file of ['user-patches.sh', 'dovecot.cf', 'before.dovecot.sieve']) {
      const mount = `./docker/mailserver/${file}:/tmp/docker-mailserver/${file}:ro`;
      assert.ok(mailserver.volumes?.includes(mount), mount);
      assert.ok(existsSync(path.join(ROOT, 'docker/mailserver', file)), file);
    }
    const published = (mailserver.ports ?? []).map((p) => Number(p.split(':').pop()));
    for (const port of [
      25,
      24,
      Number(SETTINGS.SMTP_PORT.default),
      Number(SETTINGS.INTERNAL_SMTP_PORT.default),
    ]) {
      assert.ok(!published.includes(port), `port ${port} stays on the compose network`);
    }
  });

  it('the Dockerfile writes the commit where ses_worker_build_info reads it', () => {
    const line = /printf '\{"commit":"%s"\}\\n' "\$GIT_COMMIT" > dist\/build-info\.json/.exec(
      read('Dockerfile'),
    );
    assert.ok(line, 'the build stage writes dist/build-info.json');
    const dir = mkdtempSync(path.join(tmpdir(), 'unified-worker-build-info-'));
    try {
      mkdirSync(path.join(dir, 'dist'));
      const commit = 'a'.repeat(40);
      const run = spawnSync('sh', ['-c', line[0]], {
        cwd: dir,
        env: { GIT_COMMIT: commit },
        encoding: 'utf8',
      });
      assert.equal(run.status, 0, run.stderr);
      const info = readBuildInfo(
        pathToFileURL(path.join(ROOT, 'package.json')),
        pathToFileURL(path.join(dir, 'dist/build-info.json')),
      );
      const version = (JSON.parse(read('package.json')) as { version: string }).version;
      assert.deepEqual(info, { version, commit });
      writeFileSync(path.join(dir, 'dist/build-info.json'), '{"commit":"$(whoami)"}');
      assert.equal(
        readBuildInfo(undefined, pathToFileURL(path.join(dir, 'dist/build-info.json'))).commit,
        'unknown',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const postfix = toolGate(
  'postconf and postmap',
  commandProblem('sh', [
    '-c',
    'command -v postconf && command -v postmap && test -f /usr/share/postfix/master.cf.dist',
  ]),
  'install Postfix (`apt-get install postfix`, or `bash scripts/mailserver/install.sh`)',
);

describe('user-patches.sh names the SES configuration set on relayed mail', () => {
  /** A scratch Postfix configuration with docker-mailserver's own smtp_header_checks, patched by user-patches.sh. */
  function patched(env: Record<string, string>, times = 1) {
    const dir = mkdtempSync(path.join(tmpdir(), 'unified-worker-postfix-'));
    writeFileSync(
      path.join(dir, 'main.cf'),
      'smtp_header_checks = pcre:/etc/postfix/maps/sender_header_filter.pcre\n',
    );
    copyFileSync('/usr/share/postfix/master.cf.dist', path.join(dir, 'master.cf'));
    const runs = Array.from({ length: times }, () =>
      spawnSync('bash', [path.join(ROOT, 'docker/mailserver/user-patches.sh')], {
        env: { PATH: process.env.PATH ?? '', POSTFIX_CONFIG_DIR: dir, ...env },
        encoding: 'utf8',
      }),
    );
    const postconf = (name: string) =>
      spawnSync('postconf', ['-c', dir, '-h', name], { encoding: 'utf8' }).stdout.trim();
    const lookup = (table: string, line: string) =>
      spawnSync('postmap', ['-c', dir, '-q', line, table], { encoding: 'utf8' }).stdout.trim();
    return { dir, runs, postconf, lookup, done: () => rmSync(dir, { recursive: true, force: true }) };
  }

  it(
    'the header goes above From: on mail the SMTP client relays, once however often the script runs',
    { skip: postfix.skip },
    () => {
      postfix.assertAvailable();
      const name = SETTINGS.SES_CONFIGURATION_SET.default;
      const scratch = patched({ SES_CONFIGURATION_SET: name }, 2);
      try {
        for (const run of scratch.runs) assert.equal(run.status, 0, run.stderr);
        const tables = scratch.postconf('smtp_header_checks').split(/,\s*/);
        assert.equal(tables.length, 2, tables.join(', '));
        assert.equal(
          tables[0],
          'pcre:/etc/postfix/maps/sender_header_filter.pcre',
          "docker-mailserver's table kept",
        );
        assert.equal(
          scratch.lookup(tables[1]!, 'From: Alice <alice@example.com>'),
          `PREPEND X-SES-CONFIGURATION-SET: ${name}`,
        );
        assert.equal(scratch.lookup(tables[1]!, 'Subject: From: nobody'), '');
        assert.equal(scratch.postconf('lmtp_header_checks'), '', 'local deliveries are left alone');
      } finally {
        scratch.done();
      }
    },
  );

  it(
    'nothing without SES_CONFIGURATION_SET (or with none); a name SES would refuse stops the script',
    { skip: postfix.skip },
    () => {
      postfix.assertAvailable();
      for (const env of [{}, { SES_CONFIGURATION_SET: 'none' }] as Array<Record<string, string>>) {
        const scratch = patched(env);
        try {
          assert.equal(scratch.runs[0]!.status, 0, scratch.runs[0]!.stderr);
          assert.equal(
            scratch.postconf('smtp_header_checks'),
            'pcre:/etc/postfix/maps/sender_header_filter.pcre',
          );
        } finally {
          scratch.done();
        }
      }
      const bad = patched({ SES_CONFIGURATION_SET: 'two words' });
      try {
        assert.equal(bad.runs[0]!.status, 1);
        assert.match(
          bad.runs[0]!.stderr,
          /SES_CONFIGURATION_SET 'two words' is not a configuration set name/,
        );
      } finally {
        bad.done();
      }
    },
  );
});

describe("user-patches.sh on docker-mailserver's own master.cf: the delivery id survives only the worker's ports", () => {
  /** docker-mailserver v15.1.0's master.cf (with its Amavis services) and main.cf header checks, patched. */
  function patched(times: number) {
    const dir = mkdtempSync(path.join(tmpdir(), 'unified-worker-dms-'));
    writeFileSync(path.join(dir, 'main.cf'), 'header_checks = pcre:/etc/postfix/maps/header_checks.pcre\n');
    copyFileSync(path.join(ROOT, 'test/fixtures/docker-mailserver/master.cf'), path.join(dir, 'master.cf'));
    const runs = Array.from({ length: times }, () =>
      spawnSync('bash', [path.join(ROOT, 'docker/mailserver/user-patches.sh')], {
        env: { PATH: process.env.PATH ?? '', POSTFIX_CONFIG_DIR: dir },
        encoding: 'utf8',
      }),
    );
    const postconf = (...args: string[]) =>
      spawnSync('postconf', ['-c', dir, ...args], { encoding: 'utf8' }).stdout.trim();
    const param = (service: string, name: string) => postconf('-Ph', `${service}/${name}`);
    return { dir, runs, postconf, param, done: () => rmSync(dir, { recursive: true, force: true }) };
  }

  it(
    "strips the field in every cleanup but the worker's, keeps docker-mailserver's checks, once however often it runs",
    { skip: postfix.skip },
    () => {
      postfix.assertAvailable();
      const scratch = patched(2);
      try {
        for (const run of scratch.runs) assert.equal(run.status, 0, run.stderr);
        const ours = `regexp:${path.join(scratch.dir, 'unified-worker-delivery-id.regexp')}`;
        const dms = 'pcre:/etc/postfix/maps/header_checks.pcre';
        const port = SETTINGS.SMTP_PORT.default;
        const internal = SETTINGS.INTERNAL_SMTP_PORT.default;
        // Port 25 (postscreen -> smtpd pass) and bounces: the default cleanup, main.cf's checks, ours first.
        assert.equal(scratch.postconf('-h', 'header_checks'), `${ours}, ${dms}`);
        // Submission: docker-mailserver's sender-cleanup, its own table kept after ours.
        assert.equal(
          scratch.param('sender-cleanup/unix', 'header_checks'),
          `${ours},pcre:/etc/postfix/maps/sender_header_filter.pcre`,
        );
        // sendmail: pickup skipped every header check; now a cleanup of its own checks ours and nothing else.
        assert.equal(scratch.param('pickup/fifo', 'receive_override_options'), '');
        assert.equal(scratch.param('pickup/fifo', 'cleanup_service_name'), 'unified-worker-pickup-cleanup');
        assert.equal(scratch.param('unified-worker-pickup-cleanup/unix', 'header_checks'), ours);
        for (const name of ['mime_header_checks', 'nested_header_checks', 'body_checks'])
          assert.equal(scratch.param('unified-worker-pickup-cleanup/unix', name), '', name);
        // The worker's two ports: a cleanup that keeps the field and runs docker-mailserver's checks as before.
        for (const service of [`${port}/inet`, `${internal}/inet`])
          assert.equal(scratch.param(service, 'cleanup_service_name'), 'unified-worker-cleanup', service);
        assert.equal(scratch.param('unified-worker-cleanup/unix', 'header_checks'), dms);
        assert.equal(scratch.param(`${port}/inet`, 'smtpd_client_restrictions'), 'permit_mynetworks,reject');
        assert.equal(scratch.param(`${port}/inet`, 'content_filter'), '', 'routed like port 25');
        // Amavis' reinjection is left as it is: what it gets passed a cleanup service already.
        assert.equal(
          scratch.param('127.0.0.1:10025/inet', 'receive_override_options'),
          'no_header_body_checks,no_unknown_recipient_checks,no_milters',
        );
        const lookup = (line: string) =>
          spawnSync('postmap', ['-c', scratch.dir, '-q', line, ours], { encoding: 'utf8' }).stdout.trim();
        assert.equal(lookup('X-SES-Worker-Delivery-Id: deliver.0123'), 'IGNORE');
        assert.equal(lookup('x-ses-worker-delivery-id: deliver.0123'), 'IGNORE');
        assert.equal(lookup('Subject: X-SES-Worker-Delivery-Id: x'), '');
        const services = scratch.postconf('-M').split('\n');
        assert.equal(
          services.filter((l) => l.startsWith('unified-worker-cleanup ')).length,
          1,
          'defined once',
        );
      } finally {
        scratch.done();
      }
    },
  );
});
