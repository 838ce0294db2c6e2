/**
 * Byte-preserving header editing. Delivery and forwarding must hand on the sender's exact bytes (signatures,
 * odd encodings and 8-bit bodies survive only that way), so this module never re-encodes anything it did not
 * create: fields it leaves alone are re-emitted from their original bytes and the body is never looked at.
 *
 * The scanner works on bytes with `indexOf` and single-pass loops only — no regular expression ever runs over
 * a whole line — so a hostile 5 MB header line or thousands of continuation lines cost linear time.
 */
import { Buffer, isUtf8 } from 'node:buffer';
import libmime from 'libmime';
import { WorkerError } from '../errors.ts';
import { MAIL_LIMITS } from './mail-limits.ts';

export interface HeaderField {
  readonly name: string;
  /** `name` lower-cased, once: every lookup by name compares this. */
  readonly key: string;
  /** unfolded value, latin1-decoded bytes, leading WSP removed */
  readonly value: string;
  /** exact original bytes of the field including continuation lines and its line ending */
  readonly raw: Buffer;
}

export interface SplitMessage {
  readonly fields: readonly HeaderField[];
  /** bytes from the blank separator line on, untouched */
  readonly rest: Buffer;
  readonly eol: '\r\n' | '\n';
  /**
   * Set when the header block went past a bound: `fields` holds the fields before it and `rest` everything from
   * there on (so serializing still gives the input back), but the header is incomplete and must not be edited.
   */
  readonly truncated?: 'header-fields' | 'header-bytes';
}

/** Bounds of one scan; the defaults are MAIL_LIMITS, so a hostile block of millions of fields costs nothing. */
export interface SplitLimits {
  maxFields?: number;
  maxBytes?: number;
}

export interface HeaderEdits {
  /** Every field with one of these names (case-insensitive) is dropped. Applied first. */
  remove?: readonly string[];
  /** Replaces the first field of that name in place and drops later ones; appended when absent. */
  set?: ReadonlyArray<readonly [name: string, value: string]>;
  /** Inserted before all fields, in the given order. */
  prepend?: ReadonlyArray<readonly [name: string, value: string]>;
  /** Added after all fields, in the given order. */
  append?: ReadonlyArray<readonly [name: string, value: string]>;
  /**
   * Printable ASCII put in front of the value of the first field of that name, whose bytes (folding included) are
   * otherwise kept; later fields of the name are dropped, and the field is appended when absent. Cheaper and truer
   * than `set` for a long plain value that only gains a prefix (a forwarded Subject).
   */
  prefix?: readonly [name: string, text: string];
}

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;

/** RFC 5322 soft limit; folding aims for it where whitespace allows. */
const SOFT_LINE_LIMIT = 78;
/**
 * libmime's `maxLength` bounds the encoded text of each word; 52 keeps `=?UTF-8?Q?...?=` well inside the
 * 75-character limit of RFC 2047 so every word can sit on its own folded line.
 */
const ENCODED_WORD_CHUNK = 52;

function isWsp(byte: number | undefined): boolean {
  return byte === SP || byte === HT;
}

/** RFC 5322 ftext: printable US-ASCII except the colon. */
function isFtext(code: number): boolean {
  return code >= 33 && code <= 126 && code !== COLON;
}

function lineEndAt(raw: Buffer, from: number): number {
  const lf = raw.indexOf(LF, from);
  return lf === -1 ? raw.length : lf;
}

/**
 * Returns `[nameEnd, colon]` when the line at `start` opens a header field, otherwise undefined. Whitespace
 * between name and colon is the obsolete syntax of RFC 5322 §4.5.3 that real mail still carries.
 */
function fieldNameBounds(raw: Buffer, start: number, lineEnd: number): [number, number] | undefined {
  let i = start;
  while (i < lineEnd && isFtext(raw[i] as number)) i++;
  if (i === start) return undefined;
  const nameEnd = i;
  while (i < lineEnd && isWsp(raw[i])) i++;
  return i < lineEnd && raw[i] === COLON ? [nameEnd, i] : undefined;
}

/**
 * Unfolding removes only the line breaks (RFC 5322 §2.2.3); the whitespace that follows them stays. A field without
 * one is a single decode; one with line breaks is copied byte by byte once, so a field folded into 100,000 one-byte
 * lines costs what a single line of its size costs.
 */
