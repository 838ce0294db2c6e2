/**
 * The option parsers every operator command shares: lists, whole numbers, durations and points in time. Each
 * returns the value or throws a UsageError that names the option, shows what was typed and says what it expects.
 */
import { UsageError } from './exit.ts';

/** Splits `a,b , c` (and repeated options) into trimmed, non-empty items. */
export function listOption(values: string | readonly string[] | undefined): string[] {
  const all = values === undefined ? [] : typeof values === 'string' ? [values] : values;
  return all
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** For commander: a repeatable option collecting its values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export interface IntegerRange {
  min: number;
  max?: number;
}

/** A whole number within `range`; `undefined` in, `fallback` out. */
export function parseInteger(
  option: string,
  text: string | undefined,
  range: IntegerRange,
  fallback: number,
): number;
export function parseInteger(
  option: string,
  text: string | undefined,
  range: IntegerRange,
): number | undefined;
export function parseInteger(
  option: string,
  text: string | undefined,
  range: IntegerRange,
  fallback?: number,
): number | undefined {
  if (text === undefined) return fallback;
  const value = /^\s*\d{1,15}\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < range.min || (range.max !== undefined && value > range.max)) {
    const bounds = range.max === undefined ? `${range.min} or more` : `${range.min}..${range.max}`;
    throw new UsageError(`${option} ${JSON.stringify(text)}: expected a whole number, ${bounds}`);
  }
  return value;
}

const DURATION_UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** A duration in seconds: `90`, `90s`, `5m`, `2h`, `1d`, within `1..maxSeconds`. */
export function parseDuration(
  option: string,
  text: string | undefined,
  maxSeconds: number,
): number | undefined {
  if (text === undefined) return undefined;
  const match = /^\s*(\d{1,9})\s*([smhd]?)\s*$/.exec(text);
  const seconds = match ? Number(match[1]) * (DURATION_UNIT_SECONDS[match[2] || 's'] ?? 1) : Number.NaN;
  if (!(Number.isSafeInteger(seconds) && seconds >= 1 && seconds <= maxSeconds)) {
    throw new UsageError(
      `${option} ${JSON.stringify(text)}: expected a duration of 1 s to ${maxSeconds} s, as 90, 90s, 5m or 2h`,
    );
  }
  return seconds;
}

const AGO_UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Epoch ms of `2026-11-27`, `2026-11-27T10:00Z` (ISO 8601, UTC unless an offset is given), or `90m`/`6h`/`2d` ago. */
export function parseTime(option: string, text: string, now: number): number {
  const relative = /^(\d{1,6})([mhd])$/.exec(text);
  if (relative) return now - Number(relative[1]) * (AGO_UNIT_MS[relative[2] ?? 'd'] ?? 0);
  const iso = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(
    text,
  );
  const date = /^\d{4}-\d{2}-\d{2}$/.test(text)
    ? `${text}T00:00:00Z`
    : /[Zz]|[+-]\d{2}:?\d{2}$/.test(text)
      ? text
      : `${text}Z`;
  const ms = iso ? Date.parse(date.replace(' ', 'T')) : Number.NaN;
  if (!Number.isFinite(ms)) {
    throw new UsageError(
      `${option} ${JSON.stringify(text)}: expected 2026-11-27, 2026-11-27T10:00Z, or 90m, 6h, 2d`,
    );
  }
  return ms;
}

/** One of `choices`, case-insensitive. */
export function parseChoice<T extends string>(option: string, text: string, choices: readonly T[]): T {
  const value = text.trim().toLowerCase();
  const found = choices.find((c) => c === value);
  if (found === undefined) {
    throw new UsageError(`${option} ${JSON.stringify(text)}: expected one of ${choices.join(', ')}`);
  }
  return found;
}
