/**
 * The real pipeline of one or more domains, in-process, wired exactly as the daemon wires a poller thread
 * (`startDomainRuntime`), against the emulators and two SMTP sinks (mailbox port and internal port), or, with
 * `mailServer`, against a real mail server (test/e2e). Outcomes are read from the daemon's own per-message log line.
 */
import { Writable } from 'node:stream';
import { createAwsClients, type AwsClients } from '../../src/aws/clients.ts';
import type { Clock } from '../../src/clock.ts';
import { buildConfig, type Config } from '../../src/config/config.ts';
import { startDomainRuntime, type DomainRuntime } from '../../src/daemon/domain-runtime.ts';
import { MailServerMonitor } from '../../src/daemon/mail-server-monitor.ts';
import { MailServerState } from '../../src/poller/mail-server-watch.ts';
import { createLogger } from '../../src/log/logger.ts';
import { createPipelineMetrics, type PipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { createPooledDelivery, type MailDelivery } from '../../src/smtp/transport.ts';
import { startStack, waitUntil, type DomainQueueOptions, type TestStack } from './emulators.ts';
import { startSmtpSink, type SmtpSink } from './smtp-sink.ts';

export interface LogLine {
  level: string;
  msg: string;
  time?: string;
  domain?: string;
  sesMessageId?: string;
  sqsMessageId?: string;
  status?: string;
  disposition?: string;
  recipients?: Array<{ recipient: string; state: string; code?: number; detail?: string }>;
  effects?: Array<{
    kind: string;
    recipient: string;
    target?: string;
    route?: string;
    status: string;
    reason?: string;
  }>;
  bounceRewritten?: boolean;
  loopMarker?: boolean;
  reason?: string;
  [key: string]: unknown;
}

/** A clock whose "now" can be moved forward (to cross an auto-reply interval) while sleeps stay real. */
export class ShiftableClock implements Clock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** A running mail server to deliver to instead of the rig's own SMTP sinks (e.g. scripts/mailserver/start.sh). */
export interface MailServerTarget {
  host: string;
  /** SMTP_PORT: the mailbox route with DELIVERY_PROTOCOL=smtp. */
  smtpPort: number;
  /** INTERNAL_SMTP_PORT: forwards and auto-replies to hosted domains. */
  internalPort: number;
  /** LMTP_PORT: the mailbox route with `lmtp: true`. */
  lmtpPort: number;
}

export interface RigOptions {
  domains: string[];
  /** Settings over the rig's defaults (fast polling, no rules cache). */
  env?: Record<string, string>;
  lmtp?: boolean;
  clock?: Clock;
  queueOptions?: DomainQueueOptions;
  /** Reuse a running stack (several rigs per file); otherwise one is started and stopped with the rig. */
  stack?: TestStack;
  /** Deliver to this server; no SMTP sinks are started then (the rig has no `mailbox`/`internal`). */
  mailServer?: MailServerTarget;
}

export interface Rig {
  stack: TestStack;
  mailbox: SmtpSink;
  internal: SmtpSink;
  config: Config;
  metrics: PipelineMetrics;
  logs: LogLine[];
  runtimes: Map<string, DomainRuntime>;
  /** The final log line of a message, once the poller logged its outcome. */
  outcome(sesMessageId: string, timeoutMs?: number): Promise<LogLine>;
  /** Every outcome line logged for a message (one per receive). */
  outcomes(sesMessageId: string): LogLine[];
  stop(): Promise<void>;
}

/** A rig delivering to a real mail server (`RigOptions.mailServer`): everything but the sinks. */
export type MailServerRig = Omit<Rig, 'mailbox' | 'internal'>;

export async function startRig(
  options: RigOptions & { mailServer: MailServerTarget },
): Promise<MailServerRig>;
export async function startRig(options: RigOptions & { mailServer?: undefined }): Promise<Rig>;
export async function startRig(options: RigOptions): Promise<Rig | MailServerRig>;
export async function startRig(options: RigOptions): Promise<Rig | MailServerRig> {
  const ownStack = !options.stack;
  const stack =
    options.stack ??
    (await startStack({ tables: true, domains: options.domains, queueOptions: options.queueOptions ?? {} }));
  const sinks = options.mailServer
    ? undefined
    : { mailbox: await startSmtpSink({ lmtp: options.lmtp ?? false }), internal: await startSmtpSink() };
  const target: MailServerTarget = options.mailServer ?? {
    host: '127.0.0.1',
    smtpPort: sinks?.mailbox.port ?? 0,
    internalPort: sinks?.internal.port ?? 0,
    lmtpPort: sinks?.mailbox.port ?? 0,
  };
  const env: Record<string, string> = {
    ...stack.env,
    DOMAINS: options.domains.join(','),
    SMTP_HOST: target.host,
    SMTP_PORT: String(target.smtpPort),
    LMTP_PORT: String(target.lmtpPort),
    INTERNAL_SMTP_PORT: String(target.internalPort),
    DELIVERY_PROTOCOL: options.lmtp ? 'lmtp' : 'smtp',
    WAIT_TIME_SECONDS: '1',
    RULES_CACHE_SECONDS: '0',
    ...options.env,
  };
  // The SDK reads credentials from the environment; the emulators accept any.
  process.env.AWS_ACCESS_KEY_ID = env.AWS_ACCESS_KEY_ID ?? 'test';
  process.env.AWS_SECRET_ACCESS_KEY = env.AWS_SECRET_ACCESS_KEY ?? 'test';
  const config = buildConfig(env);
  const logs: LogLine[] = [];
  const logger = createLogger({
    level: 'debug',
    redactAddresses: config.log.redactAddresses,
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n'))
          if (line.trim()) logs.push(JSON.parse(line) as LogLine);
        callback();
      },
    }),
  });
  const clients: AwsClients = createAwsClients(config.aws);
  const pool: MailDelivery = createPooledDelivery({ ...config.smtp, logger, retryDelaysMs: [50, 100] });
  const metrics = createPipelineMetrics();
  // As the coordinator does: the pollers hear from a monitor of the mail server whether it answers, and the monitor
  // learns from every delivery.
  const mailServer = new MailServerState(false);
  const monitor = new MailServerMonitor(pool, logger, config.smtp.host, (ok) => mailServer.set(ok));
  monitor.start();
  const delivery: MailDelivery = {
    ...pool,
    async deliver(request) {
      const results = await pool.deliver(request);
      monitor.noteDelivery(results);
      return results;
    },
  };
  const runtimes = new Map<string, DomainRuntime>();
  const runs: Promise<void>[] = [];
  for (const domain of options.domains) {
    const runtime = await startDomainRuntime({
      config,
      domain,
      clients,
      delivery,
      clock: options.clock ?? new ShiftableClock(),
      logger,
      metrics,
      mailServer,
    });
    runtimes.set(domain, runtime);
    runs.push(runtime.run());
  }

  const outcomesOf = (id: string) =>
    logs.filter((l) => l.sesMessageId === id && typeof l.disposition === 'string');
  return {
    stack,
    ...sinks,
    config,
    metrics,
    logs,
    runtimes,
    outcomes: outcomesOf,
    async outcome(id, timeoutMs = 10_000) {
      await waitUntil(() => outcomesOf(id).length > 0, timeoutMs, `outcome of ${id}`);
      const lines = outcomesOf(id);
      return lines[lines.length - 1] as LogLine;
    },
    async stop() {
      for (const runtime of runtimes.values()) runtime.stop();
      await Promise.all(runs);
      monitor.stop();
      await delivery.close();
      clients.destroy();
      if (sinks) await Promise.all([sinks.mailbox.stop(), sinks.internal.stop()]);
      if (ownStack) await stack.stop();
    },
  };
}
