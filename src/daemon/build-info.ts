import { readFileSync } from 'node:fs';

/** What `ses_worker_build_info` reports: the package version and the commit the image was built from. */
export interface BuildInfo {
  version: string;
  commit: string;
}

/**
 * The version comes from package.json (two levels up from both src/daemon/ and dist/daemon/, and /app in the image).
 * The commit comes from `build-info.json` beside the compiled code (dist/build-info.json), which the Dockerfile
 * writes from its GIT_COMMIT build argument: the image carries no .git. Anything missing or malformed reads as
 * `unknown`, never as an error: a metric label must not stop the daemon.
 */
export function readBuildInfo(
  packageJson: URL = new URL('../../package.json', import.meta.url),
  buildInfoJson: URL = new URL('../build-info.json', import.meta.url),
): BuildInfo {
  const version = field(packageJson, 'version', /^\d+\.\d+\.\d+[0-9A-Za-z.+-]*$/);
  const commit = field(buildInfoJson, 'commit', /^[0-9a-f]{7,40}$/);
  return { version, commit };
}

function field(file: URL, key: string, valid: RegExp): string {
  try {
    const value = (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>)[key];
    return typeof value === 'string' && valid.test(value) ? value : 'unknown';
  } catch {
    return 'unknown';
  }
}
