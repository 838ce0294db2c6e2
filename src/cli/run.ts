/**
 * `unified-worker [run] --domains a.com,b.com`: the daemon. Its flags are the global ones (`--domains`,
 * `--log-level`, `--help`, `--version`), its settings the environment's; a bad setting is one line naming it
 * (exit 1), and so is a health or metrics port that cannot be bound.
 */
import { Command } from 'commander';

import type { Config } from '../config/config.ts';
import { settingsHelp } from '../config/settings.ts';
import { ConfigError } from '../errors.ts';
import { commandSettings, withCommonOptions, type CliApp, type CommonOptions } from './command.ts';
import { EXIT_OK, UsageError, reportError } from './exit.ts';
import type { CliStreams } from './output.ts';
import { unknownCommand } from './suggest.ts';

export interface RunDeps {
  streams: CliStreams;
  /** Starts the daemon; resolves once it is running (it then lives on its own signal handlers). */
  startDaemon(config: Config): Promise<void>;
}

export function runCommand(app: CliApp, deps: RunDeps): Command {
  return withCommonOptions(
    new Command('run')
      .description(
        'run the daemon (the default command): --domains a.com,b.com; settings from the environment',
      )
      // Anything else typed where a command belongs arrives here (run is the default): said below, as such.
      .allowExcessArguments()
      .addHelpText('after', `\n${settingsHelp()}`),
  ).action(
    app.action(async (options: CommonOptions, self: Command) => {
      const typed = self.args[0];
      if (typed !== undefined && self.parent) {
        return reportError(deps.streams.stderr, new UsageError(unknownCommand(typed, self.parent)), {
          command: self.parent,
        });
      }
      if (options.json) {
        throw new UsageError('--json is for the operator commands: the daemon always logs JSON lines');
      }
      const config = commandSettings(deps.streams.env, options, 'required');
      try {
        await deps.startDaemon(config);
      } catch (error) {
        throw startFailure(error, config);
      }
      return EXIT_OK;
    }),
  );
}

/** A listen failure of the health or metrics server as the setting to change; anything else as it is. */
export function startFailure(error: unknown, config: Config): unknown {
  if (typeof error !== 'object' || error === null) return error;
  const { code, port, address } = error as { code?: unknown; port?: unknown; address?: unknown };
  const { healthPort, metricsPort, host } = config.http;
  const setting = port === healthPort ? 'HEALTH_PORT' : port === metricsPort ? 'METRICS_PORT' : undefined;
  const where = `${typeof address === 'string' ? address : host}:${String(port)}`;
  if (code === 'EADDRINUSE' && setting !== undefined) {
    if (healthPort === metricsPort) {
      return new ConfigError(
        'METRICS_PORT',
        `${metricsPort} is HEALTH_PORT too: give each server its own port`,
      );
    }
    return new ConfigError(
      setting,
      `${where} is already in use (another worker or program listens there): stop it or choose a free port`,
    );
  }
  if (code === 'EACCES' && setting !== undefined) {
    return new ConfigError(
      setting,
      `${where}: permission denied (a port below 1024 needs privileges): choose a port above 1023`,
    );
  }
  if (code === 'EADDRNOTAVAIL') {
    return new ConfigError('HTTP_HOST', `${host} is not an address of this machine (0.0.0.0 binds them all)`);
  }
  return error;
}
