/**
 * Builds the raw RFC 5322 bytes of an out-of-office reply. Pure apart from the random Message-ID.
 *
 * MailComposer (nodemailer) encodes and folds headers and picks QP/base64 with wrapping; mimetext did none of
 * that safely. MailComposer is still not trusted blindly: it turns CR/LF in a header value into spaces but
 * does not fold long unbroken tokens (a 1200-char subject word stays one 1200-octet line) and passes bare
 * LF/CR through from content. So every value is bounded and cleaned here first, and the output is
 * normalised to CRLF and checked against the 998-octet line limit afterwards.
 *
 * Inputs from the rules table and from the incoming mail are treated alike:
 * - subject, display names, date and body text: control characters replaced, lengths capped;
 * - message ids: dropped unless `<...>` without whitespace/controls and at most 250 octets;
 * - addresses, Message-ID domain and the loop marker: rejected with `HEADER_INJECTION`, because a changed
 *   address or marker would be a different (wrong) value rather than a cleaned one.
 */
import { randomBytes } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import type { MailAddress, MailView } from './mail-view.ts';
import { isValidAddress } from './autoreply-policy.ts';
import { WorkerError } from '../errors.ts';
import { headerSafeText, truncate } from './header-block.ts';

export interface AutoReplyComposeInput {
  /** The mailbox that is away; becomes From. */
  recipient: string;
  recipientName?: string;
  /** Reply target as chosen by `autoReplyDecision`. */
  to: MailAddress;
  original: MailView;
  /** The rule's message, plain text or HTML according to `contentType`. */
  message: string;
  contentType: 'text' | 'html';
  subjectPrefix: string;
  loopMarker: { name: string; value: string };
  messageIdDomain: string;
  now: Date;
  /** Characters of the original text quoted below the message; 0 leaves the quote out. Default 10000. */
  quoteMaxChars?: number;
}

export interface ComposedAutoReply {
  raw: Buffer;
  /** The new Message-ID, angle brackets included. */
  messageId: string;
}

export const DEFAULT_QUOTE_MAX_CHARS = 10_000;
/** Only the tail of a long thread matters for threading; long References headers get mail rejected. */
export const MAX_REFERENCES = 20;
/** Caps chosen so that no header line can reach 998 octets even when a value is one unbroken word. */
const MAX_SUBJECT_CHARS = 250;
const MAX_PREFIX_CHARS = 64;
const MAX_NAME_CHARS = 200;
const MAX_MESSAGE_ID_OCTETS = 250;
const MAX_LOOP_MARKER_NAME = 76;
const MAX_LOOP_MARKER_VALUE = 900;
const MAX_LINE_OCTETS = 998;

/** Headers MailComposer or this module sets itself; a loop marker with one of these names would clash. */
const RESERVED_HEADER_NAMES = new Set([
  'from',
  'sender',
  'to',
  'cc',
  'bcc',
  'reply-to',
  'subject',
  'date',
  'message-id',
  'in-reply-to',
  'references',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-disposition',
  'auto-submitted',
  'precedence',
  'x-auto-response-suppress',
]);

