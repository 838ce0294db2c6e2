import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { awsDeadlines, type AwsDeadlines } from '../aws/deadlines.ts';
import { ConfigError, errorMessage } from '../errors.ts';
import { BUCKET_RE, nameFromTemplate } from '../aws/resources.ts';
import { SETTINGS, type SettingName } from './settings.ts';
import { ALL_DOMAINS, domainsOfShard, parseShard, type Shard } from './shards.ts';

export type DeliveryProtocol = 'smtp' | 'lmtp';
export type VirusPolicy = 'tag' | 'reject';
/** What happens to a forward to an outside address of mail SES marked spam or virus FAIL. */
export type ForwardSpamPolicy = 'skip' | 'tag';

export interface AwsConfig {
  region: string;
  /** sts and sns are the operator commands' (doctor, setup); the daemon calls neither. */
  endpoints: { sqs?: string; s3?: string; ses?: string; dynamodb?: string; sns?: string; sts?: string };
  s3ForcePathStyle: boolean;
  deadlines: AwsDeadlines;
}

export interface Config {
  /** Every hosted domain (DOMAINS): forwards and replies to any of them stay on the internal route. */
  domains: readonly string[];
  /** The share of `domains` this process polls (SHARD); {@link servedDomains} lists them. */
  shard: Shard;
  aws: AwsConfig;
  queueNameTemplate: string;
  /** The bucket of a domain's mail, for the operator commands; the daemon follows each notification instead. */
  bucketNameTemplate: string;
  /**
   * Where a domain's notifications may come from, as name templates (`{domain}`): topics (empty: any) and buckets
   * besides the domain's own (`*`: any). Expanded per domain with {@link notificationSourcesFor}.
   */
  allowedSources: { topicArns: readonly string[]; buckets: readonly string[] };
  /** SES configuration set of every send through SES; '' when none (SES_CONFIGURATION_SET=none). */
  sesConfigurationSet: string;
  /** Queue of SES sending events recorded in the outbound table; '' when not consumed (OUTBOUND_EVENTS_QUEUE=none). */
  outboundEventsQueue: string;
  /** Days an outbound record is kept before DynamoDB's TTL removes it. */
  outboundRetentionDays: number;
  smtp: {
    host: string;
    port: number;
    internalPort: number;
    lmtpPort: number;
    protocol: DeliveryProtocol;
    maxConnections: number;
    timeoutMs: number;
  };
  tables: {
    rules: string;
    blocklist: string;
    outbound: string;
    oooState: string;
    /** Empty when the exactly-once ledger is disabled (IDEMPOTENCY_TABLE=none). */
    idempotency: string;
  };
  poll: {
    waitTimeSeconds: number;
    /** IDLE_POLL_ALIGN_MS. */
    idlePollAlignMs: number;
    maxMessages: number;
    messageConcurrency: number;
    maxReceives: number;
    /** RETRY_DELAYS_SECONDS. */
    retryDelaysSeconds: readonly number[];
    outageProbeSeconds: number;
    /** POLLER_THREADS: 0 = the default layout (daemon/thread-layout.ts). */
    threads: number;
  };
  limits: {
    maxMailBytes: number;
    inFlightBytes: number;
    s3MaxAttempts: number;
  };
  /** The recipient directory (rules and blocklist tables): how long a thread keeps an entry. */
  directory: { cacheSeconds: number };
  autoReply: {
    intervalDays: number;
    requireAddressed: boolean;
    requireAuthenticated: boolean;
    subjectPrefix: string;
  };
  forwarding: { subjectPrefix: string; spamPolicy: ForwardSpamPolicy };
  /** How inbound mail is judged and marked. */
  inbound: {
    virusPolicy: VirusPolicy;
    addVerdictHeaders: boolean;
    bounceRequireAuthenticated: boolean;
    loopMarkerSecret: string;
  };
  /** SES sends per second for the whole process; 0 = the account's MaxSendRate. */
  sesMaxSendRate: number;
  http: { healthPort: number; metricsPort: number; host: string };
  shutdownGraceSeconds: number;
  log: { level: string; redactAddresses: boolean };
  /** `host` or `host:port` entries for node:dns's setServers; empty = the system's resolvers. */
  doctorDnsServers: readonly string[];
}

