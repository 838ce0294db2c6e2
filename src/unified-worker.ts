#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { loadConfig } from './config/config.ts';
import { helpText } from './config/settings.ts';
import { ConfigError } from './errors.ts';
import { startDaemon } from './daemon/daemon.ts';

/**
 * Entry point. Configuration is read and validated before anything touches the network; a bad setting prints one
 * line naming it and exits 2.
 */
async function main(): Promise<void> {
  let request: ReturnType<typeof loadConfig>;
  try {
    request = loadConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`unified-worker: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  if (request.kind === 'help') {
    process.stdout.write(`${helpText()}\n`);
    return;
  }
  if (request.kind === 'version') {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    process.stdout.write(`${pkg.version}\n`);
    return;
  }
  await startDaemon(request.config);
}

main().catch((error: unknown) => {
  process.stderr.write(
    `unified-worker: fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
