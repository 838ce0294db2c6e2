/**
 * The BUILT daemon (`dist/unified-worker.js`) as a child process, for tests of the real thing: worker threads,
 * signals, exit codes, the health and metrics servers.
 *
 * The child gets `process.env` + the stack's environment + the test's settings, with ephemeral health/metrics ports
 * on 127.0.0.1 and a 1 s long poll. Its stdout JSON lines are collected (the ports are read from the
 * `unified-worker started` line); stderr is kept for failure messages. Every started daemon is remembered, so a
 * test file's `after` can kill whatever is still running with {@link killAllDaemons}, even when a test failed.
 *
 * @example
 * ```ts
 * const daemon = await spawnDaemon({ domains: ['a.test'], env: { ...stack.env, SMTP_PORT: String(sink.port) } });
 * const health = await daemon.get('/health');
 * daemon.kill('SIGTERM');
 * assert.equal((await daemon.exited).code, 0);
 * ```
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { waitUntil } from './emulators.ts';
import type { LogLine } from './pipeline-rig.ts';

/** Absolute path of the built entry point. */
export const DAEMON_ENTRY = fileURLToPath(new URL('../../dist/unified-worker.js', import.meta.url));

/** One JSON log line of the daemon (pino); per-message outcome lines carry the typed fields. */
export type DaemonLogLine = LogLine;

/** How the child ended. */
export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** An HTTP answer of the health or metrics server. */
export interface HttpAnswer {
  status: number;
  body: string;
  contentType: string;
}

export interface DaemonOptions {
  /** Passed as `--domains a,b`. */
  domains: readonly string[];
  /** Settings over `process.env` and the harness defaults (usually `{ ...stack.env, SMTP_PORT: ... }`). */
  env?: Record<string, string>;
  /** How long to wait for the `unified-worker started` line (default 15 s). */
  startTimeoutMs?: number;
  /** Another build of the entry point (benchmark experiments); default `dist/unified-worker.js`. */
  entry?: string;
  /** Node options for the child, e.g. `--cpu-prof` for a benchmark profile. */
  execArgv?: readonly string[];
}

export interface DaemonProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly healthPort: number;
  readonly metricsPort: number;
  /** Parsed stdout JSON lines, in order. */
  readonly logs: DaemonLogLine[];
  /** stdout lines that were not JSON, and everything on stderr. */
  readonly otherOutput: string[];
  /** Resolves when the child exited (never rejects). */
  readonly exited: Promise<DaemonExit>;
  /** Undefined while the child runs. */
  readonly exit: DaemonExit | undefined;
  /** Resolves with the first log line (already seen or future) matching `predicate`. */
  waitForLog(
    predicate: (line: DaemonLogLine) => boolean,
    timeoutMs?: number,
    what?: string,
  ): Promise<DaemonLogLine>;
  /** Sends a signal (no-op once the child exited). */
  kill(signal?: NodeJS.Signals): void;
  /** `GET`/`POST` on the health port (default) or the metrics port. */
  request(method: 'GET' | 'POST', path: string, port?: 'health' | 'metrics'): Promise<HttpAnswer>;
  /** SIGKILL if still running, then waits for the exit. Idempotent. */
  stop(): Promise<DaemonExit>;
  /** SIGKILL — no drain, no release, nothing flushed — and wait for the exit: a crash, for fault tests. */
  kill9(): Promise<DaemonExit>;
  /** The /metrics text. */
  metrics(): Promise<string>;
  /** VmHWM (peak resident set) in bytes, from /proc/<pid>/status. */
  peakRss(): number;
  /** The last log lines and stderr, for assertion messages. */
  describe(lines?: number): string;
}

const running = new Set<DaemonProcess>();

/** Kills every daemon this process started that is still running (for `after` hooks). */
export async function killAllDaemons(): Promise<void> {
  await Promise.all([...running].map((daemon) => daemon.stop()));
}

// A crashed test runner must not leave daemons behind.
process.once('exit', () => {
  for (const daemon of running) daemon.child.kill('SIGKILL');
});

/** Throws a clear error when `npm run build` has not produced the entry point. */
export function assertBuilt(): void {
  if (!existsSync(DAEMON_ENTRY)) {
    throw new Error(
      `${DAEMON_ENTRY} is missing: run \`npm run build\` before the daemon tests (\`npm test\` does).`,
    );
  }
}

/** Plain `http.request` without keep-alive, so no socket outlives the answer. */
export function httpRequest(
  port: number,
  method: 'GET' | 'POST',
  path: string,
  timeoutMs = 5_000,
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: '127.0.0.1', port, method, path, agent: false, timeout: timeoutMs },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            contentType: String(response.headers['content-type'] ?? ''),
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error(`${method} ${path} on port ${port} timed out`)));
    request.on('error', reject);
    request.end();
  });
}

/** WAIT_TIME_SECONDS of every spawned daemon (unless a test sets its own): how long a long poll stays open. */
export const LONG_POLL_SECONDS = 1;

