/**
 * The `unified-worker` command line: the daemon (`run`, the default) and the operator commands, built with
 * commander. The global options (`--domains`, `--log-level`, `--json`) work before or after the command; every
 * parse error is one line and the command's usage line on stderr, exit 2.
 */
import { Command, CommanderError, Option } from 'commander';

import type { Config } from '../config/config.ts';
import { settingsHelp } from '../config/settings.ts';
import { blocklistCommand } from './blocklist.ts';
import type { CliApp, CommonOptions } from './command.ts';
import { dlqCommand } from './dlq.ts';
import { doctorCommand } from './doctor.ts';
import { EXIT_OK, EXIT_USAGE, UsageError, reportError, wantsDebug } from './exit.ts';
import { injectCommand } from './inject.ts';
import type { CliStreams } from './output.ts';
import { replayCommand } from './replay.ts';
import { rulesCommand } from './rules.ts';
import { runCommand } from './run.ts';
import { setupCommand } from './setup.ts';
import { unknownCommand } from './suggest.ts';
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
    action(body) {
      return async (...args) => {
        const command = args[args.length - 1] as Command;
        const options: CommonOptions = { ...command.optsWithGlobals() };
        args[args.length - 2] = options;
        try {
          exitCode = await body(...args);
        } catch (error) {
          const debug = wantsDebug(options.logLevel ?? streams.env.LOG_LEVEL);
          exitCode = reportError(streams.stderr, error, { command, debug });
        }
      };
    },
  };
  const program = buildProgram(app, deps);
  let failed: Command | undefined;
  configureTree(program, app, (command) => (failed ??= command));
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) return commanderExit(error, streams, failed ?? program);
    return reportError(streams.stderr, error, { command: failed ?? program });
  }
  return exitCode;
}

function buildProgram(app: CliApp, deps: CliDeps): Command {
  const program = new Command('unified-worker')
    .description(
      'Delivers the mail Amazon SES receives into docker-mailserver (Postfix + Dovecot), and the commands to set up, check and operate it.',
    )
    .option('-d, --domains <list>', 'comma-separated domains (default: the DOMAINS setting)')
    .option(
      '--log-level <level>',
      'fatal|error|warn|info|debug|trace|silent (default: LOG_LEVEL); debug also prints the stack of an unexpected error',
    )
    .option('--json', 'print one JSON document instead of the human report (operator commands)')
    .version(deps.version, '-V, --version', 'print the version')
    .addOption(new Option('-v', 'print the version (as -V)').hideHelp())
    .addHelpCommand(false)
    .showSuggestionAfterError(true)
    .addHelpText('after', `\n${settingsHelp()}`);
  // -v printed the version before -V existed; it still does.
  program.on('option:v', () => {
    app.streams.stdout.write(`${deps.version}\n`);
    throw new CommanderError(EXIT_OK, 'commander.version', deps.version);
  });
  program.addCommand(runCommand(app, deps), { isDefault: true });
  for (const command of [
    setupCommand(app),
    doctorCommand(app),
    rulesCommand(app),
    blocklistCommand(app),
    injectCommand(app),
    replayCommand(app),
    dlqCommand(app),
    helpCommand(app, program),
    shardsCommand(app),
  ]) {
    program.addCommand(command);
  }
  return program;
}

/** `help [command...]`: the help of any command, `help dlq show` included. */
function helpCommand(app: CliApp, program: Command): Command {
  return new Command('help')
    .description('print the help of a command: help dlq show')
    .argument('[command...]')
    .action(
      app.action(async (names: string[]) => {
        let target = program;
        for (const name of names) {
          const next = target.commands.find((c) => c.name() === name || c.aliases().includes(name));
          if (!next) throw new UsageError(unknownCommand(name, target));
          target = next;
        }
        target.outputHelp();
        return EXIT_OK;
      }),
    );
}

/**
 * Output goes to our streams and errors are printed by us; `onFailure` learns which command failed to parse, for
 * its usage line. A command group called without its subcommand is bad usage, said in one line.
 */
function configureTree(command: Command, app: CliApp, onFailure: (command: Command) => void): void {
  command
    .helpOption('-h, --help', 'print this help')
    .exitOverride((error) => {
      onFailure(command);
      throw error;
    })
    .configureOutput({
      writeOut: (text) => app.streams.stdout.write(text),
      writeErr: (text) => app.streams.stderr.write(text),
      outputError: () => undefined,
    });
  if (command.parent && command.commands.length > 0) {
    command.allowExcessArguments().action(
      app.action(async (_options: CommonOptions, self: Command) => {
        const name = self.args[0];
        if (name !== undefined) throw new UsageError(unknownCommand(name, command));
        throw new UsageError(`which one? ${command.commands.map((c) => c.name()).join(', ')}`);
      }),
    );
  }
  for (const sub of command.commands) configureTree(sub, app, onFailure);
}

function commanderExit(error: CommanderError, streams: CliStreams, command: Command): number {
  if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT_OK;
  const message = error.message
    .replace(/^error: /, '')
    .replace(/\s*\n+\s*/g, ' ')
    .trim();
  reportError(streams.stderr, new UsageError(message), { command });
  return EXIT_USAGE;
}
