/**
 * A real SMTP/LMTP server (smtp-server) standing in for Postfix/Dovecot in integration tests.
 *
 * It listens on 127.0.0.1:0, records every accepted message byte for byte, counts connections, and lets tests script
 * failures: per-recipient replies at RCPT TO, per-recipient replies after DATA (LMTP), slow DATA, and the whole server
 * going away and coming back on the same port.
 *
 * Note: smtp-server waits 100 ms before sending each greeting (not configurable), so every new connection costs at
 * least that much; pooled clients avoid paying it per message.
 */
import type { Socket } from 'node:net';
import { SMTPServer, type SMTPServerDataResult, type SMTPServerSession } from 'smtp-server';

/** An SMTP reply, e.g. `{ code: 550, message: '5.1.1 User unknown' }`. */
export interface SmtpReply {
  code: number;
  message: string;
}

/** One message the sink accepted. */
export interface ReceivedMail {
  /** MAIL FROM address ('' for the null sender `<>`). */
  from: string;
  /**
   * Recipients the message was accepted for. SMTP: every accepted RCPT TO. LMTP: the recipients whose DATA reply
   * was 2xx (those answered with an error from `setDataReply` are left out).
   */
  to: string[];
  /** The message exactly as transmitted (dot-stuffing removed, CRLF line endings preserved). */
  raw: Buffer;
  /** `Date.now()` when the DATA phase finished. */
  receivedAt: number;
}

/** Options of {@link startSmtpSink}. */
export interface SmtpSinkOptions {
  /** Speak LMTP (LHLO, one reply per recipient after DATA) instead of SMTP. */
  lmtp?: boolean;
  /** Replies for RCPT TO, keyed by address (case-insensitive); 4xx/5xx reject the recipient. */
  rcptReplies?: Record<string, SmtpReply>;
  /** Replies after DATA, keyed by recipient address (case-insensitive); see {@link SmtpSink.setDataReply}. */
  dataReplies?: Record<string, SmtpReply>;
  /** Advertised SIZE limit in bytes; bigger messages are answered 552 (like Postfix's message_size_limit). */
  size?: number;
  /** Delay before answering DATA, to keep connections busy (concurrency tests). */
  dataDelayMs?: number;
}

/** A running SMTP/LMTP sink. */
export interface SmtpSink {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly lmtp: boolean;
  /** Accepted messages in arrival order; cleared in place by `clear()`. */
  readonly messages: ReceivedMail[];
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections open right now. */
  readonly openConnections: number;
  /** The highest number of simultaneously open connections seen. */
  readonly maxConcurrentConnections: number;
  /** False between `down()` and `up()`. */
  readonly isUp: boolean;
  /** Sets (or, with `undefined`, removes) the RCPT TO reply for an address. 2xx accepts, 4xx/5xx reject. */
  setRcptReply(address: string, reply: SmtpReply | undefined): void;
  /**
   * Sets (or removes) the reply after DATA for a recipient. LMTP: that recipient gets this reply while the others get
   * 250. SMTP (one reply per transaction): the first recipient with a non-2xx reply fails the whole message.
   */
  setDataReply(address: string, reply: SmtpReply | undefined): void;
  /** Delays every DATA reply by `ms` (0 to disable). */
  setDataDelay(ms: number): void;
  /** Simulates the server being unavailable: stops listening and drops every open connection. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  /** Resolves with the messages once at least `count` arrived; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedMail[]>;
  /** Forgets messages and connection counters (open connections stay open). Scripted replies are kept. */
  clear(): void;
  /** Drops all connections and stops listening. Idempotent. */
  stop(): Promise<void>;
}

function replyError(reply: SmtpReply): Error & { responseCode: number } {
  // smtp-server answers an Error carrying `responseCode` with that code and the error's message.
  return Object.assign(new Error(reply.message), { responseCode: reply.code });
}

const isSuccess = (reply: SmtpReply | undefined): boolean => reply === undefined || reply.code < 400;

/**
 * Starts an SMTP (or LMTP) sink on 127.0.0.1:0 with AUTH and STARTTLS disabled (like a trusted internal port).
 */
