/**
 * A mail server check that sends nothing: greeting, EHLO (LHLO for LMTP), `MAIL FROM:<>`, `RCPT TO` for each
 * address, RSET, QUIT. nodemailer's SMTPConnection cannot stop after RCPT (its send() always goes on to DATA),
 * so the dialog is spoken here; it is small and strictly one command at a time.
 */
import net from 'node:net';

export interface ProbeOptions {
  host: string;
  port: number;
  lmtp: boolean;
  recipients: readonly string[];
  timeoutMs: number;
  /** Name given in EHLO/LHLO. */
  clientName: string;
}

export interface ProbeStep {
  command: string;
  code: number;
  reply: string;
}

export interface ProbeResult {
  /** Connected, greeted, and every RCPT was accepted. */
  ok: boolean;
  steps: ProbeStep[];
  /** Recipients the server refused, with its reply. */
  refused: Array<{ recipient: string; code: number; reply: string }>;
  /** Why the dialog stopped early (connection refused, timeout, unexpected reply). */
  error?: string;
}

/** Replies longer than this are not a mail server talking to us. */
const MAX_REPLY_BYTES = 64 * 1024;

export async function probeMailServer(options: ProbeOptions): Promise<ProbeResult> {
  const result: ProbeResult = { ok: false, steps: [], refused: [] };
  let session: Session;
  try {
    session = await Session.open(options.host, options.port, options.timeoutMs);
  } catch (error) {
    result.error = describe(error);
    return result;
  }
  try {
    const expect = async (command: string | undefined, ok: (code: number) => boolean): Promise<ProbeStep> => {
      const step = await session.exchange(command);
      result.steps.push(step);
      if (!ok(step.code)) throw new Error(`${step.command} answered ${step.reply}`);
      return step;
    };
    await expect(undefined, (code) => code === 220);
    await expect(`${options.lmtp ? 'LHLO' : 'EHLO'} ${options.clientName}`, (code) => code === 250);
    await expect('MAIL FROM:<>', (code) => code === 250);
    for (const recipient of options.recipients) {
      const step = await expect(`RCPT TO:<${recipient}>`, () => true);
      if (step.code !== 250 && step.code !== 251)
        result.refused.push({ recipient, code: step.code, reply: step.reply });
    }
    await expect('RSET', (code) => code === 250);
    await expect('QUIT', (code) => code === 221);
    result.ok = result.refused.length === 0;
  } catch (error) {
    result.error = describe(error);
  } finally {
    session.close();
  }
  return result;
}

/** One TCP connection speaking command → reply, with a deadline on every reply. */
class Session {
  private buffer = '';
  private waiter: ((error?: Error) => void) | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      if (this.buffer.length > MAX_REPLY_BYTES) this.fail(new Error('reply too long'));
      else this.waiter?.();
    });
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(new Error('connection closed by the server')));
  }

  static open(host: string, port: number, timeoutMs: number): Promise<Session> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new Session(socket, timeoutMs));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /** Sends `command` (none: just read the greeting) and reads the complete, possibly multi-line reply. */
  async exchange(command: string | undefined): Promise<ProbeStep> {
    if (command !== undefined) this.socket.write(`${command}\r\n`);
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const reply = this.takeReply();
      if (reply) return { command: command ?? '(greeting)', ...reply };
      if (this.failure) throw this.failure;
      await this.wait(deadline - Date.now(), command ?? 'the greeting');
    }
  }

  close(): void {
    this.socket.removeAllListeners('close');
    this.socket.destroy();
  }

  /** A reply ends with a line `NNN text` (continuation lines are `NNN-text`). */
  private takeReply(): { code: number; reply: string } | undefined {
    const lines: string[] = [];
    let offset = 0;
    for (;;) {
      const end = this.buffer.indexOf('\n', offset);
      if (end < 0) return undefined;
      const line = this.buffer.slice(offset, end).replace(/\r$/, '');
      offset = end + 1;
      lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        this.buffer = this.buffer.slice(offset);
        return { code: Number(line.slice(0, 3)), reply: lines.join(' | ') };
      }
      if (!/^\d{3}-/.test(line)) {
        this.buffer = this.buffer.slice(offset);
        return { code: 0, reply: `unexpected line ${JSON.stringify(line.slice(0, 200))}` };
      }
    }
  }

  private wait(ms: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.waiter = undefined;
          reject(new Error(`no answer to ${what} within ${this.timeoutMs} ms`));
        },
        Math.max(0, ms),
      );
      this.waiter = (error) => {
        clearTimeout(timer);
        this.waiter = undefined;
        if (error) reject(error);
        else resolve();
      };
    });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.waiter?.(error);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code && !error.message.includes(code) ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}
