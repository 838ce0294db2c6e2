/**
 * What the operator commands accept as an address or a blocklist pattern. The daemon looks rules up by the
 * lower-cased envelope recipient and hands forward targets to SMTP and SES as they are stored, so only a plain
 * mailbox (`local@domain`: no quotes, no comments, nothing that could end a header or an SMTP command) is written
 * to the tables. An address as a mail program shows it, `Bob <bob@example.com>`, is taken for the address inside.
 */
import { isDomainName } from '../config/config.ts';
import { FNMATCH_MAX_LENGTH } from '../mail/fnmatch.ts';
import { MAIL_LIMITS } from '../mail/mail-limits.ts';
import { UsageError } from './exit.ts';

// RFC 5321 dot-atom local part: atext characters, dots only between them.
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

/** RFC 5321: 64 octets of local part, 254 for the whole address. */
const MAX_LOCAL = 64;
const MAX_ADDRESS = MAIL_LIMITS.forwardTargetChars;

/** `Bob <bob@example.com>`, `"Smith, Bob" <bob@example.com>`, `<bob@example.com>`: the part in angle brackets. */
const NAME_ADDR = /^\s*(?:"[^"]*"|[^<>"]*)\s*<([^<>]*)>\s*$/;

/** The address inside `Name <address>`, or undefined when `input` is not of that form. */
export function angleAddress(input: string): string | undefined {
  return NAME_ADDR.exec(input)?.[1];
}

/**
 * The address, trimmed and lower-cased, or a UsageError that says what is wrong with it and what to type. A
 * display name (`Bob <bob@example.com>`) is dropped.
 */
export function parseMailbox(input: string, what = 'address'): string {
  const shown = JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}…` : input);
  if (/[\r\n\0]/.test(input)) throw new UsageError(`${what} ${shown} contains a line break or NUL`);
  const address = (angleAddress(input) ?? input).trim().toLowerCase();
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) {
    throw new UsageError(`${what} ${shown} is not a mailbox: type local@domain, e.g. alice@example.com`);
  }
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (address.length > MAX_ADDRESS)
    throw new UsageError(`${what} ${shown} is over ${MAX_ADDRESS} characters`);
  if (local.length > MAX_LOCAL || !LOCAL_PART.test(local)) {
    throw new UsageError(
      `${what} ${shown}: "${local}" is not a plain local part: type the bare address, local@domain, with only letters, digits, . and !#$%&'*+/=?^_\`{|}~- before the @`,
    );
  }
  if (!isDomainName(domain)) throw new UsageError(`${what} ${shown}: "${domain}" is not a domain name`);
  return address;
}

/** Every address of `--to a@x,b@x --to c@x`, parsed, deduplicated, in order. */
export function parseMailboxes(values: readonly string[], what: string): string[] {
  return [...new Set(values.map((value) => parseMailbox(value, what)))];
}

export function domainPart(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

/** Longest pattern accepted: an address is at most 254 characters, wildcards included this leaves room. */
/** The daemon's bound: a longer pattern is skipped. */
const MAX_PATTERN_LENGTH = MAIL_LIMITS.patternChars;

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
  const inside = angleAddress(input);
  if (inside !== undefined && inside.trim() !== '') {
    throw new UsageError(
      `pattern ${shown} has a display name: type the address only, ${inside.trim().toLowerCase()}`,
    );
  }
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
