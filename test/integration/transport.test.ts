/**
 * The pooled transport (src/smtp/transport.ts) against real smtp-server instances on 127.0.0.1 port 0, scripted per
 * test: what is resent and what never is, and one transaction per mailbox over LMTP. Counts, not timings.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import { createLogger } from '../../src/log/logger.ts';
import { createPooledDelivery, type MailDelivery } from '../../src/smtp/transport.ts';

const logger = createLogger({
  level: 'silent',
  redactAddresses: false,
  destination: new Writable({ write: (_chunk, _encoding, callback) => callback() }),
});

const MAIL = Buffer.from('From: a@b.test\r\nTo: x@example.com\r\nSubject: t\r\n\r\nbody\r\n');

interface Scripted {
  port: number;
  server: SMTPServer;
  rcptAttempts: Map<string, number>;
  dataCount: number;
  /** Highest number of transactions in DATA at once, per recipient and over all. */
  maxConcurrentPerRecipient: number;
  maxConcurrent: number;
  stop(): Promise<void>;
}

/** An smtp-server whose answers the test decides: `rcpt(address, attempt)` and `data(session)`. */
async function scriptedServer(options: {
  lmtp?: boolean;
  port?: number;
  rcpt?: (address: string, attempt: number) => Error | undefined;
  data?: (session: SMTPServerSession) => 'accept' | 'drop-connection' | 'hang';
  dataDelayMs?: number;
}): Promise<Scripted> {
  const inData = new Map<string, number>();
  let concurrent = 0;
  const state = {
    rcptAttempts: new Map<string, number>(),
    dataCount: 0,
    maxConcurrentPerRecipient: 0,
    maxConcurrent: 0,
  };
  const server = new SMTPServer({
    logger: false,
    lmtp: options.lmtp ?? false,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    onRcptTo(address, _session, callback) {
      const attempt = (state.rcptAttempts.get(address.address) ?? 0) + 1;
      state.rcptAttempts.set(address.address, attempt);
      callback(options.rcpt?.(address.address, attempt) ?? null);
    },
    onData(stream, session, callback) {
      const recipients = session.envelope.rcptTo.map((r) => r.address);
      state.dataCount += 1;
      concurrent += 1;
      state.maxConcurrent = Math.max(state.maxConcurrent, concurrent);
      for (const r of recipients) {
        inData.set(r, (inData.get(r) ?? 0) + 1);
        state.maxConcurrentPerRecipient = Math.max(state.maxConcurrentPerRecipient, inData.get(r) ?? 0);
      }
      stream.on('data', () => undefined);
      stream.on('end', () => {
        setTimeout(() => {
          concurrent -= 1;
          for (const r of recipients) inData.set(r, (inData.get(r) ?? 1) - 1);
          const answer = options.data?.(session);
          // The content arrived and no reply ever comes, the connection left open.
          if (answer === 'hang') return;
          if (answer === 'drop-connection') {
            // The content arrived, but no reply ever does: did the server take it? Nobody knows.
            (session as unknown as { _socket?: { destroy(): void } })._socket?.destroy();
            return;
          }
          callback(null, options.lmtp ? recipients.map(() => 'OK') : 'OK: queued');
        }, options.dataDelayMs ?? 0);
      });
    },
  });
  server.on('error', () => undefined);
  const port = await new Promise<number>((resolve) =>
    server.listen(options.port ?? 0, '127.0.0.1', () =>
      resolve((server.server.address() as AddressInfo).port),
    ),
  );
  return Object.assign(state, {
    port,
    server,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

function delivery(port: number, protocol: 'smtp' | 'lmtp' = 'smtp', maxConnections = 3): MailDelivery {
  return createPooledDelivery({
    host: '127.0.0.1',
    port,
    internalPort: port,
    lmtpPort: port,
    protocol,
    maxConnections,
    timeoutMs: 5_000,
    logger,
    retryDelaysMs: [50, 100],
  });
}

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const close of closers) await close();
});

