/**
 * How a command ends: the exit codes, and the one place that turns whatever went wrong into lines on stderr. Bad
 * usage is one line and the command's usage line (exit 2); a bad setting, a failed check or a failed operation is
 * one line (exit 1). No stack trace reaches the terminal unless asked for with `--log-level debug`.
 */
import type { Command } from 'commander';

import { ConfigError, WorkerError } from '../errors.ts';
import type { OutputStream } from './output.ts';

/** Success; a setting, a check or an operation failed (or the outcome is not final); bad usage. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** Bad usage of a command: an unknown option, a value that does not parse, a missing argument or file. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const PROGRAM = 'unified-worker';

/** `unified-worker dlq show`: the command's name with its parents'. */
export function commandPath(command: Command | undefined): string {
  const names: string[] = [];
  for (let c = command; c?.parent; c = c.parent) names.unshift(c.name());
  return [PROGRAM, ...names].join(' ');
}

/** `Usage: unified-worker dlq show [options]`, as the command's help starts. */
export function usageLine(command: Command): string {
  return `Usage: ${commandPath(command)} ${command.usage()}`;
}

export interface ErrorReport {
  /** The command that failed; its usage line follows a usage error. */
  command?: Command;
  /** `--log-level debug|trace` (or LOG_LEVEL): the stack of an unexpected error is printed too. */
  debug?: boolean;
}

/** Writes the lines for `error` and returns the exit code. */
export function reportError(stderr: OutputStream, error: unknown, report: ErrorReport = {}): number {
  const where = commandPath(report.command);
  if (error instanceof UsageError) {
    stderr.write(`${where}: ${error.message}\n`);
    if (report.command) {
      stderr.write(`${usageLine(report.command)}   (more: ${PROGRAM} help${where.slice(PROGRAM.length)})\n`);
    }
    return EXIT_USAGE;
  }
  if (error instanceof ConfigError) {
    stderr.write(`${PROGRAM}: ${error.message}\n`);
    return EXIT_FAILED;
  }
  if (error instanceof WorkerError) {
    stderr.write(`${where}: ${error.message}\n`);
    return EXIT_FAILED;
  }
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  if (report.debug && error instanceof Error && error.stack) {
    stderr.write(`${where}: ${error.stack}\n`);
  } else {
    stderr.write(`${where}: ${text.replace(/\s*\n\s*/g, ' ')} (--log-level debug shows where)\n`);
  }
  return EXIT_FAILED;
}

/** True when the level asks for the stack of unexpected errors. */
export function wantsDebug(level: string | undefined): boolean {
  return level === 'debug' || level === 'trace';
}
