import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  buildConfig,
  loadConfig,
  notificationSourcesFor,
  queueNameFor,
  servedDomains,
  type Config,
} from '../../src/config/config.ts';
import { domainsOfShard } from '../../src/config/shards.ts';
import { helpText, SETTINGS, type SettingName } from '../../src/config/settings.ts';
import { ConfigError } from '../../src/errors.ts';
import { ENV_EXAMPLE_PATH, renderEnvExample } from '../../scripts/gen-env-example.ts';
import { skipUnlessCi } from '../harness/ci.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST_ENTRY = fileURLToPath(new URL('../../dist/unified-worker.js', import.meta.url));
const NAMES = Object.keys(SETTINGS) as SettingName[];

/** The smallest valid environment: DOMAINS is the only setting without a default. */
const BASE = { DOMAINS: 'example.com' } as const;

function build(env: Record<string, string>): Config {
  return buildConfig({ ...BASE, ...env });
}

/** Asserts that `env` is rejected with a ConfigError naming `setting` in both `.setting` and the message. */
function rejects(env: Record<string, string>, setting: string, detail?: RegExp): void {
  assert.throws(
    () => buildConfig({ ...BASE, ...env }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
      assert.equal(error.setting, setting);
      assert.equal(error.code, 'CONFIG_INVALID');
      assert.equal(error.temporary, false);
      assert.ok(error.message.includes(setting), `message names ${setting}: ${error.message}`);
      if (detail) assert.match(error.message, detail);
      return true;
    },
    `${JSON.stringify(env)} should be rejected as ${setting}`,
  );
}