describe('the pooled transport', () => {
  it('asks again, shortly, for a recipient refused with a 4xx at RCPT, and only for that one', async () => {
    const server = await scriptedServer({
      rcpt: (address, attempt) =>
        address === 'busy@example.com' && attempt === 1
          ? Object.assign(new Error('4.3.0 <busy@example.com> Too many concurrent deliveries for user'), {
              responseCode: 451,
            })
          : undefined,
    });
    const pool = delivery(server.port);
    closers.push(
      () => pool.close(),
      () => server.stop(),
    );
    const results = await pool.deliver({
      route: 'mailbox',
      from: 'a@b.test',
      to: ['ok@example.com', 'busy@example.com'],
      raw: MAIL,
    });
    assert.deepEqual(
      results.map((r) => [r.recipient, r.status]),
      [
        ['ok@example.com', 'delivered'],
        ['busy@example.com', 'delivered'],
      ],
    );
    assert.equal(server.rcptAttempts.get('ok@example.com'), 1, 'the accepted recipient got its copy once');
    assert.equal(server.rcptAttempts.get('busy@example.com'), 2);
    assert.equal(server.dataCount, 2);
  });

  it('gives up on a recipient that keeps answering 4xx after its retries: deferred, with the reply', async () => {
    const server = await scriptedServer({
      rcpt: () => Object.assign(new Error('4.2.1 Mailbox busy'), { responseCode: 451 }),
    });
    const pool = delivery(server.port);
    closers.push(
      () => pool.close(),
      () => server.stop(),
    );
    const [result] = await pool.deliver({
      route: 'mailbox',
      from: 'a@b.test',
      to: ['x@example.com'],
      raw: MAIL,
    });
    assert.equal(result?.status, 'deferred');
    assert.equal(result?.code, 451);
    assert.equal(server.rcptAttempts.get('x@example.com'), 3, 'the first attempt and two retries');
    assert.equal(server.dataCount, 0);
  });

  it('never resends a transaction whose content was sent when the connection dies before the reply', async () => {
    const server = await scriptedServer({ data: () => 'drop-connection' });
    const pool = delivery(server.port);
    closers.push(
      () => pool.close(),
      () => server.stop(),
    );
    const [result] = await pool.deliver({
      route: 'mailbox',
      from: 'a@b.test',
      to: ['x@example.com'],
      raw: MAIL,
    });
    assert.equal(result?.status, 'deferred');
    assert.equal(result?.stage, 'unknown');
    assert.equal(server.dataCount, 1, 'the content went out once: no immediate resend');
  });

  it('retries on a fresh connection when the server could not be reached at all', async () => {
    // A port nothing listens on until after the first attempt failed.
    const probe = createServer();
    const port = await new Promise<number>((resolve) =>
      probe.listen(0, '127.0.0.1', () => resolve((probe.address() as AddressInfo).port)),
    );
    await new Promise((resolve) => probe.close(resolve));
    const pool = delivery(port);
    closers.push(() => pool.close());
    const sending = pool.deliver({ route: 'mailbox', from: 'a@b.test', to: ['x@example.com'], raw: MAIL });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const server = await scriptedServer({ port });
    closers.push(() => server.stop());
    const [result] = await sending;
    assert.equal(result?.status, 'delivered');
    assert.equal(server.dataCount, 1);
  });

  it('gives up on a mail server that accepts the connection and never greets: deferred, nothing waits forever', async () => {
    const held = new Set<Socket>();
    const silent = createServer((socket) => held.add(socket));
    const port = await new Promise<number>((resolve) =>
      silent.listen(0, '127.0.0.1', () => resolve((silent.address() as AddressInfo).port)),
    );
    closers.push(async () => {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const pool = createPooledDelivery({
      host: '127.0.0.1',
      port,
      internalPort: port,
      lmtpPort: port,
      protocol: 'smtp',
      maxConnections: 2,
      timeoutMs: 1_000,
      logger,
      retryDelaysMs: [],
    });
    closers.push(() => pool.close());
    const [result] = await pool.deliver({
      route: 'mailbox',
      from: 'a@b.test',
      to: ['x@example.com'],
      raw: MAIL,
    });
    assert.equal(result?.status, 'deferred');
    assert.equal(result?.code, undefined, 'no reply: the mail server is unreachable');
    assert.ok(held.size >= 1, 'the silent server never saw a connection: the precondition failed');
  });

  it('gives up on a mail server that goes silent after the content: deferred, and never resent', async () => {
    const server = await scriptedServer({ data: () => 'hang' });
    closers.push(() => server.stop());
    const pool = createPooledDelivery({
      host: '127.0.0.1',
      port: server.port,
      internalPort: server.port,
      lmtpPort: server.port,
      protocol: 'smtp',
      maxConnections: 2,
      timeoutMs: 300,
      logger,
      retryDelaysMs: [50, 100],
    });
    closers.push(() => pool.close());
    const [result] = await pool.deliver({
      route: 'mailbox',
      from: 'a@b.test',
      to: ['x@example.com'],
      raw: MAIL,
    });
    assert.equal(result?.status, 'deferred');
    assert.equal(
      server.dataCount,
      1,
      'the content went out once: a silent answer is not a reason to send it again',
    );
  });

  it('over LMTP sends one transaction per mailbox at a time, and different mailboxes in parallel', async () => {
    const server = await scriptedServer({ lmtp: true, dataDelayMs: 30 });
    const pool = delivery(server.port, 'lmtp', 5);
    closers.push(
      () => pool.close(),
      () => server.stop(),
    );
    const send = (to: string[]) => pool.deliver({ route: 'mailbox', from: 'a@b.test', to, raw: MAIL });
    const results = await Promise.all([
      ...Array.from({ length: 6 }, () => send(['alice@example.com'])),
      ...Array.from({ length: 6 }, () => send(['bob@example.com'])),
      // Queued behind both: it waits for the last transaction to each of its mailboxes.
      send(['alice@example.com', 'bob@example.com']),
    ]);
    assert.ok(results.flat().every((r) => r.status === 'delivered'));
    assert.equal(server.dataCount, 13);
    assert.equal(server.maxConcurrentPerRecipient, 1, 'never two transactions to one mailbox at once');
    assert.equal(server.maxConcurrent, 2, 'alice and bob were delivered in parallel');
  });
});