// RFC 1035 labels; at least two labels, so `localhost` or `example` is rejected as a hosted mail domain.
const DOMAIN_RE =
  /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** A hostname of at least two RFC 1035 labels, lower-case: what DOMAINS accepts and what an address may end in. */
export function isDomainName(value: string): boolean {
  return DOMAIN_RE.test(value);
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

type Env = Readonly<Record<string, string | undefined>>;

/** Result of reading the command line: either a config, or a request for help. */
export type CliRequest = { kind: 'run'; config: Config } | { kind: 'help' } | { kind: 'version' };

/**
 * Reads argv and the environment into one validated, frozen Config. Every problem is a ConfigError naming the
 * setting, raised before anything touches the network.
 */
export function loadConfig(argv: readonly string[], env: Env): CliRequest {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli(argv);
  } catch (error) {
    throw new ConfigError('command line', errorMessage(error));
  }
  if (parsed.values.help) return { kind: 'help' };
  if (parsed.values.version) return { kind: 'version' };
  const merged: Env = {
    ...env,
    ...(parsed.values.domains !== undefined && { DOMAINS: parsed.values.domains }),
    ...(parsed.values['log-level'] !== undefined && { LOG_LEVEL: parsed.values['log-level'] }),
    ...(parsed.values.shard !== undefined && { SHARD: parsed.values.shard }),
  };
  return { kind: 'run', config: buildConfig(merged) };
}

function parseCli(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    options: {
      domains: { type: 'string', short: 'd' },
      'log-level': { type: 'string' },
      shard: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
    strict: true,
    allowPositionals: false,
  });
}

export interface BuildOptions {
  /**
   * The operator commands that work on addresses (rules, blocklist) need no domain list; with this, an unset
   * DOMAINS is an empty list instead of an error. The daemon always requires one.
   */
  domainsOptional?: boolean;
}

