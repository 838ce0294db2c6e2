/**
 * `npm run local`: the whole worker on one machine, with no AWS account and no Docker.
 *
 * It starts the emulators of the integration tests (fauxqs for SQS + S3, dynalite for DynamoDB, aws-ses-v2-local
 * for SES), a local mail server stand-in that writes every mail it receives to `./local-mail/<recipient>/*.eml`,
 * creates what `unified-worker setup` creates with its own code (tables, queues, buckets and their policies, topics
 * and subscriptions, receipt rules, the SES identity, the configuration set), seeds demo rules, starts the built
 * daemon (`node dist/unified-worker.js`) as a child process pointed at all of that, and injects a demo mail with
 * `unified-worker inject`'s code (raw MIME in S3, SNS-enveloped notification on the domain's queue). SES's sending
 * events and bounces are emulated too (scripts/local-outbound.ts): the demo also sends a mail out through SES as
 * alice, to SES's mailbox simulator address that bounces, and the bounce comes back rewritten.
 *
 * It writes the settings it gave the daemon to `<mail-dir>/local-stack.env`, so every command runs against the
 * stack with `node --env-file=local-mail/local-stack.env dist/unified-worker.js <command>`, and
 * `npm run local:send -- --to alice@example.com --subject Hi` injects more mail (see `scripts/local-send.ts`); both
 * find the stack through the files it writes into the mail directory. Ctrl-C stops the daemon gracefully
 * (SIGTERM, it drains in-flight mail), then the mail sinks and the emulators, and removes those files.
 *
 * What no emulator can do, the stack stands in for, so `doctor` is green here: a DNS server answering each domain's
 * MX with SES's inbound endpoint (DOCTOR_DNS_SERVERS), the identities marked verified as if the DKIM records were
 * published, and an SES account out of the sandbox at SES's starting rate (14 mails/s, the daemon's own fallback).
 *
 * Everything listens on 127.0.0.1 only. All state is in memory: every run starts with empty queues and tables.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { SMTPServer } from 'smtp-server';

import type { AwsClients } from '../src/aws/clients.ts';
import { createControlClients } from '../src/aws/control-clients.ts';
import { nameFromTemplate, sesInboundHost } from '../src/aws/resources.ts';
import { describeOutcome, verdictReader, waitForOutcome } from '../src/cli/audit.ts';
import { buildMime } from '../src/cli/compose-mail.ts';
import { injectMail } from '../src/cli/ses-inbound.ts';
import { Output } from '../src/cli/output.ts';
import { runSetup, type SetupItem } from '../src/cli/setup.ts';
import { buildConfig, type Config } from '../src/config/config.ts';
import { SETTINGS } from '../src/config/settings.ts';
import { ConfigError } from '../src/errors.ts';
import { startDnsServer, type DnsServer } from '../test/harness/dns-server.ts';
import {
  TEST_CREDENTIALS,
  startStack,
  type RecordedSesMail,
  type TestStack,
} from '../test/harness/emulators.ts';
import {
  rewrittenBounce,
  sendOutboundDemo,
  SIMULATOR_BOUNCE,
  startLocalOutbound,
  type LocalOutbound,
} from './local-outbound.ts';
import {
  DEFAULT_MAIL_DIR,
  ENV_FILE,
  removeStateFiles,
  writeStateFiles,
  type LocalStackState,
} from './local-stack-state.ts';

/** Repository root (this file lives in `<root>/scripts/`). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** How a mail reached the stand-in mail server (or left through the SES emulator). */
type Route = 'mailbox' | 'lmtp' | 'internal' | 'ses';

const ROUTE_TEXT: Record<Route, string> = {
  mailbox: 'SMTP, mailbox port (SMTP_PORT)',
  lmtp: 'LMTP (LMTP_PORT)',
  internal: 'SMTP, internal port (INTERNAL_SMTP_PORT: forwards/auto-replies)',
  ses: 'sent out through SES (emulated; would leave for the internet)',
};

/** `nobody@…`/`unknown@…` get `550 5.1.1`, so the "invalid recipient" path can be tried. */
const UNKNOWN_USER = /^(nobody|unknown)(\+[^@]*)?@/i;

