/**
 * Reading CDK context values (`-c key=value`, or cdk.json's context) into checked strings, lists, flags and numbers.
 * Anything unusable is a {@link StackOptionsError} naming the key: the app prints it as one line and exits 2.
 */
export class StackOptionsError extends Error {
  override readonly name = 'StackOptionsError';
}

/** Reads one context value (`undefined` when unset or empty). */
export type ContextReader = (key: string) => unknown;

export function text(read: ContextReader, key: string): string | undefined {
  const value = read(key);
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string') return value.trim();
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new StackOptionsError(`context ${key}: expected a string, got ${JSON.stringify(value)}`);
}

/** A list from `a,b` (command line) or `["a","b"]` (cdk.json). */
export function list(read: ContextReader, key: string): string[] {
  const value = read(key);
  if (value === undefined || value === null || value === '') return [];
  const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : undefined;
  if (!items || items.some((i) => typeof i !== 'string')) {
    throw new StackOptionsError(
      `context ${key}: expected "a,b" or a list of strings, got ${JSON.stringify(value)}`,
    );
  }
  return (items as string[]).map((i) => i.trim()).filter((i) => i !== '');
}

export function flag(read: ContextReader, key: string, fallback: boolean): boolean {
  const value = text(read, key);
  if (value === undefined) return fallback;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new StackOptionsError(`context ${key}: expected true or false, got ${JSON.stringify(value)}`);
}

export function integer(
  read: ContextReader,
  key: string,
  fallback: string,
  min: number,
  max: number,
): number {
  const value = text(read, key) ?? fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw new StackOptionsError(
      `context ${key}: expected a whole number ${min}..${max}, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

export function checked(value: string, pattern: RegExp, what: string): string {
  if (!pattern.test(value)) throw new StackOptionsError(`${what}: ${JSON.stringify(value)} is not valid`);
  return value;
}

export function template(read: ContextReader, key: string, fallback: string): string {
  const value = text(read, key) ?? fallback;
  if (!value.includes('{domain}')) {
    throw new StackOptionsError(`context ${key}: ${JSON.stringify(value)} must contain {domain}`);
  }
  return value;
}

/** A name whose feature the value `none` (any case) switches off, as the daemon reads its settings. */
export function optionalName(read: ContextReader, key: string, fallback: string): string | undefined {
  const value = text(read, key) ?? fallback;
  return value.toLowerCase() === 'none' ? undefined : value;
}