export function buildConfig(env: Env, options: BuildOptions = {}): Config {
  const read = new SettingReader(env);
  const domains = read.domains(options.domainsOptional ?? false);
  const generic = read.url('AWS_ENDPOINT_URL');
  const config: Config = {
    domains,
    shard: read.shard(domains),
    aws: {
      region: read.string('AWS_REGION'),
      endpoints: {
        sqs: read.url('AWS_ENDPOINT_URL_SQS') ?? generic,
        s3: read.url('AWS_ENDPOINT_URL_S3') ?? generic,
        ses: read.url('AWS_ENDPOINT_URL_SES') ?? read.url('AWS_ENDPOINT_URL_SESV2') ?? generic,
        dynamodb: read.url('AWS_ENDPOINT_URL_DYNAMODB') ?? generic,
        sns: read.url('AWS_ENDPOINT_URL_SNS') ?? generic,
        sts: read.url('AWS_ENDPOINT_URL_STS') ?? generic,
      },
      s3ForcePathStyle: read.bool('S3_FORCE_PATH_STYLE'),
      deadlines: awsDeadlines(
        read.int('AWS_CALL_TIMEOUT_MS', 500, 600_000),
        read.int('AWS_IDLE_TIMEOUT_MS', 1_000, 600_000),
      ),
    },
    queueNameTemplate: read.queueTemplate(),
    bucketNameTemplate: read.bucketTemplate(),
    allowedSources: {
      topicArns: read.list('ALLOWED_TOPIC_ARNS'),
      buckets: read.list('ALLOWED_MAIL_BUCKETS'),
    },
    sesConfigurationSet: read.optionalName('SES_CONFIGURATION_SET'),
    outboundEventsQueue: read.optionalName('OUTBOUND_EVENTS_QUEUE'),
    outboundRetentionDays: read.int('OUTBOUND_RETENTION_DAYS', 1, 365),
    smtp: {
      host: read.string('SMTP_HOST'),
      port: read.port('SMTP_PORT'),
      internalPort: read.port('INTERNAL_SMTP_PORT'),
      lmtpPort: read.port('LMTP_PORT'),
      protocol: read.oneOf('DELIVERY_PROTOCOL', ['smtp', 'lmtp'] as const),
      maxConnections: read.int('SMTP_MAX_CONNECTIONS', 2, 100),
      timeoutMs: read.int('SMTP_TIMEOUT_MS', 1000, 600_000),
    },
    tables: {
      rules: read.string('RULES_TABLE'),
      blocklist: read.string('BLOCKLIST_TABLE'),
      outbound: read.string('OUTBOUND_TABLE'),
      oooState: read.string('OOO_STATE_TABLE'),
      idempotency: read.optionalName('IDEMPOTENCY_TABLE'),
    },
    poll: {
      waitTimeSeconds: read.int('WAIT_TIME_SECONDS', 0, 20),
      idlePollAlignMs: read.int('IDLE_POLL_ALIGN_MS', 0, 5_000),
      maxMessages: read.int('MAX_MESSAGES_PER_RECEIVE', 1, 10),
      messageConcurrency: read.int('MESSAGE_CONCURRENCY', 1, 1000),
      maxReceives: read.int('MAX_RECEIVES', 1, 1000),
      retryDelaysSeconds: read.seconds('RETRY_DELAYS_SECONDS', 0, 43_200),
      outageProbeSeconds: read.number('OUTAGE_PROBE_SECONDS', 0.1, 3600),
      threads: read.int('POLLER_THREADS', 0, 1024),
    },
    limits: {
      maxMailBytes: read.int('MAX_MAIL_BYTES', 1024, 200 * 1024 * 1024),
      inFlightBytes: read.int('IN_FLIGHT_BYTES', 1024, 4 * 1024 * 1024 * 1024),
      s3MaxAttempts: read.int('S3_MAX_ATTEMPTS', 1, 20),
    },
    directory: { cacheSeconds: read.int('RULES_CACHE_SECONDS', 0, 86_400) },
    autoReply: {
      intervalDays: read.number('OOO_REPLY_INTERVAL_DAYS', 0, 365),
      requireAddressed: read.bool('OOO_REQUIRE_ADDRESSED'),
      requireAuthenticated: read.bool('OOO_REQUIRE_AUTHENTICATED'),
      subjectPrefix: read.string('AUTOREPLY_SUBJECT_PREFIX', { allowEmpty: true }),
    },
    forwarding: {
      subjectPrefix: read.string('FORWARD_SUBJECT_PREFIX', { allowEmpty: true }),
      spamPolicy: read.oneOf('FORWARD_SPAM_POLICY', ['skip', 'tag'] as const),
    },
    inbound: {
      virusPolicy: read.oneOf('VIRUS_POLICY', ['tag', 'reject'] as const),
      addVerdictHeaders: read.bool('ADD_VERDICT_HEADERS'),
      bounceRequireAuthenticated: read.bool('BOUNCE_REQUIRE_AUTHENTICATED'),
      loopMarkerSecret: read.string('LOOP_MARKER_SECRET', { allowEmpty: true }),
    },
    sesMaxSendRate: read.number('SES_MAX_SEND_RATE', 0, 100_000),
    http: {
      healthPort: read.port('HEALTH_PORT', { allowZero: true }),
      metricsPort: read.port('METRICS_PORT', { allowZero: true }),
      host: read.string('HTTP_HOST'),
    },
    shutdownGraceSeconds: read.number('SHUTDOWN_GRACE_SECONDS', 0, 3600),
    log: {
      level: read.oneOf('LOG_LEVEL', LOG_LEVELS),
      redactAddresses: read.bool('LOG_REDACT_ADDRESSES'),
    },
    doctorDnsServers: read.dnsServers('DOCTOR_DNS_SERVERS'),
  };
  const prefixes = [
    ['AUTOREPLY_SUBJECT_PREFIX', config.autoReply.subjectPrefix],
    ['FORWARD_SUBJECT_PREFIX', config.forwarding.subjectPrefix],
  ] as const;
  for (const [name, value] of prefixes) {
    if (/[\r\n\0]/.test(value)) throw new ConfigError(name, 'must be one line (no CR, LF or NUL)');
  }
  for (const domain of domains) {
    const name = queueNameFor(config.queueNameTemplate, domain);
    if (name.length > 80)
      throw new ConfigError('QUEUE_NAME_TEMPLATE', `queue name "${name}" is over SQS's 80 characters`);
    const bucket = nameFromTemplate(config.bucketNameTemplate, domain);
    if (bucket.length < 3 || bucket.length > 63)
      throw new ConfigError('BUCKET_NAME_TEMPLATE', `bucket name "${bucket}" is not 3..63 characters`);
    const sources = notificationSourcesFor(config, domain);
    for (const arn of sources.topicArns) {
      if (!TOPIC_ARN_RE.test(arn))
        throw new ConfigError(
          'ALLOWED_TOPIC_ARNS',
          `"${arn}" is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)`,
        );
    }
    for (const name of sources.buckets) {
      if (!BUCKET_RE.test(name))
        throw new ConfigError('ALLOWED_MAIL_BUCKETS', `"${name}" is not an S3 bucket name`);
    }
  }
  checkOutboundNames(config);
  const buckets = config.allowedSources.buckets;
  if (buckets.includes(ANY_BUCKET) && buckets.length > 1)
    throw new ConfigError('ALLOWED_MAIL_BUCKETS', '`*` allows every bucket: list no bucket beside it');
  if (config.limits.inFlightBytes < config.limits.maxMailBytes) {
    throw new ConfigError(
      'IN_FLIGHT_BYTES',
      `must be at least MAX_MAIL_BYTES (${config.limits.maxMailBytes}) so the largest mail fits`,
    );
  }
  return deepFreeze(config);
}

