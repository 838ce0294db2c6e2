/**
 * A file named on the command line (`inject mail.eml`, `rules set --ooo-file away.txt`): read whole, with a bound,
 * and when it cannot be read the error names the file and says why in words (not a bare ENOENT).
 */
import { errorMessage } from '../errors.ts';
import { open, type FileHandle } from 'node:fs/promises';

import { UsageError } from './exit.ts';

const REASONS: Record<string, string> = {
  ENOENT: 'no such file',
  ENOTDIR: 'no such file (a part of the path is not a directory)',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'is a directory, not a file',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'the name is too long',
  EMFILE: 'too many open files',
};

export interface InputFileRules {
  /** How the file was given, for the message: `--ooo-file`, or '' for a positional argument. */
  option: string;
  maxBytes: number;
  /** What the file holds, for the size message: `mail`, `text`. */
  what: string;
  /** An empty file is refused unless it may be empty. */
  allowEmpty?: boolean;
}

export async function readInputFile(file: string, rules: InputFileRules): Promise<Buffer> {
  const named = `${rules.option === '' ? '' : `${rules.option} `}${file}`;
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    throw new UsageError(`${named}: ${reasonOf(error)}`);
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) throw new UsageError(`${named}: ${REASONS.EISDIR}`);
    if (stat.size > rules.maxBytes) {
      throw new UsageError(
        `${named} is ${stat.size} bytes: more ${rules.what} than the ${formatBytes(rules.maxBytes)} accepted`,
      );
    }
    const bytes = await handle.readFile();
    if (bytes.length === 0 && rules.allowEmpty !== true) throw new UsageError(`${named} is empty`);
    return bytes;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`${named}: ${reasonOf(error)}`);
  } finally {
    await handle.close();
  }
}

function reasonOf(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined && REASONS[code] !== undefined) return REASONS[code];
  return errorMessage(error);
}

function formatBytes(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${bytes / 1024 / 1024} MiB` : `${bytes / 1024} KiB`;
}
