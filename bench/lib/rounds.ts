/**
 * What the side-by-side benchmarks (idle, fairness) share: variants measured round by round, alternating, against one
 * set of emulators, and the results written with the machine they ran on.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStack, type TestStack } from '../../test/harness/emulators.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Each variant once per round, in order; every result is logged on stderr as it comes. */
export async function runRounds<V, R>(
  rounds: number,
  variants: readonly V[],
  measure: (stack: TestStack, variant: V) => Promise<R>,
): Promise<R[]> {
  const stack = await startStack({ tables: true });
  const results: R[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const variant of variants) {
        const result = await measure(stack, variant);
        results.push(result);
        process.stderr.write(`round ${round} ${JSON.stringify(result)}\n`);
      }
    }
  } finally {
    await stack.stop();
  }
  return results;
}

/** Writes `{ machine, ...payload }` to `out` (default bench/results/<time>-<kind>.json) and prints it. */
export async function writeBenchResults(
  kind: string,
  out: string | undefined,
  payload: Record<string, unknown>,
): Promise<void> {
  const machine = { cpus: cpus().length, node: process.version, date: new Date().toISOString() };
  const json = `${JSON.stringify({ machine, ...payload }, null, 2)}\n`;
  const file = out ?? join(ROOT, 'bench/results', `${machine.date.replaceAll(':', '-')}-${kind}.json`);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, json);
  process.stdout.write(json);
}

/**
 * A `--variant` argument, `label[:field…]:K=V;K=V[@entry]`: the label, the fields between it and the settings (as
 * many as `fields` says), the settings, and another build of the daemon to run (resolved from the repository root).
 */
export function parseVariantSpec(
  text: string,
  fields: number,
): { label: string; fields: string[]; env: Record<string, string>; entry?: string } {
  const [spec, entry] = text.split('@');
  const parts = (spec ?? '').split(':');
  const env: Record<string, string> = {};
  for (const pair of (parts[fields + 1] ?? '').split(';').filter(Boolean)) {
    const at = pair.indexOf('=');
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return {
    label: parts[0] ?? '',
    fields: parts.slice(1, fields + 1),
    env,
    ...(entry && { entry: resolve(ROOT, entry) }),
  };
}
