/**
 * Writes `worker.env.example` from `SETTINGS` (src/config/settings.ts), so the example cannot drift from the code:
 * `npm run gen:env` rewrites it, `npm run gen:env -- --check` fails when it is stale, and the config unit test
 * compares the file with `renderEnvExample()`.
 *
 * Every setting appears commented out with its default (copying the file to `worker.env` changes nothing), except
 * `DOMAINS`, which has no default and must be filled in.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { SETTINGS, type SettingSpec } from '../src/config/settings.ts';

export const ENV_EXAMPLE_PATH = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'worker.env.example',
);

/** Settings that have no usable default and are written uncommented, for the user to fill in. */
const REQUIRED = new Set(['DOMAINS']);

const WIDTH = 110;

function wrap(text: string, prefix: string): string[] {
  const lines: string[] = [];
  let line = prefix;
  for (const word of text.split(/\s+/)) {
    if (line.length > prefix.length && line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = prefix;
    }
    line += line.length > prefix.length ? ` ${word}` : word;
  }
  if (line.length > prefix.length) lines.push(line);
  return lines;
}

/** A value as a .env line accepts it: quoted when it has spaces at either end or characters a shell would eat. */
function envValue(value: string): string {
  if (value === '' || /^[A-Za-z0-9_./:,{}@*+-]+$/.test(value)) return value;
  return `"${value.replace(/(["\\$`])/g, '\\$1')}"`;
}

export function renderEnvExample(): string {
  const out = [
    '# unified-worker configuration: every setting the worker reads, with its default.',
    '# GENERATED from src/config/settings.ts by `npm run gen:env`; do not edit by hand.',
    '#',
    '# Copy to `worker.env` and uncomment what you change (docker compose gives it to the worker through `env_file`;',
    '# outside Docker use `node --env-file=worker.env dist/unified-worker.js`). `node dist/unified-worker.js --help`',
    '# prints the same list; docs/configuration.md says which ones deployments usually set.',
    '#',
    '# AWS credentials are not settings of the worker: they come from the standard AWS SDK chain (the variables',
    '# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an EC2/ECS instance role, or IRSA on Kubernetes).',
  ];
  let group = '';
  for (const [name, spec] of Object.entries(SETTINGS) as Array<[string, SettingSpec]>) {
    if (spec.group !== group) {
      group = spec.group;
      out.push('', `# ---- ${group} ${'-'.repeat(Math.max(4, WIDTH - group.length - 12))}`);
    }
    out.push('', ...wrap(spec.help, '# '));
    if (REQUIRED.has(name)) out.push('# Required.', `${name}=${envValue(spec.default)}`);
    else out.push(`# ${name}=${envValue(spec.default)}`);
  }
  return `${out.join('\n')}\n`;
}

async function main(): Promise<void> {
  const expected = renderEnvExample();
  if (process.argv.includes('--check')) {
    const actual = await readFile(ENV_EXAMPLE_PATH, 'utf8').catch(() => '');
    if (actual !== expected) {
      console.error('worker.env.example is out of date with src/config/settings.ts: run `npm run gen:env`');
      process.exit(1);
    }
    console.log('worker.env.example is up to date');
    return;
  }
  await writeFile(ENV_EXAMPLE_PATH, expected);
  console.log(
    `wrote ${path.relative(process.cwd(), ENV_EXAMPLE_PATH)} (${Object.keys(SETTINGS).length} settings)`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  });
}
