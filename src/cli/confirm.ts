/**
 * Asking before something that cannot be undone (`dlq purge`): the question on stderr, one line read from a
 * terminal. Without a terminal nothing is asked — the command needs `--yes` — and an unanswered question is a
 * "no" after `timeoutMs`, so a forgotten prompt does not hold what it is about forever.
 */
import { createInterface } from 'node:readline';

import { UsageError } from './exit.ts';
import type { CliStreams } from './output.ts';

/** Throws a UsageError unless a terminal can answer (or `--yes` was given). */
export function requireTerminal(streams: CliStreams, yes: boolean | undefined, what: string): void {
  if (yes === true) return;
  if (streams.stdin?.isTTY !== true) {
    throw new UsageError(
      `${what} asks for confirmation on a terminal: give --yes to go ahead without asking`,
    );
  }
}

/** True when the answer starts with y; false for anything else, end of input, or no answer in time. */
export async function confirm(streams: CliStreams, question: string, timeoutMs: number): Promise<boolean> {
  const input = streams.stdin;
  if (!input) return false;
  streams.stderr.write(`${question} [y/N] `);
  const lines = createInterface({ input, terminal: false });
  try {
    const answer = await new Promise<string | { none: string }>((resolve) => {
      const timer = setTimeout(
        () => resolve({ none: `no answer within ${Math.round(timeoutMs / 1000)} s` }),
        timeoutMs,
      );
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(line);
      });
      lines.once('close', () => {
        clearTimeout(timer);
        resolve({ none: 'no answer (end of input)' });
      });
    });
    if (typeof answer !== 'string') {
      streams.stderr.write(`\n${answer.none}: taken as no\n`);
      return false;
    }
    return /^\s*y(es)?\s*$/i.test(answer);
  } finally {
    lines.close();
    input.pause();
  }
}
