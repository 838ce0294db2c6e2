/**
 * Envelope addresses (RCPT TO, MAIL FROM) taken from a notification, checked before any SMTP command is built
 * from them: RFC 5321 §4.1.2 mailbox syntax (with RFC 6531 UTF-8) and the §4.5.3.1 length limits. Nothing that
 * passes can carry a control character, CR, LF, space, `<` or `>`, so it cannot shape a second command or end the
 * path early.
 *
 * A quoted local part is unquoted when it needs no quotes (`"x.y"@d` is `x.y@d`, RFC 5321 §4.1.2): nodemailer sends
 * it so and the mail server's reply names it so, and a refusal must be matched back to the recipient it is about.
 * One that needs its quotes (`"a,b"@d`) is refused as unusable: no docker-mailserver mailbox has such a name, and
 * what the client sends and the server answers for it is not an address we could match reliably.
 */

/** RFC 5321 §4.5.3.1.1–3, in octets; the path's 256 include the angle brackets. */
const MAX_LOCAL_PART = 64;
const MAX_DOMAIN = 255;
const MAX_MAILBOX = 254;

// RFC 5321 atext plus UTF-8 (RFC 6531); controls, spaces, separators and format characters (bidi overrides) never.
const UTF8 = '[^\\x00-\\x7f\\p{Cc}\\p{Cf}\\p{Z}]';
const ATOM = `(?:[A-Za-z0-9!#$%&'*+/=?^_\`{|}~-]|${UTF8})+`;
const DOT_STRING = `${ATOM}(?:\\.${ATOM})*`;
const LET_DIG = `(?:[A-Za-z0-9]|${UTF8})`;
const LABEL = `${LET_DIG}(?:(?:[A-Za-z0-9-]|${UTF8})*${LET_DIG})?`;
const ADDRESS_LITERAL = '\\[(?:\\d{1,3}(?:\\.\\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]{2,45})\\]';
const LOCAL_PART_RE = new RegExp(`^${DOT_STRING}$`, 'u');
const QUOTED_DOT_STRING_RE = new RegExp(`^"(${DOT_STRING})"@`, 'u');
const DOMAIN_RE = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*|${ADDRESS_LITERAL})$`, 'u');
const FORBIDDEN = /[\p{Cc}\p{Cf}\s<>]/u;

/** Why an envelope address cannot be used, or undefined when it can. */
export function envelopeAddressProblem(address: string): string | undefined {
  if (address === '') return 'empty';
  if (FORBIDDEN.test(address)) return 'contains a control character, whitespace, < or >';
  if (Buffer.byteLength(address, 'utf8') > MAX_MAILBOX) return `longer than ${MAX_MAILBOX} octets`;
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return 'not local-part@domain';
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (Buffer.byteLength(local, 'utf8') > MAX_LOCAL_PART)
    return `local part longer than ${MAX_LOCAL_PART} octets`;
  if (Buffer.byteLength(domain, 'utf8') > MAX_DOMAIN) return `domain longer than ${MAX_DOMAIN} octets`;
  if (local.startsWith('"'))
    return "a quoted local part that needs its quotes (the mail server's reply could not be matched back to it)";
  if (!LOCAL_PART_RE.test(local)) return 'local part is not an RFC 5321 dot-string';
  if (!DOMAIN_RE.test(domain)) return 'domain is not an RFC 5321 domain or address literal';
  if (domain.split('.').some((label) => Buffer.byteLength(label, 'utf8') > 63))
    return 'a domain label is over 63 octets';
  return undefined;
}

/** `"x.y"@d` as `x.y@d` (the same mailbox); any other address as given. */
export function normalizeEnvelopeAddress(address: string): string {
  const quoted = QUOTED_DOT_STRING_RE.exec(address);
  return quoted ? `${quoted[1]}${address.slice(quoted[0].length - 1)}` : address;
}

/** The domain part of an address, lower-cased; '' when there is none. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}