function unfoldValue(raw: Buffer, start: number, end: number): string {
  let stop = end;
  if (stop > start && raw[stop - 1] === LF) stop--;
  if (stop > start && raw[stop - 1] === CR) stop--;
  let from = start;
  while (from < stop && isWsp(raw[from])) from++;
  const firstLf = raw.indexOf(LF, from);
  if (firstLf === -1 || firstLf >= stop) return raw.toString('latin1', from, stop);
  const out = Buffer.allocUnsafe(stop - from);
  let n = 0;
  for (let i = from; i < stop; i++) {
    const byte = raw[i] as number;
    if (byte !== LF) out[n++] = byte;
    else if (i > from && raw[i - 1] === CR) n--;
  }
  return out.toString('latin1', 0, n);
}

/**
 * The field's name and unfolded value. A field of one line (nearly all of them) is decoded in one call and sliced:
 * a block of 10,000 short fields is 10,000 decodes, not 20,000.
 */
function decodeField(
  raw: Buffer,
  start: number,
  [nameEnd, colon]: [number, number],
  lineEnd: number,
  end: number,
): { name: string; value: string } {
  if (end > lineEnd + 1) {
    return { name: raw.toString('latin1', start, nameEnd), value: unfoldValue(raw, colon + 1, end) };
  }
  let stop = lineEnd;
  if (stop > colon && raw[stop - 1] === CR) stop--;
  let from = colon + 1;
  while (from < stop && isWsp(raw[from])) from++;
  const text = raw.toString('latin1', start, stop);
  return { name: text.slice(0, nameEnd - start), value: text.slice(from - start) };
}

/**
 * Headers end at the first empty line, or at the first line that is not a header field (a message that starts
 * with such a line is all body). A message without a blank line is all headers; `rest` is then empty. The scan
 * stops at `limits` (see SplitMessage.truncated) before it materialises a field past them.
 */
export function splitMessage(raw: Buffer, limits: SplitLimits = {}): SplitMessage {
  const maxFields = limits.maxFields ?? MAIL_LIMITS.headerFields;
  const maxBytes = limits.maxBytes ?? MAIL_LIMITS.headerBytes;
  const firstLf = raw.indexOf(LF);
  const eol: '\r\n' | '\n' = firstLf > 0 && raw[firstLf - 1] === CR ? '\r\n' : firstLf === -1 ? '\r\n' : '\n';
  const fields: HeaderField[] = [];
  let truncated: SplitMessage['truncated'];
  let pos = 0;
  while (pos < raw.length) {
    const first = raw[pos];
    if (first === LF || (first === CR && raw[pos + 1] === LF)) break;
    const lineEnd = lineEndAt(raw, pos);
    const bounds = fieldNameBounds(raw, pos, lineEnd);
    if (bounds === undefined) break;
    if (fields.length >= maxFields) {
      truncated = 'header-fields';
      break;
    }
    const end = fieldEnd(raw, lineEnd, maxBytes);
    if (end > maxBytes) {
      truncated = 'header-bytes';
      break;
    }
    const { name, value } = decodeField(raw, pos, bounds, lineEnd, end);
    fields.push({ name, key: name.toLowerCase(), value, raw: raw.subarray(pos, end) });
    pos = end;
  }
  return { fields, rest: raw.subarray(pos), eol, ...(truncated && { truncated }) };
}

/** End of the field whose first line ends at `lineEnd`: after its continuation lines, or just past `maxBytes`. */
function fieldEnd(raw: Buffer, lineEnd: number, maxBytes: number): number {
  let end = lineEnd < raw.length ? lineEnd + 1 : raw.length;
  while (end < raw.length && end <= maxBytes && isWsp(raw[end])) {
    const contEnd = lineEndAt(raw, end);
    end = contEnd < raw.length ? contEnd + 1 : raw.length;
  }
  return end;
}

export function getHeader(msg: SplitMessage, name: string): string | undefined {
  const wanted = name.toLowerCase();
  return msg.fields.find((f) => f.key === wanted)?.value;
}

/**
 * The first value of each of `names` (lower-case), in one pass over the fields: a block of 10,000 fields is read
 * once, not once per name.
 */
export function firstHeaders<N extends string>(
  msg: SplitMessage,
  names: readonly N[],
): Partial<Record<N, string>> {
  const wanted = new Set<string>(names);
  const found: Partial<Record<N, string>> = {};
  for (const field of msg.fields) {
    if (wanted.has(field.key) && found[field.key as N] === undefined) found[field.key as N] = field.value;
  }
  return found;
}

export function getHeaders(msg: SplitMessage, name: string): string[] {
  const wanted = name.toLowerCase();
  return msg.fields.filter((f) => f.key === wanted).map((f) => f.value);
}