/**
 * SES names a configuration set with up to 64 letters, digits, `_` and `-`; an SQS queue name is up to 80 of them.
 * The events queue is fed by a standard SNS topic, which cannot deliver to a FIFO queue.
 */
function checkOutboundNames(config: Pick<Config, 'sesConfigurationSet' | 'outboundEventsQueue'>): void {
  if (config.sesConfigurationSet && !/^[A-Za-z0-9_-]{1,64}$/.test(config.sesConfigurationSet)) {
    throw new ConfigError(
      'SES_CONFIGURATION_SET',
      `"${config.sesConfigurationSet}" is not a configuration set name (1..64 letters, digits, _ and -), or none`,
    );
  }
  if (config.outboundEventsQueue.endsWith('.fifo')) {
    throw new ConfigError(
      'OUTBOUND_EVENTS_QUEUE',
      'must be a standard queue: the SNS topic of SES events cannot deliver to a FIFO queue',
    );
  }
  if (config.outboundEventsQueue && !/^[A-Za-z0-9_-]{1,80}$/.test(config.outboundEventsQueue)) {
    throw new ConfigError(
      'OUTBOUND_EVENTS_QUEUE',
      `"${config.outboundEventsQueue}" is not an SQS queue name (1..80 letters, digits, _ and -), or none`,
    );
  }
}

const TOPIC_ARN_RE = /^arn:aws[a-z-]*:sns:[a-z0-9-]{1,32}:\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?$/;

/** The domains this process polls: its shard of DOMAINS (all of them without SHARD). */
export function servedDomains(config: Pick<Config, 'domains' | 'shard'>): string[] {
  return domainsOfShard(config.domains, config.shard);
}

