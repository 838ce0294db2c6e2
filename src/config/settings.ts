/**
 * Every environment variable the worker reads, with its default and meaning. `--help`, `.env.example` and the
 * config test are all checked against this one table, so documentation cannot drift from the code.
 */
export interface SettingSpec {
  readonly default: string;
  readonly help: string;
  readonly group:
    | 'Domains'
    | 'AWS'
    | 'Mail server'
    | 'Tables'
    | 'Polling'
    | 'Limits'
    | 'Rules'
    | 'Inbound mail'
    | 'Operations';
}

export const SETTINGS = {
  DOMAINS: {
    group: 'Domains',
    default: '',
    help: 'Comma-separated domains to serve (fallback for --domains).',
  },
  SHARD: {
    group: 'Domains',
    default: '',
    help: "i/n: this process serves only shard i of n (0 <= i < n) of DOMAINS; a domain's shard is the first 4 bytes of SHA-256 of its name, big-endian, mod n. Empty = every domain. --shard wins.",
  },

  AWS_REGION: { group: 'AWS', default: 'us-east-1', help: 'AWS region of SQS, S3, SES and DynamoDB.' },
  AWS_ENDPOINT_URL: {
    group: 'AWS',
    default: '',
    help: 'Endpoint override for every AWS service (emulators).',
  },
  AWS_ENDPOINT_URL_SQS: { group: 'AWS', default: '', help: 'Endpoint override for SQS.' },
  AWS_ENDPOINT_URL_S3: { group: 'AWS', default: '', help: 'Endpoint override for S3.' },
  AWS_ENDPOINT_URL_SES: {
    group: 'AWS',
    default: '',
    help: 'Endpoint override for SES (v2 API; doctor and setup also call its v1 receipt-rule API there).',
  },
  AWS_ENDPOINT_URL_SESV2: { group: 'AWS', default: '', help: 'Alias of AWS_ENDPOINT_URL_SES.' },
  AWS_ENDPOINT_URL_DYNAMODB: { group: 'AWS', default: '', help: 'Endpoint override for DynamoDB.' },
  AWS_ENDPOINT_URL_SNS: {
    group: 'AWS',
    default: '',
    help: 'Endpoint override for SNS (doctor and setup: the topics and their subscriptions).',
  },
  AWS_ENDPOINT_URL_STS: {
    group: 'AWS',
    default: '',
    help: 'Endpoint override for STS (doctor and setup: who the caller is).',
  },
  S3_FORCE_PATH_STYLE: {
    group: 'AWS',
    default: 'false',
    help: 'Use path-style S3 URLs (needed by emulators).',
  },
  QUEUE_NAME_TEMPLATE: {
    group: 'AWS',
    default: '{domain}-queue',
    help: 'SQS queue name per domain; {domain} is the domain with dots replaced by dashes.',
  },
  BUCKET_NAME_TEMPLATE: {
    group: 'AWS',
    default: '{domain}-emails',
    help: "S3 bucket SES stores a domain's mail in (setup, doctor, inject, replay, the AWS template); the only bucket a domain's notifications may name unless ALLOWED_MAIL_BUCKETS lists more.",
  },
  SES_CONFIGURATION_SET: {
    group: 'AWS',
    default: 'unified-worker',
    help: "SES configuration set named on every send through SES (the worker's forwards and auto-replies, docker-mailserver's relay); its event destination feeds OUTBOUND_EVENTS_QUEUE. none = no configuration set.",
  },
  OUTBOUND_EVENTS_QUEUE: {
    group: 'AWS',
    default: 'ses-outbound-events',
    help: 'SQS queue of SES sending events (send, bounce, complaint), recorded in OUTBOUND_TABLE so bounces can be rewritten. none = not consumed.',
  },
  SES_MAX_SEND_RATE: {
    group: 'AWS',
    default: '0',
    help: "Forwards and auto-replies sent through SES per second, for the whole process; 0 = the account's MaxSendRate from SES GetAccount (14 when it cannot be read).",
  },
  AWS_CALL_TIMEOUT_MS: {
    group: 'AWS',
    default: '10000',
    help: 'Deadline of every AWS call but a long poll, to the first byte of its answer (a long poll gets WAIT_TIME_SECONDS on top); past it the call fails as a timeout and is retried where safe.',
  },
  AWS_IDLE_TIMEOUT_MS: {
    group: 'AWS',
    default: '30000',
    help: 'An AWS connection on which no byte moves for this long is given up (large S3 bodies and SES uploads have no total deadline, only this one).',
  },
  ALLOWED_TOPIC_ARNS: {
    group: 'AWS',
    default: '',
    help: "Comma-separated SNS topic ARNs a domain's notifications may come from ({domain} allowed); others go to the dead-letter queue. Empty = any.",
  },
  ALLOWED_MAIL_BUCKETS: {
    group: 'AWS',
    default: '',
    help: "Comma-separated S3 buckets a domain's notifications may name besides its own (BUCKET_NAME_TEMPLATE; {domain} allowed); others go to the dead-letter queue. * = any bucket.",
  },

  SMTP_HOST: {
    group: 'Mail server',
    default: 'localhost',
    help: 'Host of the mail server (docker-mailserver).',
  },
  SMTP_PORT: {
    group: 'Mail server',
    default: '2526',
    help: "SMTP port for mailbox delivery: the worker's own Postfix service (docker/mailserver/user-patches.sh), routed like port 25, the only one besides INTERNAL_SMTP_PORT where a copy keeps its delivery id.",
  },
  INTERNAL_SMTP_PORT: {
    group: 'Mail server',
    default: '2525',
    help: 'SMTP port for internal forwards/auto-replies (bypasses transport_maps that would relay out via SES; user-patches.sh).',
  },
  LMTP_PORT: {
    group: 'Mail server',
    default: '24',
    help: 'Dovecot LMTP port (used when DELIVERY_PROTOCOL=lmtp).',
  },
  DELIVERY_PROTOCOL: {
    group: 'Mail server',
    default: 'smtp',
    help: 'smtp (through Postfix) | lmtp (straight into Dovecot; with one worker process only: README, "Exactly once").',
  },
  SMTP_MAX_CONNECTIONS: {
    group: 'Mail server',
    default: '5',
    help: 'Upper bound (2..100) of connections to the mail server, shared by all domains; one serves the internal port.',
  },
  SMTP_TIMEOUT_MS: { group: 'Mail server', default: '60000', help: 'Connection/greeting/socket timeout.' },

  RULES_TABLE: { group: 'Tables', default: 'email-rules', help: 'DynamoDB table of per-address rules.' },
  BLOCKLIST_TABLE: {
    group: 'Tables',
    default: 'email-blocked-senders',
    help: 'DynamoDB table of blocked senders.',
  },
  OUTBOUND_TABLE: {
    group: 'Tables',
    default: 'ses-outbound-messages',
    help: 'DynamoDB table of mail sent out through SES (key MessageId, TTL attribute expires_at), written from OUTBOUND_EVENTS_QUEUE and read to rewrite bounces.',
  },
  OUTBOUND_RETENTION_DAYS: {
    group: 'Tables',
    default: '30',
    help: 'Days a record of OUTBOUND_TABLE is kept (its expires_at); a bounce arriving later is delivered unchanged (1..365).',
  },
  OOO_STATE_TABLE: {
    group: 'Tables',
    default: 'email-ooo-replies',
    help: 'DynamoDB table remembering auto-replies (key pk, TTL attribute expires_at).',
  },
  IDEMPOTENCY_TABLE: {
    group: 'Tables',
    default: 'email-worker-idempotency',
    help: 'DynamoDB table of the exactly-once ledger (key pk, TTL expires_at); "none" disables it (retries may then deliver twice).',
  },

  WAIT_TIME_SECONDS: { group: 'Polling', default: '20', help: 'SQS long-poll wait (0..20).' },
  IDLE_POLL_ALIGN_MS: {
    group: 'Polling',
    default: '500',
    help: "After an empty receive, a domain's next long poll starts on the next whole multiple of this many milliseconds of the clock, so idle domains' polls end together and wake the process once for a group (0..5000; 0 = at once). Mail that arrives in that gap waits at most this long.",
  },
  MAX_MESSAGES_PER_RECEIVE: { group: 'Polling', default: '10', help: 'Messages per ReceiveMessage (1..10).' },
  MESSAGE_CONCURRENCY: { group: 'Polling', default: '100', help: 'Messages processed at once per domain.' },
  RETRY_DELAYS_SECONDS: {
    group: 'Polling',
    default: '30,60,120,300,600,900',
    help: 'How long a message waits after a temporary failure, by receive count (the last delay repeats), in seconds.',
  },
  OUTAGE_PROBE_SECONDS: {
    group: 'Polling',
    default: '30',
    help: 'While mail waits for the mail server or SES to come back (held in the queue, its receive count untouched), one waiting mail is tried again this often; the mail server coming back is also seen within seconds by its own check.',
  },
  POLLER_THREADS: {
    group: 'Polling',
    default: '0',
    help: 'Worker threads polling the domains, each a share of them: 0 = one thread per domain up to 16 domains, 16 threads beyond; N = N threads (at most one per domain).',
  },
  MAX_RECEIVES: {
    group: 'Polling',
    default: '10',
    help: "Receive count at which a failing message is marked failed in S3; the queue's redrive maxReceiveCount wins when it has one.",
  },

  MAX_MAIL_BYTES: {
    group: 'Limits',
    default: '41943040',
    help: 'Largest mail accepted (SES inbound maximum is 40 MB); larger is a recorded permanent failure.',
  },
  IN_FLIGHT_BYTES: {
    group: 'Limits',
    default: '134217728',
    help: 'Budget of mail bytes held in memory at once per poller thread (one per domain by default; a thread polling several shares it fairly).',
  },
  S3_MAX_ATTEMPTS: { group: 'Limits', default: '5', help: 'Attempts to fetch a mail object not yet in S3.' },

  RULES_CACHE_SECONDS: {
    group: 'Rules',
    default: '30',
    help: 'Per-thread cache of rules/blocklists (0 disables).',
  },
  OOO_REPLY_INTERVAL_DAYS: {
    group: 'Rules',
    default: '7',
    help: 'At most one auto-reply per sender and recipient in this many days.',
  },
  OOO_REQUIRE_ADDRESSED: {
    group: 'Rules',
    default: 'true',
    help: 'Only auto-reply when the recipient is named in To/Cc.',
  },
  OOO_REQUIRE_AUTHENTICATED: {
    group: 'Rules',
    default: 'true',
    help: 'Only auto-reply to an external address that SES authenticated (SPF, DKIM or DMARC PASS for its domain).',
  },

  AUTOREPLY_SUBJECT_PREFIX: { group: 'Rules', default: 'Auto: ', help: 'Subject prefix of auto-replies.' },
  FORWARD_SUBJECT_PREFIX: { group: 'Rules', default: 'FWD: ', help: 'Subject prefix of forwarded mail.' },
  FORWARD_SPAM_POLICY: {
    group: 'Rules',
    default: 'skip',
    help: 'skip | tag: a forward to an outside address of mail SES marked spam or virus FAIL is skipped (recorded in S3, counted), or sent with the SES verdict headers. Forwards within the hosted domains and the mailbox copy are not affected.',
  },

  BOUNCE_REQUIRE_AUTHENTICATED: {
    group: 'Inbound mail',
    default: 'true',
    help: 'Only rewrite a bounce from MAILER-DAEMON@amazonses.com that SES authenticated (DMARC PASS, or SPF PASS for an amazonses.com envelope sender).',
  },
  VIRUS_POLICY: {
    group: 'Inbound mail',
    default: 'tag',
    help: 'tag | reject: what to do with an SES virus FAIL.',
  },
  ADD_VERDICT_HEADERS: {
    group: 'Inbound mail',
    default: 'true',
    help: 'Prepend X-SES-*-Verdict headers to delivered mail.',
  },
  LOOP_MARKER_SECRET: {
    group: 'Inbound mail',
    default: '',
    help: "The deployment's secret (the same on every replica): signs the loop marker, so unsigned markers from outside are ignored, and keys the mailbox delivery ids, so nobody can compute another mail's id.",
  },
  HEALTH_PORT: { group: 'Operations', default: '8080', help: 'Port of /health and /ready (0 = ephemeral).' },
  METRICS_PORT: { group: 'Operations', default: '8000', help: 'Port of /metrics (0 = ephemeral).' },
  HTTP_HOST: { group: 'Operations', default: '0.0.0.0', help: 'Address the health/metrics servers bind.' },
  SHUTDOWN_GRACE_SECONDS: {
    group: 'Operations',
    default: '25',
    help: 'Time in-flight messages get to finish on SIGTERM.',
  },
  LOG_LEVEL: {
    group: 'Operations',
    default: 'info',
    help: 'fatal | error | warn | info | debug | trace | silent.',
  },
  LOG_REDACT_ADDRESSES: {
    group: 'Operations',
    default: 'false',
    help: 'Replace mail addresses in logs by a short hash.',
  },
  DOCTOR_DNS_SERVERS: {
    group: 'Operations',
    default: '',
    help: "DNS servers doctor asks for each domain's MX record (comma-separated IP or IP:port); empty = the system's.",
  },
} as const satisfies Record<string, SettingSpec>;

