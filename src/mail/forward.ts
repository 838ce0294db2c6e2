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
import { headerParsers } from './header-parsers.ts';
import { WorkerError } from '../errors.ts';
import { MAIL_LIMITS } from './mail-limits.ts';
import {
  editHeaders,
  firstHeaders,
  isPlainAddress,
  rawValueToText,
  headerSafeText,
  serializeMessage,
  splitMessage,
  type HeaderEdits,
  type SplitMessage,
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
const MAX_ADDRESS_INPUT = MAIL_LIMITS.mailboxFieldBytes;
/** Characters of a Subject that needs decoding that are decoded and re-encoded (a plain one is kept whole). */
const MAX_DECODED_SUBJECT = MAIL_LIMITS.subjectChars;

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
  return headerParsers.mailboxes(text).map((m) => ({
    name: headerSafeText(headerParsers.decodeWords(m.name), MAX_DISPLAY_NAME),
    address: m.address.trim(),
  }));
}

/** First mailbox with a usable address; failing that, the first display name found. Never throws. */
export function firstMailbox(rawValue: string | undefined): MailboxText {
  return rawValue === undefined ? { name: '', address: '' } : firstOf(mailboxes(rawValue));
}

function firstOf(all: readonly MailboxText[]): MailboxText {
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
function replyToFrom(boxes: readonly MailboxText[] | undefined): string | undefined {
  if (boxes === undefined) return undefined;
  const usable = boxes.filter((m) => isPlainAddress(m.address));
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

/**
 * The Subject edit. A plain ASCII subject keeps its exact original bytes (spelling and folding), at most gaining the
 * prefix; only decoded ones are re-encoded.
 */
function subjectEdit(rawValue: string | undefined, prefix: string): Pick<HeaderEdits, 'set' | 'prefix'> {
  const original = rawValue ?? '';
  const marker = prefix.trim().toLowerCase();
  const plainOriginal = /^[\t\x20-\x7e]*$/.test(original) && !original.includes('=?');
  if (plainOriginal && rawValue !== undefined && /^[\x20-\x7e]*$/.test(prefix)) {
    const alreadyPrefixed = marker === '' || original.trimStart().toLowerCase().startsWith(marker);
    return { prefix: ['Subject', alreadyPrefixed ? '' : prefix] };
  }
  return { set: [['Subject', forwardedSubject(original, prefix)]] };
}

function forwardedSubject(original: string, prefix: string): string {
  const marker = prefix.trim().toLowerCase();
  const plainOriginal = /^[\t\x20-\x7e]*$/.test(original) && !original.includes('=?');
  if (plainOriginal) {
    const alreadyPrefixed = marker === '' || original.trimStart().toLowerCase().startsWith(marker);
    return alreadyPrefixed ? original : `${prefix}${original}`;
  }
  // Encoded-words can carry CR/LF; decoded, they must not reach the new field. Decoding is the costly part of a
  // hostile subject of a megabyte of encoded words, and no real subject comes near the cut.
  const text = headerParsers
    .decodeWords(rawValueToText(original.slice(0, MAX_DECODED_SUBJECT)))
    .replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ' ');
  const alreadyPrefixed = marker === '' || text.trimStart().toLowerCase().startsWith(marker);
  return encodeUnstructured(alreadyPrefixed ? text : `${prefix}${text}`);
}

/** RFC 5322 date-time in UTC; `toUTCString` ends in the obsolete zone name "GMT", which must not be generated. */
export function rfc5322Date(now: Date): string {
  return now.toUTCString().replace(/GMT$/, '+0000');
}

export function rewriteForForward(raw: Buffer, opts: ForwardOptions): Buffer {
  return rewriteSplitForForward(splitMessage(raw), opts);
}

/** rewriteForForward of a mail already split (the pipeline splits each mail once, whatever its forwards). */
export function rewriteSplitForForward(msg: SplitMessage, opts: ForwardOptions): Buffer {
  assertAddress(opts.forwardingAddress, 'forwardingAddress');
  assertAddress(opts.originalRecipient, 'originalRecipient');
  assertDomain(opts.domain, 'domain');
  assertDomain(opts.messageIdDomain, 'messageIdDomain');

  const found = firstHeaders(msg, ['from', 'reply-to', 'message-id', 'subject', 'date']);
  const fromValue = found.from;
  // Parsed once: the From gives the shown sender and, without a usable Reply-To, the Reply-To.
  const fromBoxes = fromValue === undefined ? undefined : mailboxes(fromValue);
  const sender = fromBoxes === undefined ? { name: '', address: '' } : firstOf(fromBoxes);
  const shownSender = sender.name || sender.address || 'unknown sender';
  const from = formatMailbox(`${shownSender} via ${opts.domain}`, opts.forwardingAddress);
  const replyToValue = found['reply-to'];
  const replyTo =
    replyToFrom(replyToValue === undefined ? undefined : mailboxes(replyToValue)) ?? replyToFrom(fromBoxes);
  const oldMessageId = found['message-id'];

  const subject = subjectEdit(found.subject, opts.subjectPrefix);
  const set: Array<readonly [string, string]> = [
    ['From', from],
    ...(subject.set ?? []),
    ['Message-ID', `<${randomUUID()}@${opts.messageIdDomain}>`],
  ];
  const verdictFields = opts.verdictFields ?? [];
  const remove = [...REMOVED_ON_FORWARD, opts.loopMarker.name, ...verdictFields.map(([name]) => name)];
  if (replyTo === undefined) remove.push('Reply-To');
  else set.push(['Reply-To', replyTo]);

  const append: Array<[string, string]> = [];
  if (found.date === undefined) append.push(['Date', rfc5322Date(opts.now)]);
  const originalFrom = headerSafeText(rawValueToText(fromValue ?? ''), MAX_INFO_VALUE);
  if (originalFrom !== '') append.push(['X-Original-From', originalFrom]);
  append.push(['X-Original-To', opts.originalRecipient]);
  const originalMessageId = headerSafeText(rawValueToText(oldMessageId ?? ''), MAX_INFO_VALUE);
  if (originalMessageId !== '') append.push(['X-Original-Message-ID', originalMessageId]);
  for (const earlier of opts.loopMarker.carried ?? []) append.push([opts.loopMarker.name, earlier]);
  append.push([opts.loopMarker.name, opts.loopMarker.value]);

  const edits: HeaderEdits = { remove, set, append, prepend: verdictFields };
  return serializeMessage(editHeaders(msg, subject.prefix ? { ...edits, prefix: subject.prefix } : edits));
}
