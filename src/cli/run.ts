/**
 * `unified-worker [run] --domains a.com,b.com`: the daemon. Its arguments go to the daemon's own `loadConfig`
 * unchanged, so the command line behaves exactly as before the subcommands existed: `--domains`, `--log-level`,
 * `--help` (every setting), and one line naming the setting with exit 2 for anything wrong.
 */
import { Command } from 'commander';

import { loadConfig, type Config } from '../config/config.ts';
import { helpText } from '../config/settings.ts';
import { ConfigError } from '../errors.ts';
import { EXIT_OK } from './command.ts';
import type { CliStreams } from './output.ts';

export interface RunDeps {
  streams: CliStreams;
  version: string;
  /** Starts the daemon; resolves once it is running (it then lives on its own signal handlers). */
  startDaemon(config: Config): Promise<void>;
}

export function runCommand(deps: RunDeps, setExitCode: (code: number) => void): Command {
  return new Command('run')
    .description(
      'run the daemon (the default command): --domains a.com,b.com, --log-level; settings from the environment',
    )
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[arguments...]')
    .action(async (args: string[]) => {
      const first = args[0];
      if (first !== undefined && !first.startsWith('-')) {
        throw new ConfigError(
          'command line',
          `unknown command "${first}" (unified-worker --help lists the commands)`,
        );
      }
      const request = loadConfig(args, deps.streams.env);
      if (request.kind === 'help') deps.streams.stdout.write(`${helpText()}\n`);
      else if (request.kind === 'version') deps.streams.stdout.write(`${deps.version}\n`);
      else await deps.startDaemon(request.config);
      setExitCode(EXIT_OK);
    });
}
