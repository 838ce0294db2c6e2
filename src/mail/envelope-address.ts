/**
 * Envelope addresses (RCPT TO, MAIL FROM) taken from a notification, checked before any SMTP command is built
 * from them: RFC 5321 §4.1.2 mailbox syntax (with RFC 6531 UTF-8) and the §4.5.3.1 length limits. Nothing that
 * passes can carry a control character, CR, LF, space, `<` or `>`, so it cannot shape a second command or end the
 * path early.
 */

/** RFC 5321 §4.5.3.1.1–3, in octets; the path's 256 include the angle brackets. */
const MAX_LOCAL_PART = 64;
const MAX_DOMAIN = 255;
const MAX_MAILBOX = 254;

// RFC 5321 atext plus UTF-8 (RFC 6531); controls, spaces, separators and format characters (bidi overrides) never.
const UTF8 = '[^\\x00-\\x7f\\p{Cc}\\p{Cf}\\p{Z}]';
const ATOM = `(?:[A-Za-z0-9!#$%&'*+/=?^_\`{|}~-]|${UTF8})+`;
// A quoted local part without quoted-pairs, spaces or brackets: enough for the rare real one, nothing to escape.
const QUOTED = '"[\\x21\\x23-\\x3b\\x3d\\x3f-\\x5b\\x5d-\\x7e]+"';
const LET_DIG = `(?:[A-Za-z0-9]|${UTF8})`;
const LABEL = `${LET_DIG}(?:(?:[A-Za-z0-9-]|${UTF8})*${LET_DIG})?`;
const ADDRESS_LITERAL = '\\[(?:\\d{1,3}(?:\\.\\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]{2,45})\\]';
const LOCAL_PART_RE = new RegExp(`^(?:${ATOM}(?:\\.${ATOM})*|${QUOTED})$`, 'u');
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
  if (!LOCAL_PART_RE.test(local)) return 'local part is not an RFC 5321 dot-string or quoted string';
  if (!DOMAIN_RE.test(domain)) return 'domain is not an RFC 5321 domain or address literal';
  if (domain.split('.').some((label) => Buffer.byteLength(label, 'utf8') > 63))
    return 'a domain label is over 63 octets';
  return undefined;
}

/** The domain part of an address, lower-cased; '' when there is none. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}
