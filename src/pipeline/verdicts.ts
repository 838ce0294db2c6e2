import type { SesVerdicts } from './notification.ts';

/**
 * SES's spam/virus/SPF/DKIM/DMARC verdicts as headers on the delivered copy, so Dovecot Sieve can file spam.
 * They are prepended as new fields; the original bytes follow unchanged. Any copies of these headers already in
 * the mail came from outside and cannot be trusted, so a Sieve rule should look at the first occurrence (ours).
 */
export function verdictHeaders(verdicts: SesVerdicts, eol: string, before?: Buffer): Buffer {
  const lines = verdictFields(verdicts).map(([name, value]) => `${name}: ${value}`);
  // A mail whose first line starts with whitespace would fold into our last header: end our block there.
  const guard = before !== undefined && (before[0] === 0x20 || before[0] === 0x09) ? eol : '';
  return Buffer.from(lines.map((l) => l + eol).join('') + guard, 'ascii');
}

/** The verdict fields as name and value, in the order they go on a copy. */
export function verdictFields(verdicts: SesVerdicts): Array<[name: string, value: string]> {
  return [
    ['X-SES-Spam-Verdict', verdicts.spam],
    ['X-SES-Virus-Verdict', verdicts.virus],
    ['X-SES-SPF-Verdict', verdicts.spf],
    ['X-SES-DKIM-Verdict', verdicts.dkim],
    ['X-SES-DMARC-Verdict', verdicts.dmarc],
  ];
}

export function detectEol(raw: Buffer): '\r\n' | '\n' {
  const lf = raw.indexOf(0x0a);
  return lf > 0 && raw[lf - 1] === 0x0d ? '\r\n' : lf < 0 ? '\r\n' : '\n';
}