/** ALLOWED_MAIL_BUCKETS's value that lets a notification name any bucket. */
export const ANY_BUCKET = '*';

/**
 * A domain's allowlists of notification sources, `{domain}` expanded (an empty list: any source). The buckets are
 * the domain's own (BUCKET_NAME_TEMPLATE, the naming the AWS app uses) and those of ALLOWED_MAIL_BUCKETS, so by
 * default whoever can write to the queue can only point the worker at this domain's mail; `*` allows any.
 */
export function notificationSourcesFor(
  config: Pick<Config, 'allowedSources' | 'bucketNameTemplate'>,
  domain: string,
): { topicArns: string[]; buckets: string[] } {
  const listed = config.allowedSources.buckets;
  const buckets = listed.includes(ANY_BUCKET)
    ? []
    : [...new Set([config.bucketNameTemplate, ...listed].map((t) => nameFromTemplate(t, domain)))];
  return { topicArns: config.allowedSources.topicArns.map((t) => nameFromTemplate(t, domain)), buckets };
}

/** The queue name of a domain: `{domain}` is the domain with dots replaced by dashes (`example-com-queue`). */
export function queueNameFor(template: string, domain: string): string {
  return nameFromTemplate(template, domain);
}

class SettingReader {
  constructor(private readonly env: Env) {}

  private raw(name: SettingName): string {
    const value = this.env[name];
    if (value !== undefined && value.trim() !== '') return value.trim();
    return SETTINGS[name].default;
  }

  string(name: SettingName, options: { allowEmpty?: boolean } = {}): string {
    const value = name.endsWith('_PREFIX') ? (this.env[name] ?? SETTINGS[name].default) : this.raw(name);
    if (!options.allowEmpty && value === '') throw new ConfigError(name, 'must not be empty');
    return value;
  }

  /** A resource name whose feature the explicit value `none` switches off (then ''); empty means the default. */
  optionalName(name: SettingName): string {
    const value = this.raw(name);
    return value.toLowerCase() === 'none' ? '' : value;
  }

  url(name: SettingName): string | undefined {
    const value = this.raw(name);
    if (value === '') return undefined;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(name, `"${value}" is not a URL (expected e.g. http://127.0.0.1:4566)`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new ConfigError(name, `"${value}" must be an http:// or https:// URL`);
    }
    return value.replace(/\/+$/, '');
  }

  /** A comma-separated list of whole seconds, at least one, each within `min..max` (SQS: visibility ≤ 12 h). */
  seconds(name: SettingName, min: number, max: number): number[] {
    const items = this.list(name);
    if (items.length === 0) throw new ConfigError(name, 'must list at least one number of seconds');
    return items.map((item) => {
      const n = Number(item);
      if (!/^\d+$/.test(item) || n < min || n > max)
        throw new ConfigError(name, `"${item}" is not a whole number of seconds from ${min} to ${max}`);
      return n;
    });
  }

  /** A comma-separated list; blanks dropped. */
  list(name: SettingName): string[] {
    return this.raw(name)
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  }

  /** IPv4 or IPv6 addresses, each with an optional port (`1.1.1.1`, `127.0.0.1:5353`, `[::1]:53`). */
  dnsServers(name: SettingName): string[] {
    const servers = this.list(name);
    for (const server of servers) {
      const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(server) ?? /^([^:]+)(?::(\d+))?$/.exec(server);
      const host = match?.[1] ?? server;
      const port = match?.[2] === undefined ? 53 : Number(match[2]);
      if (isIP(host) === 0 || port < 1 || port > 65_535) {
        throw new ConfigError(
          name,
          `"${server}" is not an IP address with an optional port (e.g. 1.1.1.1 or 127.0.0.1:5353)`,
        );
      }
    }
    return servers;
  }