/**
 * Header values are latin1-decoded so every byte round-trips; senders that put raw UTF-8 in headers
 * (RFC 6532) get it back as text here. Invalid UTF-8 stays latin1, which is at least lossless.
 */
export function rawValueToText(value: string): string {
  const bytes = Buffer.from(value, 'latin1');
  return isUtf8(bytes) ? bytes.toString('utf8') : value;
}

/**
 * Deliberately narrower than RFC 5321 (no quoted local parts, no whitespace, no specials): whatever passes can
 * go between angle brackets in a header without any quoting and cannot smuggle a second address in.
 */
const ADDR_SPEC = /^[^\s<>()[\]\\,;:"@\x00-\x1f\x7f]+@[^\s<>()[\]\\,;:"@\x00-\x1f\x7f]+$/u;

export function isPlainAddress(address: string): boolean {
  return address.length <= 320 && ADDR_SPEC.test(address);
}

/**
 * One header-safe line from text a hostile message or table may hold: every control character (CR, LF, NUL, TAB,
 * DEL, C1) becomes a space, runs of spaces one, and a cut (on code points, never inside a surrogate pair) ends in
 * an ellipsis.
 */
export function headerSafeText(text: string, maxChars: number): string {
  const line = text
    .replace(/[\x00-\x1f\x7f-\x9f]+/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();
  return truncate(line, maxChars);
}

/** Cuts to `maxChars` code points, never inside a surrogate pair; a cut ends in an ellipsis. */
export function truncate(value: string, maxChars: number): string {
  if (value.length <= maxChars) return value;
  // The first maxChars code points lie within the first 2 * maxChars UTF-16 units: never spread a whole megabyte.
  const points = Array.from(value.slice(0, 2 * maxChars + 1));
  return points.length <= maxChars ? value : `${points.slice(0, Math.max(0, maxChars - 1)).join('')}…`;
}

function describe(value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
}

/**
 * A CR, LF or NUL in a value would let whoever controls it start a new header (or end the header block), e.g.
 * inject `Bcc:`; a name outside ftext would produce a line other parsers read differently. Both are refused.
 */
export function assertSafeHeaderValue(name: string, value: string): void {
  if (typeof name !== 'string' || name.length === 0) {
    throw new WorkerError('HEADER_INJECTION', 'header name is empty', { temporary: false });
  }
  for (let i = 0; i < name.length; i++) {
    if (!isFtext(name.charCodeAt(i))) {
      throw new WorkerError('HEADER_INJECTION', `invalid header name ${describe(name)}`, {
        temporary: false,
      });
    }
  }
  if (typeof value !== 'string') {
    throw new WorkerError('HEADER_INJECTION', `header ${name} has no string value`, { temporary: false });
  }
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === CR || c === LF || c === 0) {
      throw new WorkerError('HEADER_INJECTION', `header ${name} contains CR, LF or NUL: ${describe(value)}`, {
        temporary: false,
      });
    }
  }
}