/**
 * Waits until the last long poll of a thread that crashed at `crashedAt` has surely ended. SQS keeps serving a poll
 * whose client is gone and hands a mail arriving meanwhile to it, hidden for the visibility timeout (not lost, late);
 * a test that wants the restarted thread to get its next mail waits this out first.
 */
export async function outlastDeadPoll(crashedAt: number): Promise<void> {
  const endsAt = crashedAt + LONG_POLL_SECONDS * 1000 + 500;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, endsAt - Date.now())));
}

/** Resolves once `/ready` answers 200: every domain's first long poll returned and the mail server answered. */
export async function waitReady(daemon: DaemonProcess, timeoutMs = 15_000): Promise<void> {
  await waitUntil(
    async () => (await daemon.request('GET', '/ready').catch(() => undefined))?.status === 200,
    timeoutMs,
    `daemon ${daemon.pid} to be ready`,
    50,
  );
}

/** Spawns `node dist/unified-worker.js --domains ...` and resolves once it logged its ports. */
export async function spawnDaemon(options: DaemonOptions): Promise<DaemonProcess> {
  const entry = options.entry ?? DAEMON_ENTRY;
  if (entry === DAEMON_ENTRY) assertBuilt();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HEALTH_PORT: '0',
    METRICS_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    WAIT_TIME_SECONDS: String(LONG_POLL_SECONDS),
    ...options.env,
  };
  // The test runner's own flags (--import tsx, --test ...) must not leak into the child.
  delete env.NODE_OPTIONS;
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(
    process.execPath,
    [...(options.execArgv ?? []), entry, '--domains', options.domains.join(',')],
    {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: DaemonLogLine[] = [];
  const otherOutput: string[] = [];
  const listeners = new Set<() => void>();
  let exit: DaemonExit | undefined;

  const lineReader = (sink: (line: string) => void) => {
    let pending = '';
    return (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') sink(line);
      for (const listener of listeners) listener();
    };
  };
  child.stdout?.on(
    'data',
    lineReader((line) => {
      try {
        const parsed: unknown = JSON.parse(line);
        if (typeof parsed === 'object' && parsed !== null && 'msg' in parsed) {
          logs.push(parsed as DaemonLogLine);
          return;
        }
      } catch {
        // not JSON
      }
      otherOutput.push(line);
    }),
  );
  child.stderr?.on(
    'data',
    lineReader((line) => otherOutput.push(`stderr: ${line}`)),
  );
  const exited = new Promise<DaemonExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      for (const listener of listeners) listener();
      resolve(exit);
    });
  });

  const describe = (count = 30): string =>
    [
      `daemon pid ${child.pid ?? '?'}${exit ? ` exited ${JSON.stringify(exit)}` : ''}; last log lines:`,
      ...logs.slice(-count).map((l) => JSON.stringify(l)),
      ...otherOutput.slice(-10),
    ].join('\n');

  const waitForLog = (
    predicate: (line: DaemonLogLine) => boolean,
    timeoutMs = 10_000,
    what = 'a log line',
  ): Promise<DaemonLogLine> =>
    new Promise((resolve, reject) => {
      let checked = 0;
      const check = (): boolean => {
        for (; checked < logs.length; checked++) {
          const line = logs[checked] as DaemonLogLine;
          if (predicate(line)) {
            done();
            resolve(line);
            return true;
          }
        }
        if (exit) {
          done();
          reject(new Error(`daemon exited while waiting for ${what}\n${describe()}`));
          return true;
        }
        return false;
      };
      const listener = () => void check();
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${describe()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        listeners.delete(listener);
      };
      if (!check()) listeners.add(listener);
    });

  let started: DaemonLogLine;
  const handle: DaemonProcess = {
    child,
    get pid() {
      return child.pid ?? -1;
    },
    get healthPort() {
      return Number(started.healthPort);
    },
    get metricsPort() {
      return Number(started.metricsPort);
    },
    logs,
    otherOutput,
    exited,
    get exit() {
      return exit;
    },
    waitForLog,
    kill(signal = 'SIGTERM') {
      if (!exit) child.kill(signal);
    },
    request(method, path, port = 'health') {
      return httpRequest(port === 'health' ? handle.healthPort : handle.metricsPort, method, path);
    },
    async stop() {
      if (!exit) child.kill('SIGKILL');
      const result = await exited;
      running.delete(handle);
      return result;
    },
    kill9() {
      return handle.stop();
    },
    async metrics() {
      return (await httpRequest(handle.metricsPort, 'GET', '/metrics')).body;
    },
    peakRss() {
      const status = readFileSync(`/proc/${child.pid ?? -1}/status`, 'utf8');
      const kb = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
      if (kb === undefined) throw new Error(`no VmHWM in /proc/${child.pid ?? -1}/status`);
      return Number(kb) * 1024;
    },
    describe,
  };
  running.add(handle);
  try {
    started = await waitForLog(
      (l) => l.msg === 'unified-worker started',
      options.startTimeoutMs ?? 15_000,
      'startup',
    );
  } catch (error) {
    await handle.stop();
    throw error;
  }
  return handle;
}
