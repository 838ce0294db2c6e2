/**
 * What the operator commands accept as an address or a blocklist pattern. The daemon looks rules up by the
 * lower-cased envelope recipient and hands forward targets to SMTP and SES as they are stored, so only a plain
 * mailbox (`local@domain`, no display name, no quotes, no comments, nothing that could end a header or an SMTP
 * command) is written to the tables.
 */
import { isDomainName } from '../config/config.ts';
import { FNMATCH_MAX_LENGTH } from '../mail/fnmatch.ts';
import { UsageError } from './command.ts';

// RFC 5321 dot-atom local part: atext characters, dots only between them.
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

/** RFC 5321: 64 octets of local part, 254 for the whole address. */
const MAX_LOCAL = 64;
const MAX_ADDRESS = 254;

/** The address, trimmed and lower-cased, or a UsageError that says what is wrong with it. */
export function parseMailbox(input: string, what = 'address'): string {
  const shown = JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}…` : input);
  if (/[\r\n\0]/.test(input)) throw new UsageError(`${what} ${shown} contains a line break or NUL`);
  const address = input.trim().toLowerCase();
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) {
    throw new UsageError(`${what} ${shown} is not a mailbox (expected local@domain)`);
  }
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (address.length > MAX_ADDRESS)
    throw new UsageError(`${what} ${shown} is over ${MAX_ADDRESS} characters`);
  if (local.length > MAX_LOCAL || !LOCAL_PART.test(local)) {
    throw new UsageError(
      `${what} ${shown}: "${local}" is not a plain local part (letters, digits, . and !#$%&'*+/=?^_\`{|}~-)`,
    );
  }
  if (!isDomainName(domain)) throw new UsageError(`${what} ${shown}: "${domain}" is not a domain name`);
  return address;
}

export function domainPart(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

/** Longest pattern accepted: an address is at most 254 characters, wildcards included this leaves room. */
export const MAX_PATTERN_LENGTH = 256;

/**
 * A blocklist pattern, lower-cased (the daemon matches case-insensitively, so the stored form is canonical).
 * fnmatch syntax: `*`, `?`, `[a-z]`, `[!x]`; no whitespace, control characters or angle brackets, which no
 * sender address contains.
 */
export function parsePattern(input: string): string {
  const shown = JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}…` : input);
  if (/[\r\n\0]/.test(input)) throw new UsageError(`pattern ${shown} contains a line break or NUL`);
  const pattern = input.trim().toLowerCase();
  if (pattern === '') throw new UsageError('a pattern must not be empty');
  if (pattern.length > MAX_PATTERN_LENGTH || pattern.length > FNMATCH_MAX_LENGTH) {
    throw new UsageError(`pattern ${shown} is over ${MAX_PATTERN_LENGTH} characters`);
  }
  if (/[\s\p{C}<>"(),;]/u.test(pattern)) {
    throw new UsageError(
      `pattern ${shown} contains whitespace, a control character or one of < > " ( ) , ; (no sender address has them)`,
    );
  }
  return pattern;
}

/** True for a pattern that blocks every sender, which is almost always a mistake. */
export function matchesEverything(pattern: string): boolean {
  return /^[*?]*(@[*?]*)?$/.test(pattern) && pattern.includes('*');
}
