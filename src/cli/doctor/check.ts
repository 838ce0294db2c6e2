/**
 * One line of the doctor's checklist, and the four ways to make one. A failure or a warning always comes with
 * the fix; a skipped check says what it needs first.
 */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  check: string;
  status: CheckStatus;
  detail: string;
  /** What to do about a failure or a warning. */
  fix?: string;
}

export function ok(check: string, detail: string): CheckResult {
  return { check, status: 'ok', detail };
}

export function warn(check: string, detail: string, fix: string): CheckResult {
  return { check, status: 'warn', detail, fix };
}

export function fail(check: string, detail: string, fix: string): CheckResult {
  return { check, status: 'fail', detail, fix };
}

export function skip(check: string, detail: string): CheckResult {
  return { check, status: 'skip', detail };
}
