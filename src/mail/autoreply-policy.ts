/**
 * Decides whether an incoming message may get an out-of-office auto-reply (RFC 3834, RFC 5230 as Dovecot
 * Pigeonhole implements it), and where it goes. Pure: every fact that needs I/O or configuration (SES bounce
 * detection, loop marker verification, the recipient's aliases, SES's verdicts) is passed in by the caller.
 *
 * The reply goes to the envelope sender (RFC 3834 §4: the Return-Path, which SES reports as `mail.source`), as
 * Pigeonhole's `vacation` does; From, Sender and Reply-To only lend it a display name when they name that very
 * address. The envelope sender is also the address SES checked SPF for, while anyone can write any From.
 *
 * Checks run in a fixed order and the first one that fires is the reason reported, so metrics and logs are
 * stable for a given message. The order goes from the strongest evidence to the weakest:
 *
 *  1. `loop-marker`            — we generated or forwarded this mail ourselves.
 *  2. `ses-bounce`             — an SES DSN (flag from the caller, or envelope/From is SES's MAILER-DAEMON).
 *  3. `empty-sender`           — null or missing return path: RFC 3834 §2 and RFC 5230 §4.6 forbid a response.
 *  4. `unusable-sender`        — an envelope sender we cannot put in a header (not a plain ASCII dot-atom address).
 *  5. `auto-submitted`         — the sender declared the message automatic (RFC 3834 §5).
 *  6. `suppress-header`        — Microsoft's X-Auto-Response-Suppress asks for no OOF/any auto-response.
 *  7. `precedence`             — bulk/list/junk, the pre-RFC 3834 convention still used by bulk mailers.
 *  8. `list-header`            — any List-* header (RFC 2369/2919): mailing list traffic.
 *  9. `system-sender`          — the envelope sender is a daemon, list manager or no-reply address.
 * 10. `self`                   — the envelope sender is the recipient (or one of its aliases).
 * 11. `not-addressed`          — (requireAddressed only) the recipient is not named in To/Cc (RFC 5230 §4.5):
 *                                Bcc'd copies and list expansions should not answer.
 * 12. `unauthenticated-sender` — (requireAuthenticated only) a reply to an outside address SES did not
 *                                authenticate: SPF PASS for the envelope sender's domain when it is the reply's
 *                                domain, or DMARC PASS for the From domain when it is the reply's domain. DKIM PASS
 *                                alone never counts: SES does not say which domain signed.
 */
import type { MailAddress, MailView } from './mail-view.ts';
import { SES_MAILER_DAEMON } from './constants.ts';

export type SuppressReason =
  | 'loop-marker'
  | 'ses-bounce'
  | 'empty-sender'
  | 'unusable-sender'
  | 'auto-submitted'
  | 'suppress-header'
  | 'precedence'
  | 'list-header'
  | 'system-sender'
  | 'self'
  | 'not-addressed'
  | 'unauthenticated-sender';

/** Every reason, in the order the checks run (for tests, metrics and the docs). */
export const SUPPRESS_REASONS: readonly SuppressReason[] = [
  'loop-marker',
  'ses-bounce',
  'empty-sender',
  'unusable-sender',
  'auto-submitted',
  'suppress-header',
  'precedence',
  'list-header',
  'system-sender',
  'self',
  'not-addressed',
  'unauthenticated-sender',
];

/** SES's SPF and DMARC verdicts for the mail (receipt.spfVerdict, receipt.dmarcVerdict). */
export interface SenderAuthentication {
  spf: string;
  dmarc: string;
}

export interface AutoReplyInput {
  view: MailView;
  /**
   * SMTP MAIL FROM as SES reported it; '' or '<>' for the null sender. Angle brackets are tolerated. An envelope
   * sender the notification gave but that was not usable is passed as given (it is then `unusable-sender`).
   */
  envelopeSender: string;
  /** The mailbox the rule belongs to. */
  recipient: string;
  /** Further addresses of the same mailbox, counted as "addressed" and as "self". */
  recipientAliases?: readonly string[];
  isSesBounce: boolean;
  /** True only when a valid (verified) loop marker is present; the caller owns verification. */
  hasLoopMarker: boolean;
  requireAddressed: boolean;
  /**
   * When set, a reply to an address outside `hostedDomains` goes only where SES authenticated it (no backscatter
   * to forged senders). Replies inside the hosted domains go through our own mail server and need nothing.
   */
  requireAuthenticated?: { verdicts: SenderAuthentication; hostedDomains: readonly string[] };
}

export type AutoReplyDecision = { reply: true; to: MailAddress } | { reply: false; reason: SuppressReason };

