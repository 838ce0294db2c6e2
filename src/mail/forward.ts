/**
 * Forwarding rewrite, after the widely used aws-lambda-ses-forwarder: SES only sends from verified identities
 * and receivers check SPF/DKIM/DMARC against `From`, so the forwarded copy must come from our own address while
 * the original sender stays reachable through `Reply-To`. Only header fields change; the body bytes are the
 * sender's own.
 *
 * Differences from the original project: the display name is quoted or RFC 2047-encoded instead of pasted,
 * continuation lines of every removed field go too (multi-line DKIM-Signature), the Message-ID is replaced (SES
 * rejects duplicates and the old one belongs to the sender's domain), and a loop marker is added.
 */
import { randomUUID } from 'node:crypto';
import libmime from 'libmime';
import addressparser from 'nodemailer/lib/addressparser';
import { WorkerError } from '../errors.ts';
import {
  editHeaders,
  getHeader,
  isPlainAddress,
  rawValueToText,
  headerSafeText,
  serializeMessage,
  splitMessage,
} from './header-block.ts';

export const DEFAULT_SUBJECT_PREFIX = 'FWD: ';

export interface ForwardOptions {
  /** An address of our own domain SES can send from, e.g. the original recipient. */
  forwardingAddress: string;
  originalRecipient: string;
  domain: string;
  /** Default `'FWD: '` (see DEFAULT_SUBJECT_PREFIX). */
  subjectPrefix: string;
  /**
   * Every incoming marker is removed; `carried` (our own still-valid markers of earlier hops, see
   * LoopMarker.carried) go back in before `value`, ours.
   */
  loopMarker: { name: string; value: string; carried?: readonly string[] };
  messageIdDomain: string;
  /** Used for the `Date` field when the original has none (RFC 5322 requires one and SES may refuse mail without). */
  now: Date;
  /**
   * Fields that say what the worker judged (SES's verdicts on mail forwarded tagged): any field of these names in the
   * mail is removed (whoever sent it could have written one) and ours go first.
   */
  verdictFields?: ReadonlyArray<readonly [name: string, value: string]>;
}

export interface MailboxText {
  /** Decoded display name, control characters removed ('' when absent). */
  name: string;
  /** addr-spec as written ('' when none could be found). */
  address: string;
}

/** Headers that would be false or harmful on the forwarded copy; SES signs it anew. */
const REMOVED_ON_FORWARD = [
  'Return-Path',
  'Sender',
  'DKIM-Signature',
  'Delivered-To',
  'X-Original-From',
  'X-Original-To',
  'X-Original-Message-ID',
];

/** Informational copies of header values are capped so one hostile field cannot push a line past 998. */
const MAX_INFO_VALUE = 900;
const MAX_DISPLAY_NAME = 100;
/** addressparser is linear, but nothing legitimate needs more than this to find the first mailbox. */
const MAX_ADDRESS_INPUT = 16 * 1024;

const DOMAIN = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;

function assertAddress(address: string, setting: string): void {
  if (!isPlainAddress(address)) {
    throw new WorkerError(
      'HEADER_INJECTION',
      `${setting} is not a plain address: ${JSON.stringify(address)}`,
      {
        temporary: false,
      },
    );
  }
}

function assertDomain(domain: string, setting: string): void {
  if (!DOMAIN.test(domain)) {
    throw new WorkerError('HEADER_INJECTION', `${setting} is not a domain name: ${JSON.stringify(domain)}`, {
      temporary: false,
    });
  }
}

function mailboxes(rawValue: string): MailboxText[] {
  const text = rawValueToText(rawValue).slice(0, MAX_ADDRESS_INPUT);
  return addressparser(text, { flatten: true }).map((m) => ({
    name: headerSafeText(libmime.decodeWords(m.name), MAX_DISPLAY_NAME),
    address: m.address.trim(),
  }));
}

/** First mailbox with a usable address; failing that, the first display name found. Never throws. */
export function firstMailbox(rawValue: string | undefined): MailboxText {
  if (rawValue === undefined) return { name: '', address: '' };
  const all = mailboxes(rawValue);
  const usable = all.find((m) => isPlainAddress(m.address));
  if (usable !== undefined) return usable;
  return { name: all.map((m) => m.name).find((n) => n !== '') ?? '', address: '' };
}

/**
 * Printable ASCII goes in a quoted-string (safe for any specials); anything else becomes encoded-words, which
 * libmime Q-encodes with the restricted phrase alphabet of RFC 2047 §5(3) and splits into words of ≤ 75 chars.
 */
export function encodeDisplayName(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name)) return `"${name.replace(/[\\"]/g, '\\$&')}"`;
  return libmime.encodeWord(name, 'Q', 52);
}

