/**
 * Tests that need an outside tool (kubectl, promtool, prometheus, the deploy/aws install): skipped with the reason
 * when it is missing on a developer's machine, but failed under `CI=true`, so a CI machine that lost the tool
 * cannot go green by skipping (the e2e suite's rule).
 */
import { spawnSync } from 'node:child_process';

export const inCi =
  process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI.toLowerCase());

export interface ToolGate {
  /** For `it(name, { skip: gate.skip }, ...)`: the reason outside CI when the tool is missing, else false. */
  readonly skip: string | false;
  /** Throws (under CI) when the tool is missing; call it first in every gated test. */
  assertAvailable(): void;
}

/**
 * @param what the tool, as a person would name it
 * @param problem why it is unusable, or undefined when it is fine
 * @param fix how to get it (shown in the skip reason and the CI failure)
 */
export function toolGate(what: string, problem: string | undefined, fix: string): ToolGate {
  return {
    skip: problem !== undefined && !inCi ? `${what} unavailable (${problem}); ${fix}` : false,
    assertAvailable() {
      if (problem !== undefined) {
        throw new Error(`CI is set, so this test must run, but ${what} is unavailable: ${problem}. ${fix}`);
      }
    },
  };
}

/** Why `command --version`-like `args` cannot run, or undefined when it ran and exited 0. */
export function commandProblem(command: string, args: readonly string[]): string | undefined {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 30_000 });
  if (result.error) return `${command}: ${result.error.message}`;
  if (result.status !== 0)
    return `${command} ${args.join(' ')} exited ${result.status}: ${result.stderr.trim()}`;
  return undefined;
}