  bool(name: SettingName): boolean {
    const value = this.raw(name).toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(value)) return true;
    if (['false', '0', 'no', 'off'].includes(value)) return false;
    throw new ConfigError(name, `"${value}" is not a boolean (true/false)`);
  }

  number(name: SettingName, min: number, max: number): number {
    const value = this.raw(name);
    const n = Number(value);
    if (value === '' || !Number.isFinite(n)) throw new ConfigError(name, `"${value}" is not a number`);
    if (n < min || n > max) throw new ConfigError(name, `${n} is out of range ${min}..${max}`);
    return n;
  }

  int(name: SettingName, min: number, max: number): number {
    const value = this.raw(name);
    if (!/^-?\d+$/.test(value)) throw new ConfigError(name, `"${value}" is not an integer`);
    return this.number(name, min, max);
  }

  port(name: SettingName, options: { allowZero?: boolean } = {}): number {
    const value = this.raw(name);
    if (!/^\d+$/.test(value)) throw new ConfigError(name, `"${value}" is not a port number`);
    const n = Number(value);
    const min = options.allowZero ? 0 : 1;
    if (n < min || n > 65535) throw new ConfigError(name, `${n} is not a valid port (${min}..65535)`);
    return n;
  }

  oneOf<T extends string>(name: SettingName, allowed: readonly T[]): T {
    const value = this.raw(name).toLowerCase();
    if (!(allowed as readonly string[]).includes(value)) {
      throw new ConfigError(name, `"${value}" is not one of ${allowed.join(', ')}`);
    }
    return value as T;
  }

  domains(optional: boolean): string[] {
    const value = this.raw('DOMAINS');
    const domains = value
      .split(',')
      .map((d) => d.trim().toLowerCase())
      .filter((d) => d !== '');
    if (domains.length === 0 && !optional) {
      throw new ConfigError('DOMAINS', 'no domain given (use --domains example.com,another.com or DOMAINS)');
    }
    for (const domain of domains) {
      if (!DOMAIN_RE.test(domain)) throw new ConfigError('DOMAINS', `"${domain}" is not a valid domain name`);
    }
    if (new Set(domains).size !== domains.length)
      throw new ConfigError('DOMAINS', 'a domain is listed twice');
    return domains;
  }

  /** SHARD as `i/n`; a shard that would serve none of the given domains is a mistake, not an idle process. */
  shard(domains: readonly string[]): Shard {
    const value = this.raw('SHARD');
    if (value === '') return ALL_DOMAINS;
    const shard = parseShard(value);
    if (!shard || shard.count < 1 || shard.index >= shard.count) {
      throw new ConfigError('SHARD', `"${value}" is not i/n with 0 <= i < n (e.g. 0/4)`);
    }
    if (domains.length > 0 && domainsOfShard(domains, shard).length === 0) {
      throw new ConfigError(
        'SHARD',
        `shard ${shard.index}/${shard.count} has none of the ${domains.length} domains of DOMAINS (docs/scaling.md says which shard each domain is in)`,
      );
    }
    return shard;
  }

  bucketTemplate(): string {
    const value = this.raw('BUCKET_NAME_TEMPLATE');
    // S3 bucket names: lower-case letters, digits, dots and dashes; {domain} expands to such characters.
    if (!/^(?:[a-z0-9.-]|\{domain\})+$/.test(value)) {
      throw new ConfigError('BUCKET_NAME_TEMPLATE', 'may only contain a-z, 0-9, ., - and {domain}');
    }
    return value;
  }

  queueTemplate(): string {
    const value = this.raw('QUEUE_NAME_TEMPLATE');
    if (!value.includes('{domain}')) throw new ConfigError('QUEUE_NAME_TEMPLATE', 'must contain {domain}');
    if (!/^(?:[A-Za-z0-9_-]|\{domain\})+(\.fifo)?$/.test(value)) {
      throw new ConfigError('QUEUE_NAME_TEMPLATE', 'may only contain letters, digits, -, _ and {domain}');
    }
    return value;
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
