/**
 * What a running `npm run local` stack leaves in its mail directory so other processes can reach it: a state file
 * (for `npm run local:send`) and the daemon's settings as an env file (for `node --env-file=local-mail/local-stack.env
 * dist/unified-worker.js <command>`). Kept apart from local-stack.ts so readers do not load the emulators.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { SETTINGS } from '../src/config/settings.ts';

/** Name of the state file inside the mail directory. */
export const STATE_FILE = '.local-stack.json';
/** The stack's settings as an env file, inside the mail directory. */
export const ENV_FILE = 'local-stack.env';
/** Default mail directory, relative to the current directory. */
export const DEFAULT_MAIL_DIR = 'local-mail';

export interface LocalStackState {
  pid: number;
  startedAt: string;
  domains: string[];
  mailDir: string;
  /** The settings the daemon runs with (the same as in {@link ENV_FILE}). */
  env: Record<string, string>;
  endpoints: { sqs: string; s3: string; dynamodb: string; ses: string };
  smtp: { mailboxPort: number; internalPort: number; lmtpPort: number };
  healthUrl: string;
  readyUrl: string;
  metricsUrl: string;
}

export function stateFilePath(mailDir: string): string {
  return path.join(mailDir, STATE_FILE);
}

export function envFilePath(mailDir: string): string {
  return path.join(mailDir, ENV_FILE);
}

/** The settings of `env` worth giving a command: the worker's own, and the dummy AWS credentials. */
export function renderEnvFile(env: Readonly<Record<string, string>>): string {
  const names = Object.keys(env)
    .filter((name) => name in SETTINGS || name === 'AWS_ACCESS_KEY_ID' || name === 'AWS_SECRET_ACCESS_KEY')
    .sort();
  const lines = [
    '# Written by `npm run local` while it runs; removed when it stops. Use it with:',
    '#   node --env-file=local-mail/local-stack.env dist/unified-worker.js doctor',
  ];
  for (const name of names) {
    const value = env[name] ?? '';
    // Node's --env-file reads double-quoted values literally; none of the stack's values has a quote or newline.
    if (!/["\n\r]/.test(value)) lines.push(`${name}="${value}"`);
  }
  return `${lines.join('\n')}\n`;
}

export async function writeStateFiles(state: LocalStackState): Promise<void> {
  await writeFile(envFilePath(state.mailDir), renderEnvFile(state.env));
  await writeFile(stateFilePath(state.mailDir), `${JSON.stringify(state, null, 2)}\n`);
}

export async function removeStateFiles(mailDir: string): Promise<void> {
  await rm(stateFilePath(mailDir), { force: true });
  await rm(envFilePath(mailDir), { force: true });
}

/** Reads the state file of a running stack, or explains why there is none. */
export async function readState(mailDir: string): Promise<LocalStackState> {
  const file = stateFilePath(mailDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new Error(`no local stack found (${file} is missing): start one with \`npm run local\` first`);
  }
  const state = JSON.parse(text) as LocalStackState;
  try {
    process.kill(state.pid, 0);
  } catch {
    throw new Error(
      `the local stack that wrote ${file} (pid ${state.pid}) is not running: start it with \`npm run local\``,
    );
  }
  return state;
}