export function autoReplyDecision(input: AutoReplyInput): AutoReplyDecision {
  const { view } = input;
  const envelope = stripAngles(input.envelopeSender).toLowerCase();
  const selfAddresses = new Set(
    [input.recipient, ...(input.recipientAliases ?? [])].map(comparableAddress).filter((a) => a !== ''),
  );

  if (input.hasLoopMarker) return no('loop-marker');
  if (
    input.isSesBounce ||
    envelope === SES_MAILER_DAEMON ||
    view.from?.address.toLowerCase() === SES_MAILER_DAEMON
  ) {
    return no('ses-bounce');
  }
  if (envelope === '') return no('empty-sender');
  if (!isValidAddress(envelope)) return no('unusable-sender');
  if (isAutoSubmitted(view.headers)) return no('auto-submitted');
  if (hasSuppressHeader(view.headers)) return no('suppress-header');
  if (hasBulkPrecedence(view.headers)) return no('precedence');
  if (hasListHeader(view.headers)) return no('list-header');
  if (isSystemAddress(envelope)) return no('system-sender');
  if (selfAddresses.has(comparableAddress(envelope))) return no('self');
  if (input.requireAddressed && !isAddressed(view, selfAddresses)) return no('not-addressed');
  // The reply goes to the envelope sender (RFC 3834 §4), never to From or Reply-To.
  const target = envelope;
  const auth = input.requireAuthenticated;
  if (auth && !isHosted(target, auth.hostedDomains) && !authenticated(target, envelope, view, auth.verdicts))
    return no('unauthenticated-sender');
  return { reply: true, to: { address: target, name: displayNameFor(target, view) } };
}

function no(reason: SuppressReason): AutoReplyDecision {
  return { reply: false, reason };
}

/** The display name of the From (else Sender) header when it names the reply's address; '' otherwise. */
function displayNameFor(address: string, view: MailView): string {
  for (const header of [view.from, view.sender])
    if (header !== undefined && header.address.trim().toLowerCase() === address) return header.name;
  return '';
}

function isHosted(address: string, hostedDomains: readonly string[]): boolean {
  return hostedDomains.includes(domainPart(address));
}

/**
 * Whether SES vouched for the reply's domain: SPF judges the envelope sender's domain, DMARC the From domain, and a
 * PASS counts only for the domain it judged.
 */
function authenticated(
  target: string,
  envelope: string,
  view: MailView,
  verdicts: SenderAuthentication,
): boolean {
  const domain = domainPart(target);
  if (verdicts.spf === 'PASS' && domainPart(envelope) === domain) return true;
  const fromDomain = view.from ? domainPart(view.from.address) : '';
  return verdicts.dmarc === 'PASS' && fromDomain === domain;
}

function domainPart(address: string): string {
  const a = address.trim().toLowerCase();
  const at = a.lastIndexOf('@');
  return at < 0 ? '' : a.slice(at + 1);
}

// --- header checks -------------------------------------------------------------------------------------

function headerValues(headers: ReadonlyMap<string, readonly string[]>, name: string): readonly string[] {
  return headers.get(name) ?? [];
}

/** `Auto-Submitted: no` is the only value that allows a reply; a malformed/empty value counts as automatic. */
function isAutoSubmitted(headers: ReadonlyMap<string, readonly string[]>): boolean {
  return headerValues(headers, 'auto-submitted').some((v) => firstToken(v) !== 'no');
}

function hasBulkPrecedence(headers: ReadonlyMap<string, readonly string[]>): boolean {
  return headerValues(headers, 'precedence').some((v) => BULK_PRECEDENCE.has(firstToken(v)));
}
const BULK_PRECEDENCE = new Set(['bulk', 'list', 'junk']);

function hasSuppressHeader(headers: ReadonlyMap<string, readonly string[]>): boolean {
  return headerValues(headers, 'x-auto-response-suppress').some((v) =>
    stripComments(v)
      .split(',')
      .some((t) => {
        const token = t.trim().toLowerCase();
        return token === 'all' || token === 'oof';
      }),
  );
}

/** RFC 2369 defines six List-* fields and RFC 2919 List-Id, but newer ones keep appearing: match the prefix. */
function hasListHeader(headers: ReadonlyMap<string, readonly string[]>): boolean {
  for (const name of headers.keys()) if (name.toLowerCase().startsWith('list-')) return true;
  return false;
}

/** Lower-cased first token of a structured value: comments dropped, parameters after `;` ignored. */
function firstToken(value: string): string {
  return (stripComments(value).split(';')[0] ?? '').trim().toLowerCase();
}

/** Removes RFC 5322 comments, nested ones and quoted-pairs included; an unclosed comment runs to the end. */
function stripComments(value: string): string {
  let out = '';
  let depth = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (depth > 0 && c === '\\') {
      i++;
      continue;
    }
    if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (depth === 0) out += c;
  }
  return out;
}