const USAGE = `Usage: npm run local [-- options]

Runs the worker against local emulators of SQS, S3, DynamoDB and SES, with a local mail server stand-in
that writes every mail to <mail-dir>/<recipient>/*.eml. No AWS account, no Docker.

Options:
  -d, --domains <list>      Domains to serve (default: $DOMAINS or example.com)
      --health-port <port>  Port of /health and /ready (default: $HEALTH_PORT or 8080; 0 = any free port)
      --metrics-port <port> Port of /metrics (default: $METRICS_PORT or 8000; 0 = any free port)
      --mail-dir <dir>      Where mail is written (default: ./${DEFAULT_MAIL_DIR})
      --no-demo             Do not inject the demo mail at start
      --json-logs           Print the daemon's JSON log lines unchanged
  -h, --help                Show this help

Other worker settings (LOG_LEVEL, DELIVERY_PROTOCOL, OOO_REPLY_INTERVAL_DAYS, ...) are taken from the
environment; AWS endpoints, credentials, tables and mail server ports are set by the stack.`;

// ---------------------------------------------------------------------------------------------------------------------
// Mail server stand-in
// ---------------------------------------------------------------------------------------------------------------------

interface MailSink {
  port: number;
  stop(): Promise<void>;
}

/** Something written to the mail directory, for the console. */
interface Landing {
  route: Route;
  recipient: string;
  from: string;
  file: string;
  /** An SES bounce the worker rewrote: its new From and Reply-To. */
  rewrittenBounce?: string;
}

function mailboxDir(mailDir: string, recipient: string): string {
  const safe = recipient.toLowerCase().replace(/[^a-z0-9@._+-]/g, '_') || '_unknown';
  return path.join(mailDir, safe);
}

let fileCounter = 0;

/** Writes one copy per recipient. Local deliveries get `Return-Path` and `Delivered-To` on top, as Dovecot adds. */
async function storeMail(
  mailDir: string,
  route: Route,
  from: string,
  recipients: readonly string[],
  raw: Buffer,
): Promise<Landing[]> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const landings: Landing[] = [];
  for (const recipient of recipients) {
    const dir = mailboxDir(mailDir, recipient);
    await mkdir(dir, { recursive: true });
    fileCounter += 1;
    const file = path.join(dir, `${stamp}-${String(fileCounter).padStart(4, '0')}-${route}.eml`);
    const trace = route === 'ses' ? '' : `Return-Path: <${from}>\r\nDelivered-To: ${recipient}\r\n`;
    await writeFile(file, Buffer.concat([Buffer.from(trace, 'utf8'), raw]));
    const rewritten = route === 'ses' ? undefined : rewrittenBounce(raw);
    landings.push({
      route,
      recipient,
      from,
      file,
      ...(rewritten !== undefined && { rewrittenBounce: rewritten }),
    });
  }
  return landings;
}

/**
 * An SMTP or LMTP server on 127.0.0.1:0 that accepts everything except `nobody@`/`unknown@` recipients and
 * stores each mail before answering, like a real server that only says 250 once the mail is safe.
 */
