/**
 * The trace headers SES puts on top of every mail it stores: `Return-Path` (the envelope sender), `Received`,
 * `X-SES-Spam-Verdict`, `X-SES-Virus-Verdict` and `Authentication-Results: amazonses.com; spf=…; dkim=…;
 * dmarc=…`. `inject` writes them as SES would; `replay` reads them back, because the S3 object is all that is
 * left of a mail whose notification is gone. SES prepends, so the first occurrence is SES's own; copies further
 * down came with the mail and are not trusted.
 */
import { splitMessage, type SplitMessage } from '../mail/header-block.ts';
import type { SesVerdictStatus } from './ses-notification.ts';

export type VerdictName = 'spam' | 'virus' | 'spf' | 'dkim' | 'dmarc';
export type Verdicts = Record<VerdictName, SesVerdictStatus>;

export const VERDICT_NAMES: readonly VerdictName[] = ['spam', 'virus', 'spf', 'dkim', 'dmarc'];
export const VERDICT_VALUES: readonly SesVerdictStatus[] = [
  'PASS',
  'FAIL',
  'GRAY',
  'PROCESSING_FAILED',
  'DISABLED',
];

export interface TraceInput {
  sesMessageId: string;
  /** Envelope sender; '' for a null sender. */
  source: string;
  recipients: readonly string[];
  verdicts: Verdicts;
  region: string;
  timestamp: Date;
}

const AUTH_RESULT: Record<SesVerdictStatus, string | undefined> = {
  PASS: 'pass',
  FAIL: 'fail',
  GRAY: 'none',
  PROCESSING_FAILED: 'temperror',
  DISABLED: undefined,
};

/** True when the mail already starts with SES's trace (a file downloaded from an SES bucket). */
export function hasSesTrace(raw: Buffer): boolean {
  const names = splitMessage(raw).fields.map((f) => f.name.toLowerCase());
  return names.includes('x-ses-receipt') || names.includes('x-ses-spam-verdict');
}

/** The header block SES would put on top of `raw`, in `raw`'s line ending. */
export function sesTraceHeaders(input: TraceInput, eol: '\r\n' | '\n'): Buffer {
  const date = input.timestamp.toUTCString().replace('GMT', '+0000 (UTC)');
  const { verdicts } = input;
  const lines = [
    `Return-Path: <${input.source}>`,
    `Received: from unified-worker-inject by inbound-smtp.${input.region}.amazonaws.com with SMTP id ${input.sesMessageId}`,
    ...(input.recipients[0] !== undefined ? [` for ${input.recipients[0]};`] : []),
    ` ${date}`,
    ...(verdicts.spam !== 'DISABLED' ? [`X-SES-Spam-Verdict: ${verdicts.spam}`] : []),
    ...(verdicts.virus !== 'DISABLED' ? [`X-SES-Virus-Verdict: ${verdicts.virus}`] : []),
  ];
  const methods = (['spf', 'dkim', 'dmarc'] as const).flatMap((name) => {
    const result = AUTH_RESULT[verdicts[name]];
    return result === undefined ? [] : [`${name}=${result}`];
  });
  if (methods.length > 0)
    lines.push(`Authentication-Results: amazonses.com;`, ...methods.map((m) => ` ${m};`));
  return Buffer.from(lines.map((line) => `${line}${eol}`).join(''), 'latin1');
}

/** What SES recorded about the mail, read from its trace headers; DISABLED where SES wrote nothing. */
export interface StoredTrace {
  /** From Return-Path; undefined when the mail has none. */
  source?: string;
  verdicts: Verdicts;
}

export function readSesTrace(raw: Buffer): StoredTrace {
  const message: SplitMessage = splitMessage(raw);
  const first = (name: string): string | undefined =>
    message.fields.find((f) => f.name.toLowerCase() === name)?.value.trim();
  const status = (value: string | undefined): SesVerdictStatus => {
    const upper = value?.toUpperCase();
    return VERDICT_VALUES.includes(upper as SesVerdictStatus) ? (upper as SesVerdictStatus) : 'DISABLED';
  };
  const auth = message.fields
    .filter((f) => f.name.toLowerCase() === 'authentication-results')
    .map((f) => f.value.trim())
    .find((value) => /^amazonses\.com\s*;/i.test(value));
  const method = (name: 'spf' | 'dkim' | 'dmarc'): SesVerdictStatus => {
    const result =
      auth === undefined ? undefined : new RegExp(`(?:^|[;\\s])${name}=([a-z]+)`, 'i').exec(auth)?.[1];
    return authStatus(result?.toLowerCase());
  };
  const returnPath = first('return-path');
  const source =
    returnPath === undefined ? undefined : (/<([^<>]*)>/.exec(returnPath)?.[1] ?? returnPath).trim();
  return {
    ...(source !== undefined && { source }),
    verdicts: {
      spam: status(first('x-ses-spam-verdict')),
      virus: status(first('x-ses-virus-verdict')),
      spf: method('spf'),
      dkim: method('dkim'),
      dmarc: method('dmarc'),
    },
  };
}

/** RFC 8601 results as SES verdicts: pass and fail map through, errors are PROCESSING_FAILED, the rest GRAY. */
function authStatus(result: string | undefined): SesVerdictStatus {
  if (result === undefined) return 'DISABLED';
  if (result === 'pass') return 'PASS';
  if (result === 'fail' || result === 'hardfail') return 'FAIL';
  if (result === 'temperror' || result === 'permerror') return 'PROCESSING_FAILED';
  return 'GRAY';
}

/** `spam=FAIL` → ['spam', 'FAIL'], or undefined when it is not a verdict. */
export function parseVerdictOption(text: string): [VerdictName, SesVerdictStatus] | undefined {
  const [name = '', value = ''] = text.split('=').map((s) => s.trim());
  const key = name.toLowerCase() as VerdictName;
  const status = value.toUpperCase() as SesVerdictStatus;
  return VERDICT_NAMES.includes(key) && VERDICT_VALUES.includes(status) ? [key, status] : undefined;
}

export function allPass(): Verdicts {
  return { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
}