export function formatMailbox(name: string, address: string): string {
  return name === '' ? `<${address}>` : `${encodeDisplayName(name)} <${address}>`;
}

/**
 * Rebuilt from the parsed mailboxes rather than copied: hostile or broken fields ("Foo <a@b> Extra route-addr",
 * raw 8-bit, stray CR) would otherwise be carried into a header we vouch for. Undefined when the field holds no
 * usable address, so the caller can leave `Reply-To` out.
 */
function replyToFrom(rawValue: string | undefined): string | undefined {
  if (rawValue === undefined) return undefined;
  const usable = mailboxes(rawValue).filter((m) => isPlainAddress(m.address));
  if (usable.length === 0) return undefined;
  return usable.map((m) => formatMailbox(m.name, m.address)).join(', ');
}

/**
 * Decoded text that is plain ASCII stays as it is; otherwise it is encoded. Text that merely looks like an
 * encoded-word (`=?`) must be encoded too, or a reader would decode what the sender wrote literally.
 */
function encodeUnstructured(text: string): string {
  const plain = /^[\t\x20-\x7e]*$/.test(text);
  if (plain && !text.includes('=?')) return text;
  return text.includes('=?') ? libmime.encodeWord(text, 'Q', 52) : libmime.encodeWords(text, 'Q', 52);
}

function forwardedSubject(rawValue: string | undefined, prefix: string): string {
  const original = rawValue ?? '';
  // Encoded-words can carry CR/LF; decoded, they must not reach the new field.
  const text = libmime.decodeWords(rawValueToText(original)).replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ' ');
  const marker = prefix.trim().toLowerCase();
  const alreadyPrefixed = marker === '' || text.trimStart().toLowerCase().startsWith(marker);
  // A plain ASCII subject keeps its exact original spelling; only decoded ones are re-encoded.
  const plainOriginal = /^[\t\x20-\x7e]*$/.test(original) && !original.includes('=?');
  if (plainOriginal) return alreadyPrefixed ? original : `${prefix}${original}`;
  return encodeUnstructured(alreadyPrefixed ? text : `${prefix}${text}`);
}

/** RFC 5322 date-time in UTC; `toUTCString` ends in the obsolete zone name "GMT", which must not be generated. */
export function rfc5322Date(now: Date): string {
  return now.toUTCString().replace(/GMT$/, '+0000');
}

export function rewriteForForward(raw: Buffer, opts: ForwardOptions): Buffer {
  assertAddress(opts.forwardingAddress, 'forwardingAddress');
  assertAddress(opts.originalRecipient, 'originalRecipient');
  assertDomain(opts.domain, 'domain');
  assertDomain(opts.messageIdDomain, 'messageIdDomain');

  const msg = splitMessage(raw);
  const fromValue = getHeader(msg, 'From');
  const sender = firstMailbox(fromValue);
  const shownSender = sender.name || sender.address || 'unknown sender';
  const from = formatMailbox(`${shownSender} via ${opts.domain}`, opts.forwardingAddress);
  const replyTo = replyToFrom(getHeader(msg, 'Reply-To')) ?? replyToFrom(fromValue);
  const oldMessageId = getHeader(msg, 'Message-ID');

  const set: Array<[string, string]> = [
    ['From', from],
    ['Subject', forwardedSubject(getHeader(msg, 'Subject'), opts.subjectPrefix)],
    ['Message-ID', `<${randomUUID()}@${opts.messageIdDomain}>`],
  ];
  const verdictFields = opts.verdictFields ?? [];
  const remove = [...REMOVED_ON_FORWARD, opts.loopMarker.name, ...verdictFields.map(([name]) => name)];
  if (replyTo === undefined) remove.push('Reply-To');
  else set.push(['Reply-To', replyTo]);

  const append: Array<[string, string]> = [];
  if (getHeader(msg, 'Date') === undefined) append.push(['Date', rfc5322Date(opts.now)]);
  const originalFrom = headerSafeText(rawValueToText(fromValue ?? ''), MAX_INFO_VALUE);
  if (originalFrom !== '') append.push(['X-Original-From', originalFrom]);
  append.push(['X-Original-To', opts.originalRecipient]);
  const originalMessageId = headerSafeText(rawValueToText(oldMessageId ?? ''), MAX_INFO_VALUE);
  if (originalMessageId !== '') append.push(['X-Original-Message-ID', originalMessageId]);
  for (const earlier of opts.loopMarker.carried ?? []) append.push([opts.loopMarker.name, earlier]);
  append.push([opts.loopMarker.name, opts.loopMarker.value]);

  return serializeMessage(editHeaders(msg, { remove, set, append, prepend: verdictFields }));
}