export type SettingName = keyof typeof SETTINGS;

export function helpText(): string {
  return [
    'unified-worker: delivers mail received by Amazon SES into a docker-mailserver (Postfix + Dovecot).',
    '',
    'Usage: node dist/unified-worker.js [run] --domains example.com,another.com',
    '       node dist/unified-worker.js <command> --help   (setup, doctor, rules, blocklist, inject, replay, dlq)',
    '',
    'Options:',
    '  -d, --domains <list>   Comma-separated domains to serve (env DOMAINS).',
    '      --shard <i/n>      Serve only shard i of n of the domains (env SHARD).',
    '      --log-level <lvl>  Log level (env LOG_LEVEL).',
    '  -h, --help             Print this help.',
    '  -v, --version          Print the version.',
    '',
    settingsHelp(),
  ].join('\n');
}

/** Every setting with its default, grouped: the part of the help the daemon and every command share. */
export function settingsHelp(): string {
  const lines = ['Environment variables (default in brackets), read by the daemon and every command:'];
  let group = '';
  for (const [name, spec] of Object.entries(SETTINGS) as Array<[string, SettingSpec]>) {
    if (spec.group !== group) {
      group = spec.group;
      lines.push('', `  ${group}:`);
    }
    lines.push(`    ${name.padEnd(26)} ${spec.help}${spec.default === '' ? '' : ` [${spec.default}]`}`);
  }
  lines.push('', 'AWS credentials come from the standard AWS SDK chain (env, profile, IMDS, IRSA).');
  return lines.join('\n');
}
