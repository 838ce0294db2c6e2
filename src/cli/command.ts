/**
 * What every operator command shares: the exit codes, the settings (the daemon's, plus `--domains`), the AWS
 * clients built from them, and the one place that turns an error into a line on stderr and an exit code.
 */
import type { Command } from 'commander';

import { createAwsClients, type AwsClients } from '../aws/clients.ts';
import { buildConfig, type Config } from '../config/config.ts';
import { ConfigError, WorkerError } from '../errors.ts';
import { Output, type CliStreams } from './output.ts';

/** Success; a check or an operation failed; bad usage (unknown option, invalid address, bad setting). */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** Bad usage: printed as one line, exit 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface CommonOptions {
  domains?: string;
  json?: boolean;
}

export interface CommandContext {
  config: Config;
  clients: AwsClients;
  out: Output;
}

export interface ContextNeeds {
  /** The command works per domain: DOMAINS (or --domains) must name at least one. */
  domains: boolean;
}

/** Adds `-d, --domains` and `--json`, the options every per-domain command has. */
export function withCommonOptions(command: Command, perDomain = true): Command {
  if (perDomain) {
    command.option('-d, --domains <list>', 'comma-separated domains (default: the DOMAINS setting)');
  }
  return command.option('--json', 'print one JSON document instead of the human report');
}

/**
 * Runs the command's body with the settings and AWS clients, and returns the exit code. The settings are the
 * daemon's, read from the same environment, so the commands see exactly the resources the daemon uses.
 */
export async function runWithContext(
  streams: CliStreams,
  options: CommonOptions,
  needs: ContextNeeds,
  body: (context: CommandContext) => Promise<number>,
): Promise<number> {
  // The SDK's notice that its 2027 releases need Node 22 would end up in every command's output; README says it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config = buildConfig(
    { ...streams.env, ...(options.domains !== undefined && { DOMAINS: options.domains }) },
    { domainsOptional: !needs.domains },
  );
  const clients = createAwsClients(config.aws);
  try {
    return await body({ config, clients, out: new Output(streams, options.json === true) });
  } finally {
    clients.destroy();
  }
}

/** One line on stderr and the exit code for whatever a command threw. */
export function reportError(streams: CliStreams, command: string, error: unknown): number {
  if (error instanceof ConfigError) {
    streams.stderr.write(`unified-worker: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (error instanceof UsageError) {
    streams.stderr.write(`unified-worker ${command}: ${error.message}\n`);
    return EXIT_USAGE;
  }
  const detail =
    error instanceof WorkerError
      ? error.message
      : error instanceof Error
        ? `${error.name}: ${error.message}`
        : String(error);
  streams.stderr.write(`unified-worker ${command}: ${detail}\n`);
  return EXIT_FAILED;
}

/** The text of an SDK or other error, for report lines. */
export function describeError(error: unknown): string {
  if (error instanceof WorkerError) return error.message;
  if (error instanceof Error)
    return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

/** Splits `a,b , c` (and repeated options) into trimmed, non-empty items. */
export function listOption(values: string | readonly string[] | undefined): string[] {
  const all = values === undefined ? [] : typeof values === 'string' ? [values] : values;
  return all
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** For commander: a repeatable option collecting its values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** What a command module gets to build its commander command: the streams, and the action wrapper. */
export interface CliApp {
  readonly streams: CliStreams;
  /** Wraps an action so its exit code is recorded and anything it throws becomes one stderr line and a code. */
  action<A extends unknown[]>(
    name: string,
    body: (...args: A) => Promise<number>,
  ): (...args: A) => Promise<void>;
}

/** When the daemon sees a rules or blocklist change: its per-thread cache keeps the old one that long. */
export function cacheNote(context: CommandContext, what: string): string {
  const seconds = context.config.directory.cacheSeconds;
  return seconds === 0
    ? `The daemon applies ${what} to the next mail.`
    : `The daemon applies ${what} within RULES_CACHE_SECONDS (${seconds} s).`;
}