async function startMailSink(
  route: Exclude<Route, 'ses'>,
  mailDir: string,
  onLanding: (landing: Landing) => void,
): Promise<MailSink> {
  const lmtp = route === 'lmtp';
  const sockets = new Set<Socket>();
  const server = new SMTPServer({
    logger: false,
    lmtp,
    banner: 'unified-worker local stack',
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    onRcptTo(address, _session, callback) {
      if (UNKNOWN_USER.test(address.address)) {
        callback(Object.assign(new Error(`5.1.1 <${address.address}>: User unknown`), { responseCode: 550 }));
        return;
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.once('error', (error: Error) => callback(error));
      stream.once('end', () => {
        const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address;
        const recipients = session.envelope.rcptTo.map((r) => r.address);
        storeMail(mailDir, route, from, recipients, Buffer.concat(chunks)).then(
          (landings) => {
            for (const landing of landings) onLanding(landing);
            if (lmtp)
              callback(
                null,
                recipients.map((r) => `2.0.0 <${r}> Saved`),
              );
            else callback(null, '2.0.0 Ok: saved');
          },
          (error: unknown) =>
            callback(
              Object.assign(new Error(`4.3.0 could not store the mail: ${String(error)}`), {
                responseCode: 451,
              }),
            ),
        );
      });
    },
  });
  server.on('error', () => undefined);
  server.server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.server.once('error', reject);
    server.server.listen(0, '127.0.0.1', () => {
      const address = server.server.address();
      if (address === null || typeof address === 'string') reject(new Error('mail sink has no TCP port'));
      else resolve(address.port);
    });
  });
  return {
    port,
    // net.Server.close() rather than SMTPServer.close(): the latter waits up to 30 s for idle sessions.
    stop: () =>
      new Promise<void>((resolve) => {
        server.server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

/** Copies what the daemon sent through SES (auto-replies and forwards to outside addresses) to the mail directory. */
function watchSes(
  stack: TestStack,
  mailDir: string,
  onLanding: (landing: Landing) => void,
): () => Promise<void> {
  let seen = 0;
  let busy: Promise<void> = Promise.resolve();
  const drain = (): Promise<void> => {
    busy = busy.then(async () => {
      while (seen < stack.ses.sent.length) {
        const mail: RecordedSesMail | undefined = stack.ses.sent[seen];
        seen += 1;
        if (!mail) continue;
        const to = mail.destinations.length > 0 ? mail.destinations : ['_no-destination'];
        for (const landing of await storeMail(mailDir, 'ses', mail.from ?? '', to, mail.raw))
          onLanding(landing);
      }
    });
    return busy;
  };
  const timer = setInterval(() => void drain().catch(() => undefined), 100);
  return async () => {
    clearInterval(timer);
    await drain().catch(() => undefined);
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------------------------------------------------

interface Options {
  domains: string[];
  healthPort: string;
  metricsPort: string;
  mailDir: string;
  demo: boolean;
  jsonLogs: boolean;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      domains: { type: 'string', short: 'd' },
      'health-port': { type: 'string' },
      'metrics-port': { type: 'string' },
      'mail-dir': { type: 'string' },
      'no-demo': { type: 'boolean' },
      'json-logs': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  const domainList = values.domains ?? process.env.DOMAINS ?? 'example.com';
  // The daemon's own validation, so a bad list fails here with the same message instead of after startup.
  const domains = [...buildConfig({ DOMAINS: domainList }).domains];
  const healthPort = values['health-port'] ?? process.env.HEALTH_PORT ?? '8080';
  const metricsPort = values['metrics-port'] ?? process.env.METRICS_PORT ?? '8000';
  buildConfig({ DOMAINS: domainList, HEALTH_PORT: healthPort, METRICS_PORT: metricsPort });
  return {
    domains,
    healthPort,
    metricsPort,
    mailDir: path.resolve(values['mail-dir'] ?? DEFAULT_MAIL_DIR),
    demo: !values['no-demo'],
    jsonLogs: values['json-logs'] ?? false,
  };
}

/** Settings the stack decides; the same names in the user's environment are ignored. */
const STACK_CONTROLLED = [
  'DOMAINS',
  'SMTP_HOST',
  'SMTP_PORT',
  'INTERNAL_SMTP_PORT',
  'LMTP_PORT',
  'HEALTH_PORT',
  'METRICS_PORT',
  'RULES_TABLE',
  'BLOCKLIST_TABLE',
  'OUTBOUND_TABLE',
  'OOO_STATE_TABLE',
  'IDEMPOTENCY_TABLE',
  'S3_FORCE_PATH_STYLE',
  'DOCTOR_DNS_SERVERS',
];

/** The idempotency table the stack creates (on by default, as in production). */
const IDEMPOTENCY_TABLE = 'email-worker-idempotency';

/**
 * The daemon's environment: the user's, minus every AWS_* variable (no real credentials, profile or endpoint
 * leaks in; the SDK's own AWS_SDK_JS_* switches stay), plus everything the stack decides.
 */
function daemonEnv(
  stack: TestStack,
  options: Options,
  ports: LocalStackState['smtp'],
  queueTemplate: string,
  dns: DnsServer,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined || STACK_CONTROLLED.includes(name)) continue;
    if (name.startsWith('AWS_') && !name.startsWith('AWS_SDK_JS_')) continue;
    env[name] = value;
  }
  return {
    // A stop lets the current long poll end first; a short one keeps Ctrl-C quick on a demo stack.
    WAIT_TIME_SECONDS: '2',
    // A rule or blocklist change made with the commands applies to the very next mail.
    RULES_CACHE_SECONDS: '0',
    // Signed loop markers, as production should have them (doctor checks it); random per run.
    LOOP_MARKER_SECRET: randomBytes(24).toString('hex'),
    ...env,
    ...stack.env,
    DOMAINS: options.domains.join(','),
    QUEUE_NAME_TEMPLATE: queueTemplate,
    RULES_TABLE: SETTINGS.RULES_TABLE.default,
    BLOCKLIST_TABLE: SETTINGS.BLOCKLIST_TABLE.default,
    OUTBOUND_TABLE: SETTINGS.OUTBOUND_TABLE.default,
    OOO_STATE_TABLE: SETTINGS.OOO_STATE_TABLE.default,
    IDEMPOTENCY_TABLE,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(ports.mailboxPort),
    INTERNAL_SMTP_PORT: String(ports.internalPort),
    LMTP_PORT: String(ports.lmtpPort),
    HEALTH_PORT: options.healthPort,
    METRICS_PORT: options.metricsPort,
    HTTP_HOST: process.env.HTTP_HOST ?? '127.0.0.1',
    DOCTOR_DNS_SERVERS: dns.address,
  };
}

/**
 * What SES and DNS would say once the admin did their part: each domain's MX names SES's inbound endpoint, its
 * identity is verified (DKIM records found), and the account may send at SES's starting rate.
 */
function standInForDnsAndSes(
  stack: TestStack,
  dns: DnsServer,
  domains: readonly string[],
  region: string,
): void {
  for (const domain of domains) {
    dns.setMx(domain, [{ exchange: sesInboundHost(region), priority: 10 }]);
    stack.ses.control.verify(domain);
  }
  stack.ses.control.account = {
    SendingEnabled: true,
    ProductionAccessEnabled: true,
    SendQuota: { Max24HourSend: 50_000, MaxSendRate: 14, SentLast24Hours: 0 },
  };
}

/** The stack's own clients (dummy credentials), in the shape the commands' code takes. */
function stackClients(stack: TestStack): AwsClients {
  return { sqs: stack.sqs, s3: stack.s3, sesv2: stack.sesv2, ddb: stack.ddb, destroy: () => undefined };
}

/** What setup did, one line per kind of outcome. */
function printSetup(items: readonly SetupItem[]): void {
  for (const outcome of ['created', 'updated', 'existed', 'failed'] as const) {
    const names = items.filter((i) => i.outcome === outcome).map((i) => `${i.kind} ${i.name}`);
    if (names.length > 0) console.log(`[setup]  ${outcome}: ${names.join(', ')}`);
  }
  for (const item of items)
    for (const warning of item.warnings) console.log(`[setup]  ${item.name}: ${warning}`);
}

/**
 * Preloaded into the daemon: when this script dies without stopping it (kill -9, a crash), the IPC channel closes
 * and the daemon stops itself instead of polling emulators that are gone.
 */
const WATCHDOG = `data:text/javascript,${encodeURIComponent(
  "process.on('disconnect',()=>process.kill(process.pid,'SIGTERM'));",
)}`;

interface DaemonLog {
  level?: string;
  msg?: string;
  time?: string;
  healthPort?: number;
  metricsPort?: number;
  [key: string]: unknown;
}

function printLog(line: string, json: boolean): void {
  if (json) {
    console.log(line);
    return;
  }
  let entry: DaemonLog;
  try {
    entry = JSON.parse(line) as DaemonLog;
  } catch {
    console.log(`[worker] ${line}`);
    return;
  }
  const { level, msg, time: _time, ...rest } = entry;
  const fields = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
  console.log(`[worker] ${String(level ?? '').padEnd(5)} ${msg ?? ''}${fields}`);
}

async function seedDemoRules(clients: AwsClients, config: Config, domain: string): Promise<void> {
  const tables = config.tables;
  await clients.ddb.send(
    new PutCommand({
      TableName: tables.rules,
      Item: {
        email_address: `ooo@${domain}`,
        ooo_active: true,
        ooo_message: 'I am out of the office until Monday. This reply was sent by the local stack demo rule.',
        ooo_content_type: 'text',
        forwards: [],
      },
    }),
  );
  await clients.ddb.send(
    new PutCommand({
      TableName: tables.rules,
      Item: {
        email_address: `fwd@${domain}`,
        ooo_active: false,
        forwards: [`alice@${domain}`, 'friend@elsewhere.test'],
      },
    }),
  );
  await clients.ddb.send(
    new PutCommand({
      TableName: tables.blocklist,
      Item: { email_address: `alice@${domain}`, blocked_patterns: ['*@spam.test'] },
    }),
  );
}

/** Polls `url` until it answers 2xx; false after `timeoutMs`. */
async function waitForOk(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(url)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok || Date.now() > deadline) return ok;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Sends a mail out through SES as `user` (as docker-mailserver's relay would) to the simulator's bounce address and
 * waits for the worker to deliver SES's bounce of it rewritten; the summary line says what happened.
 */
async function bounceDemo(
  clients: AwsClients,
  config: Config,
  user: string,
  landings: readonly Landing[],
): Promise<string> {
  const id = await sendOutboundDemo(clients, config, user);
  const deadline = Date.now() + 15_000;
  let landing: Landing | undefined;
  while (
    !(landing = landings.find((l) => l.recipient === user && l.rewrittenBounce)) &&
    Date.now() < deadline
  )
    await new Promise((resolve) => setTimeout(resolve, 100));
  const sent = `${user} -> ${SIMULATOR_BOUNCE} through SES (SES message ${id ?? '?'})`;
  return landing
    ? `  Bounce demo:  ${sent}: recorded from SES's Send event;\n` +
        `                its bounce was delivered rewritten: ${landing.rewrittenBounce}\n`
    : `  Bounce demo:  ${sent}: no rewritten bounce within 15 s (see the [worker] lines)\n`;
}

async function main(): Promise<void> {
  const t0 = performance.now();
  // Node 20 is supported; the SDK's notice that its 2027 releases need Node 22 is in the README, not on every run.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let options: Options | undefined;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    console.error(`local stack: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(2);
  }
  if (!options) {
    console.log(USAGE);
    return;
  }
  const daemonEntry = path.join(REPO_ROOT, 'dist', 'unified-worker.js');
  try {
    await readFile(daemonEntry);
  } catch {
    console.error(
      `local stack: ${daemonEntry} is missing: run \`npm run build\` first (\`npm run local\` does).`,
    );
    process.exit(1);
  }
  const { domains, mailDir } = options;
  const first = domains[0] ?? 'example.com';
  await mkdir(mailDir, { recursive: true });

  const landings: Landing[] = [];
  const onLanding = (landing: Landing): void => {
    landings.push(landing);
    console.log(
      `[mail]   ${landing.recipient} <- ${landing.from || '<>'} via ${ROUTE_TEXT[landing.route]}\n` +
        `         ${path.relative(process.cwd(), landing.file)}`,
    );
    if (landing.rewrittenBounce) {
      console.log(
        `[bounce] ${landing.recipient} got SES's bounce rewritten for the real failed recipient: ` +
          `${landing.rewrittenBounce} (was From MAILER-DAEMON@amazonses.com)`,
      );
    }
  };

  const stack = await startStack();
  const dns = await startDnsServer();
  const sinks = await Promise.all([
    startMailSink('mailbox', mailDir, onLanding),
    startMailSink('internal', mailDir, onLanding),
    startMailSink('lmtp', mailDir, onLanding),
  ]);
  const [mailboxSink, internalSink, lmtpSink] = sinks;
  if (!mailboxSink || !internalSink || !lmtpSink) throw new Error('mail sinks did not start');
  const stopSesWatch = watchSes(stack, mailDir, onLanding);

  const ports = { mailboxPort: mailboxSink.port, internalPort: internalSink.port, lmtpPort: lmtpSink.port };
  const env = daemonEnv(stack, options, ports, process.env.QUEUE_NAME_TEMPLATE || '{domain}-queue', dns);
  const config = buildConfig(env);
  const clients = stackClients(stack);
  // Everything on the AWS side, made by `unified-worker setup`'s own code.
  const quiet = new Output({ stdout: { write: () => true }, stderr: { write: () => true }, env }, true);
  const control = createControlClients(config.aws, { credentials: TEST_CREDENTIALS });
  const setup = await runSetup({ config, clients, control, out: quiet }).finally(() => control.destroy());
  printSetup(setup);
  standInForDnsAndSes(stack, dns, domains, config.aws.region);
  console.log(
    `[setup]  stood in for DNS and SES: MX of ${domains.join(', ')} to ${sesInboundHost(config.aws.region)}, identities verified`,
  );
  if (setup.some((i) => i.outcome === 'failed')) throw new Error('setup failed: see the [setup] lines');
  await seedDemoRules(clients, config, first);
  const outbound: LocalOutbound | undefined = await startLocalOutbound(
    stack,
    { config, clients },
    (message) => console.log(`[ses]    ${message}`),
  );
  console.log(
    outbound
      ? `[setup]  created: ${outbound.description}`
      : '[setup]  no SES events: OUTBOUND_EVENTS_QUEUE or SES_CONFIGURATION_SET is none',
  );

  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', WATCHDOG, daemonEntry, '--domains', domains.join(',')],
    {
      cwd: REPO_ROOT,
      env,
      // Own process group: Ctrl-C reaches only this script, which then sends the daemon exactly one SIGTERM
      // (a second signal would make the daemon skip its graceful drain).
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    },
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  let started: ((value: { health: number; metrics: number }) => void) | undefined;
  const startedLine = new Promise<{ health: number; metrics: number }>((resolve) => (started = resolve));
  const stderrLines: string[] = [];
  if (child.stdout) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      printLog(line, options.jsonLogs);
      if (line.includes('"unified-worker started"')) {
        const entry = JSON.parse(line) as DaemonLog;
        started?.({ health: Number(entry.healthPort), metrics: Number(entry.metricsPort) });
      }
    });
  }
  if (child.stderr) {
    createInterface({ input: child.stderr }).on('line', (line) => {
      stderrLines.push(line);
      console.error(`[worker] ${line}`);
    });
  }

  // ---- shutdown ----
  let stopping: Promise<void> | undefined;
  const shutdown = (exitCode: number): Promise<void> =>
    (stopping ??= (async () => {
      console.log('\n[stack]  stopping: the worker drains in-flight mail first ...');
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const grace = Number(process.env.SHUTDOWN_GRACE_SECONDS ?? 25) * 1000 + 5_000;
        const timer = setTimeout(() => child.kill('SIGKILL'), grace);
        await exited;
        clearTimeout(timer);
      }
      outbound?.stop();
      await stopSesWatch();
      await Promise.all(sinks.map((s) => s.stop()));
      await stack.stop();
      await dns.stop();
      await removeStateFiles(mailDir);
      console.log(`[stack]  stopped. The mail stays in ${path.relative(process.cwd(), mailDir) || '.'}/`);
      process.exit(exitCode);
    })());

  let firstSignalAt = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    const now = Date.now();
    if (firstSignalAt === 0) {
      firstSignalAt = now;
      void shutdown(0);
      return;
    }
    // npm and the terminal may both deliver one Ctrl-C; only a later, deliberate second one forces the exit.
    if (now - firstSignalAt < 1_000) return;
    console.log(`[stack]  ${signal} again: killing the worker now`);
    child.kill('SIGKILL');
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  void exited.then((code) => {
    if (stopping) return;
    const hint = stderrLines.some((l) => l.includes('EADDRINUSE'))
      ? `\n[stack]  a port is taken: try \`npm run local -- --health-port 18080 --metrics-port 18000\``
      : '';
    console.error(`[stack]  the worker exited unexpectedly (code ${String(code)})${hint}`);
    void shutdown(1);
  });

  const announced = await Promise.race([startedLine, exited.then(() => undefined)]);
  if (!announced) return;
  const healthBase = `http://127.0.0.1:${announced.health}`;
  const state: LocalStackState = {
    pid: process.pid,
    startedAt: new Date().toISOString(),
    domains,
    mailDir,
    env,
    endpoints: { ...stack.endpoints },
    smtp: ports,
    healthUrl: `${healthBase}/health`,
    readyUrl: `${healthBase}/ready`,
    metricsUrl: `http://127.0.0.1:${announced.metrics}/metrics`,
  };

  // The state and env files first, so `npm run local:send` and the commands work from here on.
  await writeStateFiles(state);

  let demoLine = '';
  if (options.demo) {
    const recipients = [`alice@${first}`, `ooo@${first}`, `fwd@${first}`];
    const raw = await buildMime({
      from: 'Demo Sender <sender@external.test>',
      to: recipients,
      subject: 'Hello from the local stack',
      text: 'This mail was stored in (emulated) S3 and announced on SQS, exactly as SES does.\r\n',
    });
    const [put] = await injectMail({ config, clients }, { raw, recipients, source: 'sender@external.test' });
    const outcome = await waitForOutcome(
      verdictReader({ config, clients }),
      { bucket: put?.bucket ?? '', key: put?.key ?? '', domain: put?.domain ?? first },
      15_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const [verdict, ...effects] = describeOutcome(outcome);
    demoLine =
      `  Demo mail:    ${verdict ?? ''} (s3://${put?.bucket}/${put?.key})\n` +
      effects.map((line) => `              ${line}\n`).join('');
    if (outbound) demoLine += await bounceDemo(clients, config, `alice@${first}`, landings);
  }
  if (stopping) return;
  // /ready turns 200 once every domain's first ReceiveMessage returned (at the latest after WAIT_TIME_SECONDS)
  // and the mail server answered.
  const ready = await waitForOk(state.readyUrl, options.demo ? 5_000 : 1_000);
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  const rel = path.relative(process.cwd(), mailDir) || '.';
  console.log(`
================================================================================================
  unified-worker local stack is running (up after ${seconds} s)
  Domains:      ${domains.join(', ')}    (queues ${domains.map((d) => nameFromTemplate(config.queueNameTemplate, d)).join(', ')})
${demoLine}  Mail lands:   ${rel}/<recipient>/*.eml  (${landings.length} file(s) so far)
  Health:       ${state.healthUrl}   ready: ${state.readyUrl} (${ready ? '200 now' : 'not yet: it turns 200 after the first long poll returns'})
  Metrics:      ${state.metricsUrl}
  Commands:     node --env-file=${path.join(rel, ENV_FILE)} dist/unified-worker.js doctor
                (setup, rules, blocklist, inject, replay, dlq: see README "Operating")
  Send more:    npm run local:send -- --to alice@${first} --subject Hi
                (forward demo: fwd@${first}; out-of-office demo: ooo@${first};
                 blocked sender: --from x@spam.test --to alice@${first}; unknown user: nobody@${first})
  Bounces:      mail sent through SES (${state.env.AWS_ENDPOINT_URL_SES ?? 'the SES endpoint'}) with configuration set
                ${config.sesConfigurationSet || '(none)'} to ${SIMULATOR_BOUNCE} bounces back to its sender, rewritten
  Stop:         Ctrl-C
================================================================================================`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((error: unknown) => {
    const message =
      error instanceof ConfigError
        ? error.message
        : error instanceof Error
          ? (error.stack ?? error.message)
          : String(error);
    console.error(`local stack: ${message}`);
    process.exit(1);
  });
}