// --- addresses -----------------------------------------------------------------------------------------

function isAddressed(view: MailView, selfAddresses: ReadonlySet<string>): boolean {
  return [...view.to, ...view.cc].some((a) => selfAddresses.has(comparableAddress(a.address)));
}

/**
 * System local parts, compared case-insensitively after dropping a `+tag`:
 * - exact: `mailer-daemon`, `postmaster`, `listserv`, `majordomo` (Pigeonhole's list plus RFC 5321's
 *   postmaster), and `bounce`/`bounces`;
 * - `*-request`, `owner-*` (Pigeonhole), `*-bounces` (Mailman's return path), `bounce-*`/`bounces-*` (VERP);
 * - no-reply styles: a local part that is, or starts with and is followed by `-`, `.` or `_`, one of
 *   `noreply`, `no-reply`, `no_reply`, `donotreply`, `do-not-reply`, `do_not_reply` (so `noreply-billing`).
 * `notifications`, `alerts`, `info`, `*-owner` and similar role names are deliberately NOT here: humans
 * stand behind some of them (`product-owner@`), and the services behind the others mark their mail with
 * Auto-Submitted/Precedence/List-* anyway.
 */
export function isSystemAddress(address: string): boolean {
  const local = baseLocalPart(address);
  if (local === '') return false;
  if (SYSTEM_LOCAL_PARTS.has(local)) return true;
  if (local.endsWith('-request') || local.endsWith('-bounces')) return true;
  if (local.startsWith('owner-') || local.startsWith('bounce-') || local.startsWith('bounces-')) return true;
  return NO_REPLY_PREFIXES.some(
    (p) => local === p || (local.startsWith(p) && NO_REPLY_SEPARATORS.has(local[p.length] ?? '')),
  );
}
const SYSTEM_LOCAL_PARTS = new Set([
  'mailer-daemon',
  'postmaster',
  'listserv',
  'majordomo',
  'bounce',
  'bounces',
]);
const NO_REPLY_PREFIXES = ['noreply', 'no-reply', 'no_reply', 'donotreply', 'do-not-reply', 'do_not_reply'];
const NO_REPLY_SEPARATORS = new Set(['-', '.', '_']);

/** Lower-cased local part without `+tag`; a bare word without `@` (e.g. `MAILER-DAEMON`) is all local part. */
function baseLocalPart(address: string): string {
  const a = stripAngles(address).toLowerCase();
  const at = a.lastIndexOf('@');
  return stripTag(at < 0 ? a : a.slice(0, at));
}

/** Form used for "same mailbox" comparisons: lower-cased, `+tag` dropped. */
export function comparableAddress(address: string): string {
  const a = stripAngles(address).toLowerCase();
  const at = a.lastIndexOf('@');
  if (at <= 0) return a;
  return `${stripTag(a.slice(0, at))}@${a.slice(at + 1)}`;
}

/** `+tag` subaddress is dropped unless nothing would remain (`+foo@x` is then kept as is). */
function stripTag(local: string): string {
  const plus = local.indexOf('+');
  return plus > 0 ? local.slice(0, plus) : local;
}

function stripAngles(address: string): string {
  const a = address.trim();
  return a.startsWith('<') && a.endsWith('>') ? a.slice(1, -1).trim() : a;
}

/**
 * The addresses we are willing to put in a header: an ASCII dot-atom local part (quoted local parts and
 * SMTPUTF8 are refused rather than risk mis-quoting) and a dotted domain of LDH or non-ASCII (IDN) labels,
 * at most 254 octets (RFC 5321 path limit). Whitespace, controls, `<>`, `,`, `;`, `:` and quotes can never
 * pass, which is what makes the value safe in a From/To header.
 */
export function isValidAddress(address: string): boolean {
  if (address.length === 0 || Buffer.byteLength(address, 'utf8') > 254) return false;
  if (!VALID_ADDRESS.test(address)) return false;
  const at = address.lastIndexOf('@');
  // RFC 5321 §4.5.3.1: local part ≤ 64 octets; RFC 1035: label ≤ 63 octets.
  return (
    at <= 64 &&
    address
      .slice(at + 1)
      .split('.')
      .every((label) => label.length <= 63)
  );
}
const ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
// Non-ASCII labels are limited to the BMP without surrogates: enough for real IDNs, nothing exotic.
const LABEL_CHAR = 'A-Za-z0-9\\u0080-\\uD7FF\\uE000-\\uFFFF';
const LABEL = `(?:[${LABEL_CHAR}](?:[${LABEL_CHAR}-]*[${LABEL_CHAR}])?)`;
const VALID_ADDRESS = new RegExp(`^${ATEXT}(?:\\.${ATEXT})*@${LABEL}(?:\\.${LABEL})+$`, 'u');
