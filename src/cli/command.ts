/**
 * What every operator command shares, in one place: `command()` gives a command's body the settings (the daemon's,
 * read from the same environment, with the global options `--domains` and `--log-level` on top), the AWS clients
 * built from them and the output, and turns whatever it throws into lines on stderr and an exit code.
 */
import type { Command } from 'commander';

import { createAwsClients, type AwsClients } from '../aws/clients.ts';
import { buildConfig, type Config } from '../config/config.ts';
import { ConfigError, WorkerError } from '../errors.ts';
import { UsageError } from './exit.ts';
import { Output, type CliStreams } from './output.ts';

/** The global options (`unified-worker --domains a.com dlq show` or `... dlq show --domains a.com`). */
export interface CommonOptions {
  domains?: string;
  json?: boolean;
  logLevel?: string;
}

export interface CommandContext {
  config: Config;
  clients: AwsClients;
  out: Output;
}

/** `required`: DOMAINS (or --domains) must name a domain; `optional`: an unset DOMAINS is an empty list. */
export type DomainNeed = 'required' | 'optional';

/** What a command module gets to build its commander command: the streams, and the action wrapper. */
export interface CliApp {
  readonly streams: CliStreams;
  /**
   * Wraps an action: the global options are merged into its options argument, its exit code is recorded, and
   * anything it throws becomes lines on stderr and a code (the command's own path names it).
   */
  action<A extends unknown[]>(body: (...args: A) => Promise<number>): (...args: A) => Promise<void>;
}

export interface CommandSpec<O extends CommonOptions, A extends unknown[]> {
  /** Whether the command works per domain; a function when it depends on the arguments (`blocklist list [a]`). */
  domains: DomainNeed | ((options: O, ...args: A) => DomainNeed);
  run(context: CommandContext, options: O, ...args: A): Promise<number>;
}

/** Sets the action of `definition`: `spec.run` with the context, its options and its arguments. */
export function command<O extends CommonOptions, A extends unknown[] = []>(
  app: CliApp,
  definition: Command,
  spec: CommandSpec<O, A>,
): Command {
  return withCommonOptions(definition).action(
    app.action((...all: unknown[]) => {
      // commander calls an action with the arguments, then the options, then the command itself.
      const options = all[all.length - 2] as O;
      const args = all.slice(0, -2) as A;
      const need = typeof spec.domains === 'function' ? spec.domains(options, ...args) : spec.domains;
      return withContext(app.streams, options, need, (context) => spec.run(context, options, ...args));
    }),
  );
}

/** Shows the global options (`--domains`, `--log-level`, `--json`) in the command's help. */
export function withCommonOptions(definition: Command): Command {
  return definition.configureHelp({ showGlobalOptions: true });
}

/** The settings and clients for one command run; the clients are closed when `body` is done. */
export async function withContext(
  streams: CliStreams,
  options: CommonOptions,
  need: DomainNeed,
  body: (context: CommandContext) => Promise<number>,
): Promise<number> {
  // The SDK's notice that its 2027 releases need Node 22 would end up in every command's output; README says it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const config = commandSettings(streams.env, options, need);
  const clients = createAwsClients(config.aws);
  try {
    return await body({ config, clients, out: new Output(streams, options.json === true) });
  } finally {
    clients.destroy();
  }
}

/**
 * The daemon's settings with the global options on top. A value typed on the command line that does not parse is
 * bad usage (exit 2, it names the option); the same value from the environment is a configuration error (exit 1).
 */
export function commandSettings(
  env: Readonly<Record<string, string | undefined>>,
  options: CommonOptions,
  need: DomainNeed,
): Config {
  const merged = {
    ...env,
    ...(options.domains !== undefined && { DOMAINS: options.domains }),
    ...(options.logLevel !== undefined && { LOG_LEVEL: options.logLevel }),
  };
  if (need === 'required' && (merged.DOMAINS ?? '').trim() === '') {
    throw new UsageError('which domains? give --domains example.com,another.com (or set DOMAINS)');
  }
  try {
    return buildConfig(merged, { domainsOptional: need === 'optional' });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const typed =
      error.setting === 'DOMAINS'
        ? options.domains
        : error.setting === 'LOG_LEVEL'
          ? options.logLevel
          : undefined;
    if (typed === undefined) throw error;
    const option = error.setting === 'DOMAINS' ? '--domains' : '--log-level';
    throw new UsageError(
      `${option} ${JSON.stringify(typed)}: ${error.message.slice(`invalid configuration: ${error.setting}: `.length)}`,
    );
  }
}

/** The text of an SDK or other error, for report lines. */
export function describeError(error: unknown): string {
  if (error instanceof WorkerError) return error.message;
  if (error instanceof Error)
    return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

/** When the daemon sees a rules or blocklist change: its per-thread cache keeps the old one that long. */
export function cacheNote(context: CommandContext, what: string): string {
  const seconds = context.config.directory.cacheSeconds;
  return seconds === 0
    ? `The daemon applies ${what} to the next mail.`
    : `The daemon applies ${what} within RULES_CACHE_SECONDS (${seconds} s).`;
}