function isAscii(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * Greedy folding before whitespace. A break needs non-whitespace before it (no line may be blank, or it would
 * end the header block) and after it. When no break keeps a line within 78 the first possible one is taken, so
 * lines only exceed 998 octets when a single token is that long.
 */
function foldLine(line: string, firstBreakable: number, eol: string): string {
  if (line.length <= SOFT_LINE_LIMIT) return line;
  let lastContent = line.length - 1;
  while (lastContent >= 0 && isWsp(line.charCodeAt(lastContent))) lastContent--;
  const out: string[] = [];
  let start = 0;
  let best = -1;
  for (let i = firstBreakable; i < lastContent; i++) {
    if (!isWsp(line.charCodeAt(i)) || isWsp(line.charCodeAt(i - 1))) continue;
    if (i - start <= SOFT_LINE_LIMIT) {
      best = i;
      continue;
    }
    if (best > start) {
      out.push(line.slice(start, best));
      start = best;
    }
    if (i - start <= SOFT_LINE_LIMIT) {
      best = i;
    } else {
      out.push(line.slice(start, i));
      start = i;
      best = -1;
    }
  }
  if (line.length - start > SOFT_LINE_LIMIT && best > start) {
    out.push(line.slice(start, best));
    start = best;
  }
  out.push(line.slice(start));
  return out.join(eol);
}

/** Builds a new field: validated, RFC 2047-encoded when not ASCII, folded, terminated with the message's eol. */
function buildField(name: string, value: string, eol: string): HeaderField {
  assertSafeHeaderValue(name, value);
  const encoded = isAscii(value) ? value : libmime.encodeWords(value, 'Q', ENCODED_WORD_CHUNK);
  const line = `${name}: ${encoded}`;
  const folded = foldLine(line, name.length + 2, eol);
  let lead = 0;
  while (lead < encoded.length && isWsp(encoded.charCodeAt(lead))) lead++;
  return {
    name,
    key: name.toLowerCase(),
    value: encoded.slice(lead),
    raw: Buffer.from(folded + eol, 'latin1'),
  };
}

function endsWithLf(raw: Buffer): boolean {
  return raw.length > 0 && raw[raw.length - 1] === LF;
}

export function editHeaders(msg: SplitMessage, edits: HeaderEdits): SplitMessage {
  if (msg.truncated) {
    // Fields past the bound would survive a removal and duplicate a field we set (two From, two Message-ID).
    throw new WorkerError('MAIL_LIMIT', `header block past its bound (${msg.truncated}): not edited`, {
      temporary: false,
    });
  }
  // Build (and so validate) every new field before touching anything: a refused value must not leave a
  // half-edited message behind.
  const setFields = (edits.set ?? []).map(([n, v]) => buildField(n, v, msg.eol));
  const prependFields = (edits.prepend ?? []).map(([n, v]) => buildField(n, v, msg.eol));
  const appendFields = (edits.append ?? []).map(([n, v]) => buildField(n, v, msg.eol));

  // One pass over the fields, each name lower-cased once: a block of 10,000 fields is as cheap to edit as to read.
  const removed = new Set((edits.remove ?? []).map((n) => n.toLowerCase()));
  const setByName = new Map(setFields.map((f) => [f.key, f]));
  const prefix = edits.prefix && prefixEdit(edits.prefix, msg.eol);
  if (prefix) setByName.set(prefix.name, prefix.absent);
  const placed = new Set<string>();
  const kept: HeaderField[] = [];
  for (const field of msg.fields) {
    const name = field.key;
    if (removed.has(name)) continue;
    const replacement = prefix?.name === name ? prefix.apply(field) : setByName.get(name);
    if (replacement === undefined) kept.push(field);
    else if (!placed.has(name)) {
      kept.push(replacement);
      placed.add(name);
    }
  }
  for (const [name, field] of setByName) if (!placed.has(name)) kept.push(field);
  const fields = [...prependFields, ...kept, ...appendFields];

  // Only the very last field of a headers-only message can lack its line ending; once anything follows it,
  // it needs one or the next field would be glued onto its value.
  const mustTerminate = fields.length - (msg.rest.length > 0 ? 0 : 1);
  for (let i = 0; i < mustTerminate; i++) {
    const f = fields[i] as HeaderField;
    if (!endsWithLf(f.raw)) fields[i] = { ...f, raw: Buffer.concat([f.raw, Buffer.from(msg.eol, 'latin1')]) };
  }
  // Content that starts with whitespace would read as a continuation of the last field we put before it;
  // an empty line keeps it out of the header block.
  const first = msg.rest[0];
  const rest =
    fields.length > 0 && (first === 0x20 || first === 0x09)
      ? Buffer.concat([Buffer.from(msg.eol, 'latin1'), msg.rest])
      : msg.rest;
  return { fields, rest, eol: msg.eol };
}

/** The `prefix` edit: what the first field of the name becomes, and the field added when there is none. */
function prefixEdit(
  [fieldName, text]: readonly [string, string],
  eol: string,
): { name: string; apply: (field: HeaderField) => HeaderField; absent: HeaderField } {
  assertSafeHeaderValue(fieldName, text);
  if (!/^[\x20-\x7e]*$/.test(text)) {
    throw new WorkerError(
      'HEADER_INJECTION',
      `prefix of ${fieldName} is not printable ASCII: ${describe(text)}`,
      {
        temporary: false,
      },
    );
  }
  const apply = (field: HeaderField): HeaderField => {
    let at = field.raw.indexOf(COLON) + 1;
    while (isWsp(field.raw[at])) at++;
    const raw = Buffer.concat([
      field.raw.subarray(0, at),
      Buffer.from(text, 'latin1'),
      field.raw.subarray(at),
    ]);
    return { name: field.name, key: field.key, value: `${text}${field.value}`, raw };
  };
  return { name: fieldName.toLowerCase(), apply, absent: buildField(fieldName, text, eol) };
}

export function serializeMessage(msg: SplitMessage): Buffer {
  return Buffer.concat([...msg.fields.map((f) => f.raw), msg.rest]);
}