export async function startSmtpSink(options: SmtpSinkOptions = {}): Promise<SmtpSink> {
  const lmtp = options.lmtp ?? false;
  const rcptReplies = new Map<string, SmtpReply>();
  const dataReplies = new Map<string, SmtpReply>();
  for (const [address, reply] of Object.entries(options.rcptReplies ?? {}))
    rcptReplies.set(address.toLowerCase(), reply);
  for (const [address, reply] of Object.entries(options.dataReplies ?? {}))
    dataReplies.set(address.toLowerCase(), reply);
  let dataDelayMs = options.dataDelayMs ?? 0;

  const messages: ReceivedMail[] = [];
  const messageListeners = new Set<() => void>();
  const sockets = new Set<Socket>();
  let connections = 0;
  let maxConcurrentConnections = 0;
  let up = false;
  let stopped = false;

  const recipientsOf = (session: SMTPServerSession): string[] =>
    session.envelope.rcptTo.map((r) => r.address);

  const server = new SMTPServer({
    logger: false,
    lmtp,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    ...(options.size !== undefined ? { size: options.size, rejectOversized: true } : {}),
    onRcptTo(address, _session, callback) {
      const reply = rcptReplies.get(address.address.toLowerCase());
      callback(isSuccess(reply) ? null : replyError(reply as SmtpReply));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      // smtp-server must get exactly one callback per transaction, whichever of 'error'/'end' comes first.
      let answered = false;
      stream.once('error', (err: Error) => {
        if (!answered) callback(err);
        answered = true;
      });
      stream.once('end', () => {
        if (answered) return;
        answered = true;
        const finish = (): void => {
          const recipients = recipientsOf(session);
          const replies = recipients.map((r) => dataReplies.get(r.toLowerCase()));
          const raw = Buffer.concat(chunks);
          const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address;
          const record = (to: string[]): void => {
            messages.push({ from, to, raw, receivedAt: Date.now() });
            for (const listener of messageListeners) listener();
          };
          // Oversized messages get smtp-server's own 552; do not count them as delivered.
          if (stream.sizeExceeded) {
            callback(null, 'ignored: size exceeded');
            return;
          }
          if (lmtp) {
            // LMTP: one reply per accepted recipient, in RCPT TO order (RFC 2033 §4.2).
            const results: SMTPServerDataResult[] = replies.map((reply) =>
              isSuccess(reply)
                ? `${reply?.message ?? 'OK: message accepted'}`
                : replyError(reply as SmtpReply),
            );
            const delivered = recipients.filter((_, i) => isSuccess(replies[i]));
            if (delivered.length > 0) record(delivered);
            callback(null, results);
            return;
          }
          const failure = replies.find((reply) => !isSuccess(reply));
          if (failure) {
            callback(replyError(failure));
            return;
          }
          record(recipients);
          callback(null, 'OK: message queued');
        };
        if (dataDelayMs > 0) setTimeout(finish, dataDelayMs);
        else finish();
      });
    },
  });

  // Counting at the TCP level (rather than in onConnect) also sees connections that never get past the greeting.
  server.server.on('connection', (socket: Socket) => {
    connections++;
    sockets.add(socket);
    maxConcurrentConnections = Math.max(maxConcurrentConnections, sockets.size);
    socket.once('close', () => sockets.delete(socket));
  });
  // Errors on a listening server (e.g. EADDRINUSE in up()) surface through listen(); keep the emitter from throwing.
  server.on('error', () => {});

  function listen(port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.server.once('error', onError);
      server.server.listen(port, '127.0.0.1', () => {
        server.server.off('error', onError);
        const address = server.server.address();
        if (address === null || typeof address === 'string') {
          reject(new Error('SMTP sink is not listening on a TCP port'));
          return;
        }
        up = true;
        resolve(address.port);
      });
    });
  }

  function closeListener(): Promise<void> {
    // Closing the net.Server directly (not SMTPServer.close()) skips its 30 s grace period for open sessions: an
    // unavailable server does not let clients finish their transaction either.
    return new Promise((resolve) => {
      up = false;
      if (!server.server.listening) {
        for (const socket of sockets) socket.destroy();
        resolve();
        return;
      }
      server.server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  }

  const port = await listen(0);

  return {
    host: '127.0.0.1',
    port,
    lmtp,
    messages,
    get connections() {
      return connections;
    },
    get openConnections() {
      return sockets.size;
    },
    get maxConcurrentConnections() {
      return maxConcurrentConnections;
    },
    get isUp() {
      return up;
    },
    setRcptReply(address, reply) {
      if (reply) rcptReplies.set(address.toLowerCase(), reply);
      else rcptReplies.delete(address.toLowerCase());
    },
    setDataReply(address, reply) {
      if (reply) dataReplies.set(address.toLowerCase(), reply);
      else dataReplies.delete(address.toLowerCase());
    },
    setDataDelay(ms) {
      dataDelayMs = ms;
    },
    down: () => closeListener(),
    async up() {
      if (stopped) throw new Error('SMTP sink was stopped');
      if (up) return;
      // The kernel lets us re-bind right away: Node sets SO_REUSEADDR on listening sockets.
      await listen(port);
    },
    waitFor(count, timeoutMs = 5000) {
      if (messages.length >= count) return Promise.resolve(messages.slice());
      return new Promise((resolve, reject) => {
        const listener = (): void => {
          if (messages.length < count) return;
          clearTimeout(timer);
          messageListeners.delete(listener);
          resolve(messages.slice());
        };
        const timer = setTimeout(() => {
          messageListeners.delete(listener);
          reject(
            new Error(
              `timed out after ${timeoutMs} ms waiting for ${count} messages (got ${messages.length})`,
            ),
          );
        }, timeoutMs);
        messageListeners.add(listener);
      });
    },
    clear() {
      messages.length = 0;
      connections = 0;
      maxConcurrentConnections = sockets.size;
    },
    async stop() {
      stopped = true;
      await closeListener();
    },
  };
}