describe('buildConfig defaults', () => {
  const config = build({});

  it('parses every default of SETTINGS', () => {
    const int = (name: SettingName): number => Number(SETTINGS[name].default);
    const bool = (name: SettingName): boolean => SETTINGS[name].default === 'true';
    assert.deepEqual(config.domains, ['example.com']);
    assert.deepEqual(config.aws, {
      region: SETTINGS.AWS_REGION.default,
      endpoints: {
        sqs: undefined,
        s3: undefined,
        ses: undefined,
        dynamodb: undefined,
        sns: undefined,
        sts: undefined,
      },
      s3ForcePathStyle: bool('S3_FORCE_PATH_STYLE'),
      deadlines: { connectMs: 3000, callMs: int('AWS_CALL_TIMEOUT_MS'), idleMs: int('AWS_IDLE_TIMEOUT_MS') },
    });
    assert.equal(config.queueNameTemplate, SETTINGS.QUEUE_NAME_TEMPLATE.default);
    assert.deepEqual(config.smtp, {
      host: SETTINGS.SMTP_HOST.default,
      port: int('SMTP_PORT'),
      internalPort: int('INTERNAL_SMTP_PORT'),
      lmtpPort: int('LMTP_PORT'),
      protocol: SETTINGS.DELIVERY_PROTOCOL.default,
      maxConnections: int('SMTP_MAX_CONNECTIONS'),
      timeoutMs: int('SMTP_TIMEOUT_MS'),
    });
    assert.deepEqual(config.tables, {
      rules: SETTINGS.RULES_TABLE.default,
      blocklist: SETTINGS.BLOCKLIST_TABLE.default,
      outbound: SETTINGS.OUTBOUND_TABLE.default,
      oooState: SETTINGS.OOO_STATE_TABLE.default,
      idempotency: SETTINGS.IDEMPOTENCY_TABLE.default,
    });
    assert.deepEqual(config.poll, {
      waitTimeSeconds: int('WAIT_TIME_SECONDS'),
      idlePollAlignMs: int('IDLE_POLL_ALIGN_MS'),
      maxMessages: int('MAX_MESSAGES_PER_RECEIVE'),
      messageConcurrency: int('MESSAGE_CONCURRENCY'),
      maxReceives: int('MAX_RECEIVES'),
      retryDelaysSeconds: SETTINGS.RETRY_DELAYS_SECONDS.default.split(',').map(Number),
      outageProbeSeconds: int('OUTAGE_PROBE_SECONDS'),
      threads: int('POLLER_THREADS'),
    });
    assert.deepEqual(config.shard, { index: 0, count: 1 }, 'no SHARD: every domain');
    assert.deepEqual(config.limits, {
      maxMailBytes: int('MAX_MAIL_BYTES'),
      inFlightBytes: int('IN_FLIGHT_BYTES'),
      s3MaxAttempts: int('S3_MAX_ATTEMPTS'),
    });
    assert.equal(config.directory.cacheSeconds, int('RULES_CACHE_SECONDS'));
    assert.equal(config.autoReply.intervalDays, int('OOO_REPLY_INTERVAL_DAYS'));
    assert.equal(config.autoReply.requireAddressed, bool('OOO_REQUIRE_ADDRESSED'));
    assert.equal(config.autoReply.subjectPrefix, SETTINGS.AUTOREPLY_SUBJECT_PREFIX.default);
    assert.equal(config.forwarding.subjectPrefix, SETTINGS.FORWARD_SUBJECT_PREFIX.default);
    assert.equal(config.forwarding.spamPolicy, 'skip');
    assert.equal(config.inbound.virusPolicy, SETTINGS.VIRUS_POLICY.default);
    assert.equal(config.inbound.addVerdictHeaders, bool('ADD_VERDICT_HEADERS'));
    assert.equal(config.inbound.loopMarkerSecret, '');
    assert.deepEqual(config.http, {
      healthPort: int('HEALTH_PORT'),
      metricsPort: int('METRICS_PORT'),
      host: SETTINGS.HTTP_HOST.default,
    });
    assert.equal(config.shutdownGraceSeconds, int('SHUTDOWN_GRACE_SECONDS'));
    assert.deepEqual(config.log, { level: SETTINGS.LOG_LEVEL.default, redactAddresses: false });
  });

  it('keeps the defaults the README, compose file and Kubernetes manifests rely on', () => {
    assert.equal(config.smtp.port, 2526);
    assert.equal(config.smtp.internalPort, 2525);
    assert.equal(config.smtp.lmtpPort, 24);
    assert.equal(config.smtp.protocol, 'smtp');
    assert.equal(config.http.healthPort, 8080);
    assert.equal(config.http.metricsPort, 8000);
    assert.equal(config.queueNameTemplate, '{domain}-queue');
    assert.equal(config.shutdownGraceSeconds, 25);
    assert.equal(config.autoReply.subjectPrefix, 'Auto: ');
    assert.equal(config.forwarding.subjectPrefix, 'FWD: ');
  });

  it('reads every setting of SETTINGS, and nothing else from the environment', () => {
    const read = new Set<string>();
    const env = new Proxy<Record<string, string | undefined>>(
      { ...BASE },
      {
        get(target, key) {
          if (typeof key === 'string') read.add(key);
          return typeof key === 'string' ? target[key] : undefined;
        },
      },
    );
    buildConfig(env);
    assert.deepEqual([...read].sort(), [...NAMES].sort());
  });

  it('treats empty and blank values as unset, and trims values', () => {
    const config = build({
      SMTP_PORT: '',
      SMTP_HOST: '   ',
      LMTP_PORT: ' 2424 ',
      DELIVERY_PROTOCOL: ' LMTP ',
    });
    assert.equal(config.smtp.port, 2526);
    assert.equal(config.smtp.host, 'localhost');
    assert.equal(config.smtp.lmtpPort, 2424);
    assert.equal(config.smtp.protocol, 'lmtp');
  });

  it('takes subject prefixes as given: spaces kept, empty allowed', () => {
    const config = build({ AUTOREPLY_SUBJECT_PREFIX: '', FORWARD_SUBJECT_PREFIX: ' [fwd] ' });
    assert.equal(config.autoReply.subjectPrefix, '');
    assert.equal(config.forwarding.subjectPrefix, ' [fwd] ');
  });

  it('accepts port 0 (ephemeral) for the HTTP servers only', () => {
    const config = build({ HEALTH_PORT: '0', METRICS_PORT: '0' });
    assert.equal(config.http.healthPort, 0);
    assert.equal(config.http.metricsPort, 0);
    rejects({ SMTP_PORT: '0' }, 'SMTP_PORT');
  });

  it('resolves endpoints: per service, then the SESV2 alias, then AWS_ENDPOINT_URL; trailing slashes dropped', () => {
    const generic = build({ AWS_ENDPOINT_URL: 'http://127.0.0.1:4566/' });
    assert.deepEqual(generic.aws.endpoints, {
      sqs: 'http://127.0.0.1:4566',
      s3: 'http://127.0.0.1:4566',
      ses: 'http://127.0.0.1:4566',
      dynamodb: 'http://127.0.0.1:4566',
      sns: 'http://127.0.0.1:4566',
      sts: 'http://127.0.0.1:4566',
    });
    const specific = build({
      AWS_ENDPOINT_URL: 'http://generic:1',
      AWS_ENDPOINT_URL_SQS: 'http://sqs:2',
      AWS_ENDPOINT_URL_SESV2: 'https://sesv2:3',
      AWS_ENDPOINT_URL_DYNAMODB: 'http://ddb:4//',
      AWS_ENDPOINT_URL_STS: 'http://sts:7',
    });
    assert.deepEqual(specific.aws.endpoints, {
      sqs: 'http://sqs:2',
      s3: 'http://generic:1',
      ses: 'https://sesv2:3',
      dynamodb: 'http://ddb:4',
      sns: 'http://generic:1',
      sts: 'http://sts:7',
    });
    assert.equal(
      build({ AWS_ENDPOINT_URL_SES: 'http://ses:5', AWS_ENDPOINT_URL_SESV2: 'http://sesv2:6' }).aws.endpoints
        .ses,
      'http://ses:5',
    );
  });

  it('accepts every spelling of a boolean', () => {
    for (const value of ['true', 'TRUE', '1', 'yes', 'on'])
      assert.equal(build({ S3_FORCE_PATH_STYLE: value }).aws.s3ForcePathStyle, true);
    for (const value of ['false', 'False', '0', 'no', 'off'])
      assert.equal(build({ ADD_VERDICT_HEADERS: value }).inbound.addVerdictHeaders, false);
  });

  it('lower-cases domains and drops empty list entries', () => {
    assert.deepEqual(build({ DOMAINS: ' Example.COM, ,another.org ,' }).domains, [
      'example.com',
      'another.org',
    ]);
  });
});

