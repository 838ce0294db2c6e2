/** The checklist as people read it (one line per check, the fix under it) and as `--json` prints it. */
import type { Config } from '../../config/config.ts';
import type { Output } from '../output.ts';
import { plural } from '../output.ts';
import type { CheckResult, CheckStatus } from './check.ts';

const MARK: Record<CheckStatus, string> = { ok: '[ok]  ', warn: '[warn]', fail: '[FAIL]', skip: '[skip]' };

export function printChecks(out: Output, config: Config, checks: readonly CheckResult[]): void {
  const count = (status: CheckStatus) => checks.filter((c) => c.status === status).length;
  const failed = count('fail');
  const warnings = count('warn');
  const skipped = count('skip');
  out.result({ domains: config.domains, ok: failed === 0, failed, warnings, skipped, checks });
  out.line(`doctor for ${config.domains.join(', ')}`);
  const width = Math.max(...checks.map((c) => c.check.length));
  for (const c of checks) {
    out.line(`${MARK[c.status]} ${c.check.padEnd(width)}  ${c.detail}`);
    if (c.fix && (c.status === 'fail' || c.status === 'warn'))
      out.line(`       ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  const rest = [plural(warnings, 'warning'), ...(skipped > 0 ? [`${skipped} skipped`] : [])].join(', ');
  out.line(
    failed === 0
      ? `All ${checks.length - skipped} checks passed${warnings > 0 || skipped > 0 ? ` (${rest})` : ''}.`
      : `${plural(failed, 'check')} failed, ${rest}.`,
  );
}
