#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { runCli } from './cli/program.ts';

/**
 * Entry point: the daemon (`unified-worker [run] --domains …`, the default) and the operator commands. Settings
 * are read and validated before anything touches the network; a bad setting prints one line naming it and exits
 * 1, bad usage one line and the usage line and exits 2.
 */
async function main(): Promise<void> {
  // A reader that stops early (`unified-worker --help | head`) closes the pipe: end quietly, not with a stack trace.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
      process.exit();
    });
  }
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  const code = await runCli(process.argv.slice(2), {
    streams: {
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
      // Only a command that asks touches stdin (the daemon never does).
      get stdin() {
        return process.stdin;
      },
    },
    version: pkg.version,
    async startDaemon(config) {
      // Loaded only for the daemon: the operator commands need no worker threads or HTTP servers.
      const { startDaemon } = await import('./daemon/daemon.ts');
      try {
        await startDaemon(config);
      } catch (error) {
        startFailed = true;
        throw error;
      }
    },
  });
  // The daemon keeps running on its own handles; a command that is done sets the code and lets Node exit.
  process.exitCode = code;
  // A daemon that failed to start may leave a server listening (the health server, when the metrics port is
  // taken): its one line is printed, so exit rather than hang.
  if (startFailed) setTimeout(() => process.exit(code), 500).unref();
}

let startFailed = false;

// runCli reports every error itself; this is for a failure to load the program at all (a broken install).
main().catch((error: unknown) => {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  process.stderr.write(`unified-worker: fatal: ${text.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
});
