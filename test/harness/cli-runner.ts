/**
 * Runs `unified-worker <command>` for tests: in-process through `runCli` (the same code the binary runs, with the
 * settings passed as its environment), or as the built binary `dist/unified-worker.js` in a child process.
 * Either way the result is the exit code and what went to stdout and stderr.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';

import { runCli } from '../../src/cli/program.ts';
import { DAEMON_ENTRY } from './daemon-process.ts';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as the `--json` document. */
  json<T = Record<string, unknown>>(): T;
}

function result(code: number | null, stdout: string, stderr: string): CliResult {
  return {
    code,
    stdout,
    stderr,
    json<T>() {
      try {
        return JSON.parse(stdout) as T;
      } catch {
        throw new Error(`stdout is not JSON (exit ${String(code)}):\n${stdout}\nstderr:\n${stderr}`);
      }
    },
  };
}

/** What a person at a terminal types, line by line (for a command that asks); without it there is no terminal. */
export interface TerminalInput {
  answers: string[];
}

/**
 * `runCli` in this process with `env` as the whole environment (nothing inherited). The AWS SDK reads credentials
 * from process.env, so the emulators' dummy ones are set there.
 */
export async function runCommand(
  argv: readonly string[],
  env: Record<string, string>,
  terminal?: TerminalInput,
): Promise<CliResult> {
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, {
    streams: {
      stdout: { write: (chunk: string) => (stdout += chunk) },
      stderr: { write: (chunk: string) => (stderr += chunk) },
      env,
      ...(terminal && {
        stdin: Object.assign(Readable.from(terminal.answers.map((a) => `${a}\n`)), { isTTY: true }),
      }),
    },
    version: 'test',
    startDaemon: () => Promise.reject(new Error('runCommand does not start the daemon')),
  });
  return result(code, stdout, stderr);
}

/** The built binary with `env` (plus PATH), as an admin runs it; killed after `timeoutMs`. */
export async function runBuiltCli(
  argv: readonly string[],
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<CliResult> {
  const child = spawn(process.execPath, [DAEMON_ENTRY, ...argv], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  return result(code, stdout, stderr);
}

/** Bad usage as the CLI reports it: exit 2, one line saying what is wrong (`message`), then the usage line. */
export function assertUsageError(run: CliResult, message?: RegExp, what = ''): void {
  const detail = `${what} exit ${String(run.code)}, stderr:\n${run.stderr}`;
  assert.equal(run.code, 2, detail);
  const lines = run.stderr.split('\n').filter((line) => line !== '');
  assert.equal(lines.length, 2, detail);
  if (message) assert.match(lines[0] ?? '', message, detail);
  assert.match(lines[1] ?? '', /^Usage: unified-worker /, detail);
}