describe('buildConfig validation: every rule raises a ConfigError naming the setting', () => {
  it('rejects an unknown delivery protocol, virus policy or log level', () => {
    rejects({ DELIVERY_PROTOCOL: 'smtps' }, 'DELIVERY_PROTOCOL', /smtp, lmtp/);
    rejects({ DELIVERY_PROTOCOL: 'esmtp' }, 'DELIVERY_PROTOCOL');
    rejects({ VIRUS_POLICY: 'drop' }, 'VIRUS_POLICY', /tag, reject/);
    rejects({ FORWARD_SPAM_POLICY: 'forward' }, 'FORWARD_SPAM_POLICY', /skip, tag/);
    rejects({ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL');
  });

  it("confines notifications to the domain's own bucket unless ALLOWED_MAIL_BUCKETS widens it", () => {
    const sources = (env: Record<string, string>) =>
      notificationSourcesFor(build(env), 'example.com').buckets;
    assert.deepEqual(sources({}), ['example-com-emails']);
    assert.deepEqual(sources({ BUCKET_NAME_TEMPLATE: 'mail-{domain}' }), ['mail-example-com']);
    assert.deepEqual(sources({ ALLOWED_MAIL_BUCKETS: 'shared-mail,{domain}-old' }), [
      'example-com-emails',
      'shared-mail',
      'example-com-old',
    ]);
    assert.deepEqual(sources({ ALLOWED_MAIL_BUCKETS: '*' }), [], 'any bucket');
    rejects({ ALLOWED_MAIL_BUCKETS: '*,shared-mail' }, 'ALLOWED_MAIL_BUCKETS', /list no bucket beside it/);
    rejects({ ALLOWED_MAIL_BUCKETS: 'Bad Bucket' }, 'ALLOWED_MAIL_BUCKETS');
  });

  it('rejects bad ports: 0, 65536, non-numbers, negatives, fractions', () => {
    for (const name of ['SMTP_PORT', 'INTERNAL_SMTP_PORT', 'LMTP_PORT'] as const) {
      rejects({ [name]: '0' }, name, /1\.\.65535/);
      rejects({ [name]: '65536' }, name, /1\.\.65535/);
      rejects({ [name]: 'abc' }, name, /not a port number/);
      rejects({ [name]: '-25' }, name);
      rejects({ [name]: '25.5' }, name);
    }
    for (const name of ['HEALTH_PORT', 'METRICS_PORT'] as const) {
      rejects({ [name]: '65536' }, name, /0\.\.65535/);
      rejects({ [name]: 'abc' }, name);
    }
  });

  it('rejects a SHARD that is not i/n with i < n, or that serves none of the domains', () => {
    for (const value of ['1', '1/', '/2', '2/2', '3/2', '-1/2', '0/0', 'a/b', '1/2/3', '0.5/2'])
      rejects({ SHARD: value }, 'SHARD', /i\/n/);
    const domains = ['example.com', 'another.org'];
    const empty = [0, 1, 2, 3].find((i) => domainsOfShard(domains, { index: i, count: 4 }).length === 0);
    assert.notEqual(empty, undefined, 'two domains leave at least two of four shards empty');
    rejects({ DOMAINS: domains.join(','), SHARD: `${empty}/4` }, 'SHARD', /none of the 2 domains/);
  });

  it('reads SHARD as a share of DOMAINS, which stays the list of every hosted domain', () => {
    const domains = Array.from({ length: 40 }, (_, i) => `d${i}.example`);
    const shares = [0, 1, 2].map((index) => {
      const config = build({ DOMAINS: domains.join(','), SHARD: ` ${index}/3 ` });
      assert.deepEqual(config.domains, domains, 'DOMAINS is every hosted domain, whatever the shard');
      assert.deepEqual(config.shard, { index, count: 3 });
      return servedDomains(config);
    });
    assert.deepEqual(shares.flat().sort(), [...domains].sort(), 'each domain in exactly one shard');
    for (const share of shares) assert.ok(share.length > 0);
  });

  it('rejects POLLER_THREADS outside 0..1024', () => {
    rejects({ POLLER_THREADS: '-1' }, 'POLLER_THREADS', /0\.\.1024/);
    rejects({ POLLER_THREADS: '1025' }, 'POLLER_THREADS', /0\.\.1024/);
    rejects({ POLLER_THREADS: 'all' }, 'POLLER_THREADS', /not an integer/);
    assert.equal(build({ POLLER_THREADS: '8' }).poll.threads, 8);
  });

  it('rejects an empty domain list', () => {
    rejects({ DOMAINS: '' }, 'DOMAINS', /no domain given/);
    rejects({ DOMAINS: ' , ,' }, 'DOMAINS', /no domain given/);
    assert.throws(
      () => buildConfig({}),
      (error: unknown) => error instanceof ConfigError && error.setting === 'DOMAINS',
    );
  });

  it('rejects malformed domains', () => {
    for (const domain of [
      'localhost',
      'example',
      'exa mple.com',
      'example..com',
      '-example.com',
      'example-.com',
      'example.com.',
      'user@example.com',
      'example.c_m',
      'example.123',
      `${'a'.repeat(64)}.com`,
      'http://example.com',
    ]) {
      rejects({ DOMAINS: domain }, 'DOMAINS', /not a valid domain name/);
    }
  });

  it('rejects a domain listed twice, in any case', () => {
    rejects({ DOMAINS: 'example.com,another.org,example.com' }, 'DOMAINS', /twice/);
    rejects({ DOMAINS: 'example.com,EXAMPLE.com' }, 'DOMAINS', /twice/);
  });

  it('rejects values that are not booleans', () => {
    for (const name of [
      'S3_FORCE_PATH_STYLE',
      'OOO_REQUIRE_ADDRESSED',
      'ADD_VERDICT_HEADERS',
      'LOG_REDACT_ADDRESSES',
    ] as const) {
      rejects({ [name]: 'maybe' }, name, /not a boolean/);
      rejects({ [name]: '2' }, name, /not a boolean/);
    }
  });

  it('rejects integers out of range, and non-integers', () => {
    const cases: Array<[SettingName, string]> = [
      ['WAIT_TIME_SECONDS', '21'],
      ['WAIT_TIME_SECONDS', '-1'],
      ['MAX_MESSAGES_PER_RECEIVE', '0'],
      ['MAX_MESSAGES_PER_RECEIVE', '11'],
      ['MESSAGE_CONCURRENCY', '0'],
      ['MESSAGE_CONCURRENCY', '1001'],
      ['MAX_RECEIVES', '0'],
      ['SMTP_MAX_CONNECTIONS', '0'],
      ['SMTP_MAX_CONNECTIONS', '101'],
      ['SMTP_TIMEOUT_MS', '999'],
      ['SMTP_TIMEOUT_MS', '600001'],
      ['MAX_MAIL_BYTES', '1023'],
      ['S3_MAX_ATTEMPTS', '0'],
      ['S3_MAX_ATTEMPTS', '21'],
      ['RULES_CACHE_SECONDS', '-1'],
      ['RULES_CACHE_SECONDS', '86401'],
    ];
    for (const [name, value] of cases) rejects({ [name]: value }, name, /out of range/);
    for (const name of [
      'WAIT_TIME_SECONDS',
      'MAX_MESSAGES_PER_RECEIVE',
      'SMTP_TIMEOUT_MS',
      'MAX_MAIL_BYTES',
    ] as const) {
      rejects({ [name]: '1.5' }, name, /not an integer/);
      rejects({ [name]: 'ten' }, name, /not an integer/);
      rejects({ [name]: '1e3' }, name, /not an integer/);
    }
  });

  it('rejects numbers out of range, and non-numbers', () => {
    rejects({ OOO_REPLY_INTERVAL_DAYS: '-1' }, 'OOO_REPLY_INTERVAL_DAYS', /out of range/);
    rejects({ OOO_REPLY_INTERVAL_DAYS: '366' }, 'OOO_REPLY_INTERVAL_DAYS', /out of range/);
    rejects({ OOO_REPLY_INTERVAL_DAYS: 'a week' }, 'OOO_REPLY_INTERVAL_DAYS', /not a number/);
    rejects({ SHUTDOWN_GRACE_SECONDS: '3601' }, 'SHUTDOWN_GRACE_SECONDS', /out of range/);
    rejects({ SHUTDOWN_GRACE_SECONDS: 'Infinity' }, 'SHUTDOWN_GRACE_SECONDS');
    assert.equal(build({ OOO_REPLY_INTERVAL_DAYS: '0.5' }).autoReply.intervalDays, 0.5);
  });

  it('rejects endpoint values that are not http(s) URLs', () => {
    for (const name of [
      'AWS_ENDPOINT_URL',
      'AWS_ENDPOINT_URL_SQS',
      'AWS_ENDPOINT_URL_S3',
      'AWS_ENDPOINT_URL_SES',
      'AWS_ENDPOINT_URL_SESV2',
      'AWS_ENDPOINT_URL_DYNAMODB',
      'AWS_ENDPOINT_URL_SNS',
      'AWS_ENDPOINT_URL_STS',
    ] as const) {
      rejects({ [name]: 'localhost:4566' }, name);
      rejects({ [name]: 'not a url' }, name, /not a URL/);
      rejects({ [name]: 'ftp://127.0.0.1:21' }, name, /http/);
    }
  });

  it('reads DOCTOR_DNS_SERVERS as IP addresses with optional ports, and names it when one is not', () => {
    assert.deepEqual(build({}).doctorDnsServers, []);
    assert.deepEqual(
      build({ DOCTOR_DNS_SERVERS: ' 1.1.1.1, 127.0.0.1:5353 ,[::1]:53,::1' }).doctorDnsServers,
      ['1.1.1.1', '127.0.0.1:5353', '[::1]:53', '::1'],
    );
    for (const bad of ['dns.google', '1.1.1.1:0', '1.1.1.1:70000', '300.1.1.1', '[::1]:x']) {
      rejects({ DOCTOR_DNS_SERVERS: bad }, 'DOCTOR_DNS_SERVERS', /not an IP address/);
    }
  });

  it('rejects a queue name template without {domain} or with characters SQS refuses', () => {
    rejects({ QUEUE_NAME_TEMPLATE: 'mail-queue' }, 'QUEUE_NAME_TEMPLATE', /\{domain\}/);
    rejects({ QUEUE_NAME_TEMPLATE: '{domain} queue' }, 'QUEUE_NAME_TEMPLATE');
    rejects({ QUEUE_NAME_TEMPLATE: '{domain}.queue' }, 'QUEUE_NAME_TEMPLATE');
    assert.equal(
      build({ QUEUE_NAME_TEMPLATE: 'ses_{domain}_in.fifo' }).queueNameTemplate,
      'ses_{domain}_in.fifo',
    );
  });

  it('rejects IN_FLIGHT_BYTES below MAX_MAIL_BYTES', () => {
    rejects({ MAX_MAIL_BYTES: '2048', IN_FLIGHT_BYTES: '2047' }, 'IN_FLIGHT_BYTES', /MAX_MAIL_BYTES/);
    rejects({ IN_FLIGHT_BYTES: String(40 * 1024 * 1024 - 1) }, 'IN_FLIGHT_BYTES');
    assert.equal(build({ MAX_MAIL_BYTES: '2048', IN_FLIGHT_BYTES: '2048' }).limits.inFlightBytes, 2048);
  });

  it('names exactly the prefix setting that is wrong', () => {
    assert.throws(
      () => build({ FORWARD_SUBJECT_PREFIX: 'a\nb' }),
      (error: unknown) => error instanceof ConfigError && error.setting === 'FORWARD_SUBJECT_PREFIX',
    );
  });

  it('rejects a queue name template with stray braces or a queue name over 80 characters', () => {
    rejects({ QUEUE_NAME_TEMPLATE: '{domain}-{queue}' }, 'QUEUE_NAME_TEMPLATE');
    rejects({ QUEUE_NAME_TEMPLATE: `{domain}-${'q'.repeat(75)}` }, 'QUEUE_NAME_TEMPLATE', /80 characters/);
    assert.equal(
      build({ QUEUE_NAME_TEMPLATE: 'mail-{domain}.fifo' }).queueNameTemplate,
      'mail-{domain}.fifo',
    );
  });

  it('rejects subject prefixes with CR, LF or NUL (header injection)', () => {
    for (const name of ['AUTOREPLY_SUBJECT_PREFIX', 'FORWARD_SUBJECT_PREFIX'] as const) {
      for (const bad of ['Auto:\r\nBcc: victim@example.org\r\n', 'a\nb', 'a\rb', 'a\0b']) {
        assert.throws(
          () => build({ [name]: bad }),
          (error: unknown) =>
            error instanceof ConfigError && error.message.includes(name) && /one line/.test(error.message),
          `${name}=${JSON.stringify(bad)}`,
        );
      }
    }
  });

  it('never lets a table name end up empty: blank falls back to the default', () => {
    const config = build({
      RULES_TABLE: ' ',
      BLOCKLIST_TABLE: '',
      OUTBOUND_TABLE: '\t',
      OOO_STATE_TABLE: '',
    });
    assert.deepEqual(
      [config.tables.rules, config.tables.blocklist, config.tables.outbound, config.tables.oooState],
      [
        SETTINGS.RULES_TABLE.default,
        SETTINGS.BLOCKLIST_TABLE.default,
        SETTINGS.OUTBOUND_TABLE.default,
        SETTINGS.OOO_STATE_TABLE.default,
      ],
    );
    for (const table of Object.values(config.tables).slice(0, 4)) assert.notEqual(table, '');
  });
});

describe('the outbound settings: configuration set, events queue, retention', () => {
  it('defaults: the set and queue the AWS app creates, 30 days', () => {
    const config = build({});
    assert.equal(config.sesConfigurationSet, 'unified-worker');
    assert.equal(config.outboundEventsQueue, 'ses-outbound-events');
    assert.equal(config.outboundRetentionDays, 30);
  });

  it('none switches the configuration set and the consumer off', () => {
    const config = build({ SES_CONFIGURATION_SET: 'none', OUTBOUND_EVENTS_QUEUE: 'NONE' });
    assert.equal(config.sesConfigurationSet, '');
    assert.equal(config.outboundEventsQueue, '');
  });

  it('rejects a configuration set name SES would refuse', () => {
    rejects({ SES_CONFIGURATION_SET: 'my set' }, 'SES_CONFIGURATION_SET', /not a configuration set name/);
    rejects({ SES_CONFIGURATION_SET: 'x'.repeat(65) }, 'SES_CONFIGURATION_SET');
    assert.equal(build({ SES_CONFIGURATION_SET: 'Prod_set-2' }).sesConfigurationSet, 'Prod_set-2');
  });

  it('rejects an events queue SQS would refuse, and a FIFO queue SNS cannot feed', () => {
    rejects({ OUTBOUND_EVENTS_QUEUE: 'events.fifo' }, 'OUTBOUND_EVENTS_QUEUE', /standard queue/);
    rejects({ OUTBOUND_EVENTS_QUEUE: 'a/b' }, 'OUTBOUND_EVENTS_QUEUE', /not an SQS queue name/);
    rejects({ OUTBOUND_EVENTS_QUEUE: 'q'.repeat(81) }, 'OUTBOUND_EVENTS_QUEUE');
  });

  it('takes a retention of 1..365 whole days', () => {
    assert.equal(build({ OUTBOUND_RETENTION_DAYS: '1' }).outboundRetentionDays, 1);
    assert.equal(build({ OUTBOUND_RETENTION_DAYS: '365' }).outboundRetentionDays, 365);
    for (const value of ['0', '366', '1.5', 'week'])
      rejects({ OUTBOUND_RETENTION_DAYS: value }, 'OUTBOUND_RETENTION_DAYS');
  });
});

describe('loadConfig', () => {
  it('--domains wins over DOMAINS', () => {
    const request = loadConfig(['--domains', 'a.example,b.example'], { DOMAINS: 'c.example' });
    assert.equal(request.kind, 'run');
    assert.deepEqual(request.kind === 'run' && request.config.domains, ['a.example', 'b.example']);
    const short = loadConfig(['-d', 'a.example'], { DOMAINS: 'c.example' });
    assert.deepEqual(short.kind === 'run' && short.config.domains, ['a.example']);
  });

  it('falls back to DOMAINS, and --log-level wins over LOG_LEVEL', () => {
    const request = loadConfig(['--log-level', 'debug'], { DOMAINS: 'c.example', LOG_LEVEL: 'error' });
    assert.ok(request.kind === 'run');
    assert.deepEqual(request.config.domains, ['c.example']);
    assert.equal(request.config.log.level, 'debug');
  });

  it('validates the --domains value like DOMAINS', () => {
    assert.throws(
      () => loadConfig(['--domains', 'not_a_domain'], { DOMAINS: 'example.com' }),
      (error: unknown) => error instanceof ConfigError && error.setting === 'DOMAINS',
    );
  });

  it('--shard wins over SHARD, and is checked like it', () => {
    const env = { DOMAINS: 'a.example,b.example,c.example,d.example', SHARD: '0/1' };
    const request = loadConfig(['--shard', '1/2'], env);
    assert.ok(request.kind === 'run');
    assert.deepEqual(request.config.shard, { index: 1, count: 2 });
    assert.deepEqual(loadConfig([], env).kind === 'run' && loadConfig([], env), {
      kind: 'run',
      config: buildConfig(env),
    });
    assert.throws(
      () => loadConfig(['--shard', 'one/two'], env),
      (error: unknown) => error instanceof ConfigError && error.setting === 'SHARD',
    );
  });

  it('answers --help and --version without validating anything', () => {
    assert.deepEqual(loadConfig(['--help'], {}), { kind: 'help' });
    assert.deepEqual(loadConfig(['-h'], { SMTP_PORT: 'bad' }), { kind: 'help' });
    assert.deepEqual(loadConfig(['--version'], {}), { kind: 'version' });
  });

  it('rejects unknown options and positional arguments as a command-line ConfigError', () => {
    for (const argv of [['--domain', 'example.com'], ['example.com'], ['--domains']]) {
      assert.throws(
        () => loadConfig(argv, { DOMAINS: 'example.com' }),
        (error: unknown) => error instanceof ConfigError && error.setting === 'command line',
        JSON.stringify(argv),
      );
    }
  });
});

describe('queueNameFor', () => {
  it('replaces {domain} by the domain with dots turned into dashes', () => {
    assert.equal(queueNameFor('{domain}-queue', 'example.com'), 'example-com-queue');
    assert.equal(queueNameFor('{domain}-queue', 'mail.example.co.uk'), 'mail-example-co-uk-queue');
    assert.equal(queueNameFor('ses-{domain}-in-{domain}', 'a.b'), 'ses-a-b-in-a-b');
  });
});

describe('the config object', () => {
  it('is frozen all the way down', () => {
    const config = build({ DOMAINS: 'example.com,another.org' });
    for (const part of [config, config.aws, config.aws.endpoints, config.smtp, config.tables, config.poll]) {
      assert.ok(Object.isFrozen(part));
    }
    assert.ok(Object.isFrozen(config.domains));
    assert.throws(() => {
      (config.smtp as { port: number }).port = 26;
    }, TypeError);
    assert.throws(() => {
      (config.domains as string[]).push('evil.example');
    }, TypeError);
    assert.equal(config.smtp.port, 2526);
  });
});

describe('documentation generated from SETTINGS', () => {
  it('worker.env.example lists exactly the SETTINGS names', () => {
    const text = readFileSync(ENV_EXAMPLE_PATH, 'utf8');
    const names = new Set<string>();
    for (const line of text.split('\n')) {
      const match = /^#?\s*([A-Z][A-Z0-9_]*)=/.exec(line);
      if (match?.[1]) names.add(match[1]);
    }
    assert.deepEqual([...names].sort(), [...NAMES].sort());
  });

  it('worker.env.example is what scripts/gen-env-example.ts generates (run `npm run gen:env` after editing SETTINGS)', () => {
    assert.equal(readFileSync(ENV_EXAMPLE_PATH, 'utf8'), renderEnvExample());
  });

  it('worker.env.example values are the defaults', () => {
    const text = readFileSync(ENV_EXAMPLE_PATH, 'utf8');
    for (const name of NAMES) {
      const line = text.split('\n').find((l) => new RegExp(`^#?\\s*${name}=`).test(l)) ?? '';
      const value = line.slice(line.indexOf('=') + 1);
      const unquoted = value.startsWith('"') ? (JSON.parse(value) as string) : value;
      assert.equal(unquoted, SETTINGS[name].default, name);
    }
  });

  it('helpText() mentions every setting with its default', () => {
    const help = helpText();
    for (const name of NAMES) {
      assert.match(help, new RegExp(`\\b${name}\\b`), name);
      const spec = SETTINGS[name];
      if (spec.default !== '') assert.ok(help.includes(`[${spec.default}]`), `${name} default`);
    }
    assert.match(help, /--domains/);
  });
});

const distMissing = existsSync(DIST_ENTRY) ? undefined : `${DIST_ENTRY} missing: run npm run build`;

// `npm test` builds first; run alone without dist/ these skip, but in CI (CI=true) they fail instead.
describe('dist/unified-worker.js with a bad setting', { skip: skipUnlessCi(distMissing) }, () => {
  before(() => {
    assert.equal(distMissing, undefined, `CI is set, so these tests must run, but ${distMissing}`);
  });

  /** Runs the built daemon with `env` (and nothing inherited but PATH); every port it could use is `port`. */
  async function runWorker(
    env: Record<string, string>,
    args: string[] = [],
  ): Promise<{ code: number | null; stdout: string; stderr: string; connections: number }> {
    let connections = 0;
    const server = createServer((socket) => {
      connections += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const endpoint = `http://127.0.0.1:${port}`;
    try {
      const child = spawn(process.execPath, [DIST_ENTRY, ...args], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          // Anything the worker might touch points at the counting server.
          AWS_ENDPOINT_URL: endpoint,
          AWS_REGION: 'us-east-1',
          AWS_ACCESS_KEY_ID: 'test',
          AWS_SECRET_ACCESS_KEY: 'test',
          SMTP_HOST: '127.0.0.1',
          SMTP_PORT: String(port),
          INTERNAL_SMTP_PORT: String(port),
          LMTP_PORT: String(port),
          HEALTH_PORT: '0',
          METRICS_PORT: '0',
          HTTP_HOST: '127.0.0.1',
          DOMAINS: 'example.com',
          ...env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
      clearTimeout(timer);
      // A connection attempt made just before exit would still be in the accept queue: give it a moment.
      await new Promise((resolve) => setTimeout(resolve, 50));
      return { code, stdout, stderr, connections };
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  const cases: Array<{ setting: string; env: Record<string, string> }> = [
    { setting: 'DELIVERY_PROTOCOL', env: { DELIVERY_PROTOCOL: 'smtps' } },
    { setting: 'SMTP_PORT', env: { SMTP_PORT: '65536' } },
    { setting: 'DOMAINS', env: { DOMAINS: 'not a domain' } },
    { setting: 'IN_FLIGHT_BYTES', env: { MAX_MAIL_BYTES: '4096', IN_FLIGHT_BYTES: '2048' } },
    { setting: 'SHARD', env: { SHARD: '2/2' } },
  ];
  for (const { setting, env } of cases) {
    it(`exits 1 with one stderr line naming ${setting}, before any network connection`, async () => {
      const result = await runWorker(env);
      assert.equal(result.code, 1, `exit code (stderr: ${result.stderr})`);
      const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 1, `exactly one stderr line, got: ${result.stderr}`);
      assert.match(lines[0] ?? '', /^unified-worker: invalid configuration: /);
      assert.ok(lines[0]?.includes(setting), `names ${setting}: ${lines[0]}`);
      assert.equal(result.stdout, '', 'nothing on stdout (no log line: the daemon never started)');
      assert.equal(result.connections, 0, 'no connection to AWS endpoints or the mail server');
    });
  }

  it('exits 2 for bad usage: the problem and the usage line, before any network connection', async () => {
    for (const [args, problem] of [
      [['--no-such-option'], /^unified-worker run: unknown option '--no-such-option'$/],
      [
        ['--domains', 'not a domain'],
        /^unified-worker run: --domains "not a domain": "not a domain" is not a valid/,
      ],
    ] as const) {
      const result = await runWorker({}, [...args]);
      assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
      const lines = result.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 2, result.stderr);
      assert.match(lines[0] ?? '', problem);
      assert.match(lines[1] ?? '', /^Usage: unified-worker run \[options\]/);
      assert.equal(result.connections, 0);
    }
  });

  it('prints the help (every setting) and exits 0 without touching the network', async () => {
    const result = await runWorker({ SMTP_PORT: 'not-checked-for-help' }, ['--help']);
    assert.equal(result.code, 0);
    for (const name of NAMES) assert.ok(result.stdout.includes(name), name);
    assert.equal(result.connections, 0);
  });
});
