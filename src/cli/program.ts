/**
 * The `unified-worker` command line: the daemon (`run`, the default) and the operator commands. Built with
 * commander; every parse error (unknown option, missing argument) is one line on stderr and exit 2.
 */
import { Command, CommanderError } from 'commander';

import type { Config } from '../config/config.ts';
import { settingsHelp } from '../config/settings.ts';
import { ConfigError } from '../errors.ts';
import { blocklistCommand } from './blocklist.ts';
import { EXIT_OK, EXIT_USAGE, reportError, type CliApp } from './command.ts';
import { dlqCommand } from './dlq.ts';
import { doctorCommand } from './doctor.ts';
import { injectCommand } from './inject.ts';
import type { CliStreams } from './output.ts';
import { replayCommand } from './replay.ts';
import { rulesCommand } from './rules.ts';
import { runCommand } from './run.ts';
import { setupCommand } from './setup.ts';
import { shardsCommand } from './shards.ts';

export interface CliDeps {
  streams: CliStreams;
  version: string;
  startDaemon(config: Config): Promise<void>;
}

/** Parses `argv` (without node and the script) and runs the command; resolves with the exit code. */
export async function runCli(argv: readonly string[], deps: CliDeps): Promise<number> {
  let exitCode = EXIT_OK;
  const { streams } = deps;
  const app: CliApp = {
    streams,
    action(name, body) {
      return async (...args) => {
        try {
          exitCode = await body(...args);
        } catch (error) {
          exitCode = reportError(streams, name, error);
        }
      };
    },
  };
  const program = new Command('unified-worker')
    .description(
      'Delivers the mail Amazon SES receives into docker-mailserver (Postfix + Dovecot), and the commands to set up, check and operate it.',
    )
    .version(deps.version, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'print this help')
    .addHelpCommand(false)
    .showSuggestionAfterError(true)
    .addHelpText('after', `\n${settingsHelp()}`);
  program.addCommand(
    runCommand(deps, (code) => (exitCode = code)),
    { isDefault: true },
  );
  for (const command of [
    setupCommand(app),
    doctorCommand(app),
    rulesCommand(app),
    blocklistCommand(app),
    injectCommand(app),
    replayCommand(app),
    dlqCommand(app),
    shardsCommand(app),
  ]) {
    program.addCommand(command);
  }
  configureTree(program, streams);
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) return commanderExit(error, streams);
    if (error instanceof ConfigError) return reportError(streams, '', error);
    throw error;
  }
  return exitCode;
}

/** Output goes to our streams; errors are printed by us, as one line. */
function configureTree(command: Command, streams: CliStreams): void {
  command.exitOverride().configureOutput({
    writeOut: (text) => streams.stdout.write(text),
    writeErr: (text) => streams.stderr.write(text),
    outputError: () => undefined,
  });
  for (const sub of command.commands) configureTree(sub, streams);
}

function commanderExit(error: CommanderError, streams: CliStreams): number {
  if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT_OK;
  // A command group without its subcommand: commander printed the group's help; that is bad usage.
  if (error.code === 'commander.help') return EXIT_USAGE;
  const message = error.message
    .replace(/^error: /, '')
    .replace(/\n+/g, ' ')
    .trim();
  streams.stderr.write(`unified-worker: invalid usage: ${message} (see --help)\n`);
  return EXIT_USAGE;
}
