/**
 * The mail server of the benchmark: Postfix's `smtp-sink` (from the Debian postfix package) dumping every
 * transaction into its own file on tmpfs, so the sink costs the measured process nothing and each delivery keeps its
 * own time (the file's mtime, written at the final "."). Without smtp-sink (or without root for `-u`) an in-process
 * smtp-server sink stands in, and the results say so: it shares the benchmark's CPU and greets each new connection
 * after 100 ms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSmtpSink, type SmtpSink } from '../../test/harness/smtp-sink.ts';

export interface Delivery {
  /** X-Bench-Seq of the mail. */
  seq: number;
  /** X-Bench-Enqueued: epoch ms when the preload enqueued it. */
  enqueuedAt: number;
  deliveredAt: number;
  recipients: number;
}

export interface BenchSink {
  readonly port: number;
  readonly kind: 'postfix smtp-sink' | 'in-process smtp-server (smtp-sink unavailable)';
  /** Transactions received so far (cheap: a directory listing or a counter). */
  count(): Promise<number>;
  /** Every transaction with its times; reads the dump files, so call it once at the end of a run. */
  deliveries(): Promise<Delivery[]>;
  stop(): Promise<void>;
}

const SMTP_SINK = '/usr/sbin/smtp-sink';

export async function startBenchSink(): Promise<BenchSink> {
  const rootOk = process.getuid?.() === 0;
  if (existsSync(SMTP_SINK) && rootOk) return startPostfixSink();
  return startInProcessSink(await startSmtpSink());
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`smtp-sink did not listen on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function startPostfixSink(): Promise<BenchSink> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = await mkdtemp(join(base, 'uw-bench-sink-'));
  // smtp-sink drops to `nobody` before it writes the dumps.
  await chmod(dir, 0o777);
  const port = await freePort();
  const child: ChildProcess = spawn(
    SMTP_SINK,
    ['-u', 'nobody', '-m', '1024', '-d', `${dir}/%H%M%S.`, `127.0.0.1:${port}`, '1024'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  try {
    await waitForPort(port, 5_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${(error as Error).message}: ${stderr}`, { cause: error });
  }
  return {
    port,
    kind: 'postfix smtp-sink',
    count: async () => (await readdir(dir)).length,
    async deliveries() {
      const names = await readdir(dir);
      const out: Delivery[] = [];
      for (const name of names) {
        const path = join(dir, name);
        const [head, info] = await Promise.all([readHead(path), stat(path)]);
        out.push(parseDump(head, info.mtimeMs));
      }
      return out;
    },
    async stop() {
      child.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The dump's envelope lines and the mail's first header lines are all we need. */
async function readHead(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(4096);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.toString('latin1', 0, bytesRead);
  } finally {
    await handle.close();
  }
}

function parseDump(head: string, deliveredAt: number): Delivery {
  const seq = Number(/^X-Bench-Seq: (\d+)/im.exec(head)?.[1] ?? -1);
  const enqueuedAt = Number(/^X-Bench-Enqueued: (\d+)/im.exec(head)?.[1] ?? NaN);
  const recipients = (head.match(/^X-Rcpt-Args: /gm) ?? []).length;
  return { seq, enqueuedAt, deliveredAt, recipients: Math.max(1, recipients) };
}

function startInProcessSink(sink: SmtpSink): BenchSink {
  return {
    port: sink.port,
    kind: 'in-process smtp-server (smtp-sink unavailable)',
    count: async () => sink.messages.length,
    async deliveries() {
      return sink.messages.map((m) => ({
        ...parseDump(m.raw.subarray(0, 4096).toString('latin1'), m.receivedAt),
        recipients: m.to.length,
      }));
    },
    stop: () => sink.stop(),
  };
}
