import nodemailer from 'nodemailer';
import type { Logger } from '../log/logger.ts';
import {
  isRetryableBeforeData,
  outcomesFromError,
  outcomesFromInfo,
  stageOf,
  type RecipientDelivery,
} from './classify.ts';
import { FairQueue } from './fair-queue.ts';
import { MailboxLocks } from './mailbox-locks.ts';

/** `mailbox`: normal delivery (SMTP_PORT, or Dovecot LMTP); `internal`: forwards/auto-replies via INTERNAL_SMTP_PORT. */
export type DeliveryRoute = 'mailbox' | 'internal';

export interface DeliveryRequest {
  /**
   * Whose mail (the domain that received it): the connections go to the domains with deliveries waiting in turn
   * (fair-queue.ts). Requests without one share a single turn.
   */
  domain?: string;
  route: DeliveryRoute;
  /** Envelope sender; '' sends `MAIL FROM:<>`. */
  from: string;
  to: readonly string[];
  raw: Buffer;
  /**
   * The caller will not touch `raw` again, so a thread boundary may move its memory instead of copying it
   * (the Buffer is then detached).
   */
  transfer?: boolean;
}

/** The mail server as the pipeline sees it: one call, one outcome per recipient, never a throw for a reply. */
export interface MailDelivery {
  deliver(request: DeliveryRequest): Promise<RecipientDelivery[]>;
  /** Opens a connection to each port and says whether the server answered on both (readiness). */
  verify(): Promise<boolean>;
  /** Connections busy with a transaction right now (never above the bound). */
  connectionsInUse(): number;
  /** Sends waiting for a free connection. */
  sendsWaiting(): number;
  close(): Promise<void>;
}

export interface PooledDeliveryOptions {
  host: string;
  port: number;
  internalPort: number;
  lmtpPort: number;
  protocol: 'smtp' | 'lmtp';
  /** Total bound over both routes; the internal route gets one connection of it, the mailbox route the rest. */
  maxConnections: number;
  timeoutMs: number;
  logger: Logger;
  /**
   * Pauses between attempts after a failure that came before the mail's content was sent (for the transaction: a
   * connection failure; for a recipient: a 4xx at RCPT). Such a retry cannot deliver twice.
   */
  retryDelaysMs?: readonly number[];
}

type Transport = ReturnType<typeof nodemailer.createTransport>;

/**
 * One pooled nodemailer transport per route: `maxMessages: Infinity` (the default 100 recycles a connection every
 * 100 mails and pays a new greeting), and the total bound is split
 * so mailbox + internal connections never exceed SMTP_MAX_CONNECTIONS. A transaction takes a connection from the
 * route's fair queue before it reaches nodemailer (whose own queue is first come, first served), so a domain's
 * backlog waits behind other domains' mail instead of in front of it. Over LMTP (straight into Dovecot) the
 * transactions to one mailbox run one at a time (mailbox-locks.ts); behind Postfix its own per-recipient
 * concurrency limit does that (docker/mailserver/user-patches.sh).
 */
export function createPooledDelivery(options: PooledDeliveryOptions): MailDelivery {
  const mailboxConnections = Math.max(1, options.maxConnections - 1);
  const common = {
    pool: true,
    host: options.host,
    maxMessages: Infinity,
    connectionTimeout: options.timeoutMs,
    greetingTimeout: options.timeoutMs,
    socketTimeout: options.timeoutMs * 5,
    // STARTTLS when offered, without certificate checks: the hop is to our own mail server, usually over a
    // private container network where it presents a self-signed certificate.
    tls: { rejectUnauthorized: false },
    logger: false,
  } as const;
  const mailbox: Transport = nodemailer.createTransport({
    ...common,
    port: options.protocol === 'lmtp' ? options.lmtpPort : options.port,
    lmtp: options.protocol === 'lmtp',
    maxConnections: mailboxConnections,
  });
  const internal: Transport = nodemailer.createTransport({
    ...common,
    port: options.internalPort,
    maxConnections: 1,
  });
  const retryDelays = options.retryDelaysMs ?? [250, 1000];
  const locks = options.protocol === 'lmtp' ? new MailboxLocks() : undefined;
  const connections: Record<DeliveryRoute, FairQueue> = {
    mailbox: new FairQueue(mailboxConnections),
    internal: new FairQueue(1),
  };

  async function sendOnce(transport: Transport, request: DeliveryRequest): Promise<RecipientDelivery[]> {
    const release = await connections[request.route].acquire(request.domain ?? '');
    try {
      const info = await transport.sendMail({
        envelope: { from: request.from, to: [...request.to] },
        raw: request.raw,
      });
      return outcomesFromInfo(request.to, info as unknown as Record<string, unknown>);
    } finally {
      release();
    }
  }

  /** One transaction; a connection failure before the content went out is retried on a fresh connection. */
  async function transaction(transport: Transport, request: DeliveryRequest): Promise<RecipientDelivery[]> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await sendOnce(transport, request);
      } catch (error) {
        const delay = retryDelays[attempt];
        // Resending after the content went out could deliver twice: only a failure before it is retried here.
        if (isRetryableBeforeData(error) && delay !== undefined) {
          options.logger.warn(
            { err: describe(error), route: request.route, attempt: attempt + 1 },
            'mail server connection failed before the mail was sent; retrying',
          );
          await sleep(delay);
          continue;
        }
        return outcomesFromError(request.to, error);
      }
    }
  }

  return {
    async deliver(request) {
      const transport = request.route === 'internal' ? internal : mailbox;
      const run = (r: DeliveryRequest) =>
        locks && r.route === 'mailbox'
          ? locks.run(r.to, () => transaction(transport, r))
          : transaction(transport, r);
      const results = await run(request);
      // Recipients refused with a 4xx at RCPT were sent nothing: ask again shortly for just them (another delivery
      // to the mailbox may have held it: Dovecot's lmtp_user_concurrency_limit) rather than wait for the retry.
      for (const delay of retryDelays) {
        const again = results.filter(refusedBeforeContent);
        if (again.length === 0) break;
        await sleep(delay);
        const retried = await run({ ...request, to: again.map((r) => r.recipient) });
        for (const result of retried)
          results[results.findIndex((r) => r.recipient === result.recipient)] = result;
      }
      return results;
    },
    async verify() {
      // Forwards and replies need the internal port as much as delivery needs the mailbox port.
      const results = await Promise.allSettled([mailbox.verify(), internal.verify()]);
      return results.every((r) => r.status === 'fulfilled');
    },
    connectionsInUse: () => connections.mailbox.active + connections.internal.active,
    sendsWaiting: () => connections.mailbox.waiting + connections.internal.waiting + (locks?.waiting ?? 0),
    async close() {
      mailbox.close();
      internal.close();
    },
  };
}

function refusedBeforeContent(result: RecipientDelivery): boolean {
  return result.status === 'deferred' && result.stage === 'rcpt' && result.code !== undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(error: unknown): Record<string, unknown> {
  if (typeof error !== 'object' || error === null) return { message: String(error) };
  const e = error as { code?: unknown; message?: unknown; responseCode?: unknown };
  return { code: e.code, message: e.message, responseCode: e.responseCode, stage: stageOf(error) };
}