export async function composeAutoReply(input: AutoReplyComposeInput): Promise<ComposedAutoReply> {
  const from = requireAddress('recipient', input.recipient);
  const to = requireAddress('reply target', input.to.address);
  const domain = requireMessageIdDomain(input.messageIdDomain);
  const marker = requireLoopMarker(input.loopMarker);
  if (Number.isNaN(input.now.getTime())) throw new RangeError('composeAutoReply: now is an invalid Date');

  const messageId = `<${randomBytes(16).toString('hex')}@${domain}>`;
  const original = input.original;
  const parentId = validMessageId(original.messageId);
  const references = threadReferences(original, parentId);
  const quoteMax = Math.max(0, Math.floor(input.quoteMaxChars ?? DEFAULT_QUOTE_MAX_CHARS));
  const quote = quoteMax > 0 ? originalText(original, quoteMax) : undefined;
  const attribution = quote === undefined ? '' : attributionLine(original);

  const body =
    input.contentType === 'html'
      ? htmlBody(cleanText(input.message), attribution, quote)
      : { text: textBody(cleanText(input.message), attribution, quote) };

  const composer = new MailComposer({
    from: { name: headerSafeText(input.recipientName ?? '', MAX_NAME_CHARS), address: from },
    to: { name: headerSafeText(input.to.name, MAX_NAME_CHARS), address: to },
    subject: replySubject(input.subjectPrefix, original.subject),
    messageId,
    date: input.now,
    ...(parentId !== undefined && { inReplyTo: parentId }),
    ...(references.length > 0 && { references }),
    headers: [
      { key: 'Auto-Submitted', value: 'auto-replied' },
      { key: 'Precedence', value: 'bulk' },
      { key: 'X-Auto-Response-Suppress', value: 'All' },
      // Prepared: the value was validated as printable ASCII and the loop check compares it byte for byte,
      // so it must not be re-encoded (MailComposer encodes values that merely look like encoded words).
      { key: marker.name, value: { prepared: true, value: marker.value } },
    ],
    ...body,
    // Content is always an in-memory string; never let a value be read as a file path or URL.
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  const built = await composer.compile().build();
  const raw = toCrlf(built);
  assertLineLengths(raw);
  return { raw, messageId };
}

// --- validation --------------------------------------------------------------------------------------

function injection(what: string): WorkerError {
  return new WorkerError('HEADER_INJECTION', `auto-reply: refusing unsafe ${what}`, { temporary: false });
}

function requireAddress(what: string, address: string): string {
  const a = address.trim().toLowerCase();
  if (!isValidAddress(a)) throw injection(`${what} address`);
  return a;
}

function requireMessageIdDomain(domain: string): string {
  if (
    domain.length === 0 ||
    domain.length > 253 ||
    !/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(domain)
  ) {
    throw injection('Message-ID domain');
  }
  return domain;
}

function requireLoopMarker(marker: { name: string; value: string }): { name: string; value: string } {
  // RFC 5322 ftext: printable ASCII except colon.
  if (
    !/^[\x21-\x39\x3b-\x7e]+$/.test(marker.name) ||
    marker.name.length > MAX_LOOP_MARKER_NAME ||
    RESERVED_HEADER_NAMES.has(marker.name.toLowerCase())
  ) {
    throw injection('loop marker name');
  }
  if (
    !/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(marker.value) ||
    marker.value.length > MAX_LOOP_MARKER_VALUE
  ) {
    throw injection('loop marker value');
  }
  return marker;
}

/** `<...>` with printable ASCII only and no whitespace or nested brackets; anything else is dropped. */
function validMessageId(id: string | undefined): string | undefined {
  if (id === undefined) return undefined;
  const trimmed = id.trim();
  if (trimmed.length > MAX_MESSAGE_ID_OCTETS || !/^<[\x21-\x3b\x3d\x3f-\x7e]+>$/.test(trimmed))
    return undefined;
  return trimmed;
}

/**
 * RFC 5322 §3.6.4: the parent's References (or, lacking them, its single In-Reply-To) followed by the
 * parent's Message-ID, de-duplicated and cut to the last MAX_REFERENCES ids.
 */
function threadReferences(original: MailView, parentId: string | undefined): string[] {
  const valid = original.references.map(validMessageId).filter((id): id is string => id !== undefined);
  const inReplyTo = validMessageId(original.inReplyTo);
  const chain = valid.length > 0 ? valid : inReplyTo !== undefined ? [inReplyTo] : [];
  if (parentId !== undefined) chain.push(parentId);
  const seen = new Set<string>();
  const unique: string[] = [];
  // Keep the last occurrence of a duplicate so the parent stays at the end.
  for (let i = chain.length - 1; i >= 0; i--) {
    const id = chain[i] as string;
    if (!seen.has(id)) {
      seen.add(id);
      unique.unshift(id);
    }
  }
  return unique.slice(-MAX_REFERENCES);
}

// --- text cleaning -----------------------------------------------------------------------------------

/** Multi-line body text: newlines normalised to LF, other controls except TAB removed. */
function cleanText(value: string): string {
  return value.replace(/\r\n?/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
}

function firstCodePoints(value: string, count: number): string {
  if (value.length <= count) return value;
  return Array.from(value).slice(0, count).join('');
}

/**
 * Prefix + original subject, not doubling the prefix (`Auto: Auto: …`) when a reply comes back round.
 * An empty subject becomes `(no subject)` so the reply is still recognisable in a mailbox list.
 */
function replySubject(prefixRaw: string, subjectRaw: string): string {
  // The prefix keeps its trailing space: only controls are neutralised, not whitespace trimmed.
  const prefix = truncate(prefixRaw.replace(/[\x00-\x1f\x7f-\x9f]+/g, ' '), MAX_PREFIX_CHARS);
  const subject = headerSafeText(subjectRaw, MAX_SUBJECT_CHARS) || '(no subject)';
  const marker = prefix.trim().toLowerCase();
  if (marker !== '' && subject.toLowerCase().startsWith(marker)) return subject;
  return prefix + subject;
}

// --- bodies ------------------------------------------------------------------------------------------

function attributionLine(original: MailView): string {
  const date = headerSafeText(original.headers.get('date')?.[0] ?? '', 100);
  const from = original.from;
  const name = headerSafeText(from?.name ?? '', MAX_NAME_CHARS);
  const address = headerSafeText(from?.address ?? '', 254);
  const who = address === '' ? 'the sender' : name === '' ? address : `${name} <${address}>`;
  return date === '' ? `${who} wrote:` : `On ${date}, ${who} wrote:`;
}

/**
 * The original's text body, or a crude text rendering of its HTML when it has no text part, cleaned and
 * cut to `maxChars`. Undefined when there is nothing to quote.
 */
function originalText(original: MailView, maxChars: number): string | undefined {
  const source = original.text ?? (original.html !== undefined ? htmlToText(original.html) : '');
  const text = cleanText(source).replace(/\s+$/, '');
  if (text.trim() === '') return undefined;
  const head = firstCodePoints(text, maxChars);
  return head.length === text.length ? text : `${head}\n[…]`;
}

function quoteLines(text: string): string {
  // An empty quoted line is a bare `>`: trailing whitespace gets stripped or flowed by MUAs.
  return text
    .split('\n')
    .map((line) => (line === '' ? '>' : `> ${line}`))
    .join('\n');
}

function textBody(message: string, attribution: string, quote: string | undefined): string {
  const parts = [message.replace(/\s+$/, '')];
  if (quote !== undefined) parts.push(`${attribution}\n${quoteLines(quote)}`);
  return toCrlfString(parts.join('\n\n') + '\n');
}

/**
 * The rule's HTML is the mailbox owner's own content and is used as is. The original is quoted from its
 * text, HTML-escaped, never from its raw HTML (scripts, tracking pixels, broken markup). A text alternative
 * is derived from the rule's HTML so text-only clients and spam filters see the same message.
 */
function htmlBody(
  messageHtml: string,
  attribution: string,
  quote: string | undefined,
): { html: string; text: string } {
  let html = messageHtml;
  if (quote !== undefined) {
    const block =
      `<p>${escapeHtml(attribution)}</p>\n` +
      '<blockquote type="cite" style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">' +
      quote.split('\n').map(escapeHtml).join('<br>\n') +
      '</blockquote>\n';
    const bodyEnd = html.search(/<\/body\s*>/i);
    html = bodyEnd < 0 ? `${html}\n${block}` : html.slice(0, bodyEnd) + block + html.slice(bodyEnd);
  }
  return {
    html: toCrlfString(html),
    text: textBody(cleanText(htmlToText(messageHtml)), attribution, quote),
  };
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);
}
const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/**
 * Crude, linear HTML-to-text: drops tags, comments and script/style/head content, turns block ends and
 * `<br>` into newlines, decodes common entities. Written as a scanner (no backtracking regex over the
 * whole document) because the input is untrusted and may be large.
 */
export function htmlToText(html: string): string {
  const lower = html.toLowerCase();
  let out = '';
  let i = 0;
  while (i < html.length) {
    const lt = html.indexOf('<', i);
    if (lt < 0) {
      out += collapse(html.slice(i));
      break;
    }
    out += collapse(html.slice(i, lt));
    if (lower.startsWith('<!--', lt)) {
      const end = html.indexOf('-->', lt + 4);
      if (end < 0) break;
      i = end + 3;
      continue;
    }
    const gt = html.indexOf('>', lt + 1);
    if (gt < 0) break; // unterminated tag at the end: drop it
    const tag = lower.slice(lt + 1, gt);
    const name = /^\/?([a-z][a-z0-9]*)/.exec(tag)?.[1] ?? '';
    i = gt + 1;
    if (!tag.startsWith('/') && SKIPPED_ELEMENTS.has(name)) {
      const close = lower.indexOf(`</${name}`, i);
      if (close < 0) break;
      const closeEnd = html.indexOf('>', close);
      i = closeEnd < 0 ? html.length : closeEnd + 1;
      continue;
    }
    if (name === 'br' || (tag.startsWith('/') && BLOCK_ELEMENTS.has(name))) out += '\n';
    else if (!tag.startsWith('/') && (name === 'p' || name === 'div' || name === 'li' || name === 'tr')) {
      out += '\n';
    }
  }
  return decodeEntities(out)
    .replace(/[ \t]*\n[ \t]*/g, '\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
const SKIPPED_ELEMENTS = new Set(['script', 'style', 'head', 'title', 'template']);
const BLOCK_ELEMENTS = new Set([
  'p',
  'div',
  'li',
  'tr',
  'table',
  'ul',
  'ol',
  'h1',
  'h2',
  'h3',
  'h4',
  'h5',
  'h6',
  'blockquote',
  'pre',
]);

function collapse(text: string): string {
  return text.replace(/[ \t\r\n\f]+/g, ' ');
}

function decodeEntities(text: string): string {
  return text.replace(/&(#[0-9]{1,7}|#x[0-9a-f]{1,6}|[a-z]{2,8});/gi, (whole, ref: string) => {
    if (ref.startsWith('#')) {
      const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      const valid = code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
      return valid ? String.fromCodePoint(code) : '\uFFFD';
    }
    return NAMED_ENTITIES[ref.toLowerCase()] ?? whole;
  });
}
const NAMED_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: ' ',
  ndash: '–',
  mdash: '—',
  hellip: '…',
  copy: '©',
  reg: '®',
  euro: '€',
};

// --- line endings -----------------------------------------------------------------------------------

function toCrlfString(value: string): string {
  return value.replace(/\r\n|\r|\n/g, '\r\n');
}

/**
 * Byte-level CRLF normalisation. latin1 maps every byte to one char and back, so UTF-8 sequences survive
 * untouched while CR/LF (which never occur inside a multi-byte UTF-8 sequence) are rewritten.
 */
function toCrlf(raw: Buffer): Buffer {
  return Buffer.from(toCrlfString(raw.toString('latin1')), 'latin1');
}

/** An invariant, not input validation: the caps above must make this impossible. */
function assertLineLengths(raw: Buffer): void {
  let start = 0;
  while (start < raw.length) {
    let end = raw.indexOf('\r\n', start, 'latin1');
    if (end < 0) end = raw.length;
    if (end - start > MAX_LINE_OCTETS) {
      throw new Error(`auto-reply: composed line of ${end - start} octets exceeds ${MAX_LINE_OCTETS}`);
    }
    start = end + 2;
  }
}
