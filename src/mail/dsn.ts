/**
 * Delivery status notifications (RFC 3464 inside RFC 6522 multipart/report).
 *
 * A small MIME walker over bytes rather than mailparser's `simpleParser`: parsing must be synchronous and must
 * not throw, only three part types matter, and simpleParser would decode and buffer every attachment (a
 * returned full message can be large), hides `message/delivery-status` among attachments, and descends into a
 * returned `message/rfc822` — where a bounced bounce would contribute failed recipients that are not ours. The
 * walker reuses the header scanner of header-block.ts, so hostile structure costs linear time, and it stops at
 * fixed depth and part limits.
 */
import { Buffer } from 'node:buffer';
import libmime from 'libmime';
import { getHeader, getHeaders, isPlainAddress, rawValueToText, splitMessage } from './header-block.ts';
import { MAIL_LIMITS, noteLimit, type MailLimit } from './mail-limits.ts';

export interface DsnInfo {
  /** Lower-cased addresses whose per-recipient block says `Action: failed`, in report order, deduplicated. */
  failedRecipients: string[];
  /** Message-IDs (with angle brackets) of the message that bounced; best candidates first. */
  originalMessageIds: string[];
  /** Host name from `Reporting-MTA: dns; host`. */
  reportingMta?: string;
  /** Bounds the report went past (absent when none): `dsn-ids`, `references`, `mime-depth`, `header-*`. */
  limits?: MailLimit[];
}

const MAX_DEPTH = 8;
const MAX_PARTS = 256;
const MAX_IDS = 50;
const MAX_ID_LENGTH = 998;

interface WalkState {
  failed: Set<string>;
  ids: Set<string>;
  limits: MailLimit[];
  reportingMta?: string;
  parts: number;
  sawReport: boolean;
}

const LF = 0x0a;
const CR = 0x0d;

/** Adds `value` unless the set is full; false when it was full (and the value new), so the caller can note it. */
function addBounded(set: Set<string>, value: string, max: number): boolean {
  if (set.has(value)) return true;
  if (set.size >= max) return false;
  set.add(value);
  return true;
}

function addId(state: WalkState, id: string): void {
  if (!addBounded(state.ids, id, MAIL_LIMITS.dsnIds)) noteLimit(state.limits, 'dsn-ids');
}

/** Angle-bracketed ids in a header value; a lone bare token counts too (some MTAs drop the brackets). */
export function extractMessageIds(value: string): string[] {
  const ids = new Set<string>();
  let pos = 0;
  while (ids.size < MAX_IDS) {
    const open = value.indexOf('<', pos);
    if (open === -1) break;
    const close = value.indexOf('>', open + 1);
    if (close === -1) break;
    const inner = value.slice(open + 1, close).trim();
    if (inner !== '' && !/[\s<]/.test(inner) && inner.length <= MAX_ID_LENGTH) ids.add(`<${inner}>`);
    pos = close + 1;
  }
  if (ids.size === 0) {
    const bare = value.trim();
    if (bare !== '' && bare.length <= MAX_ID_LENGTH && !/[\s<>]/.test(bare)) ids.add(bare);
  }
  return [...ids];
}

function decodeQuotedPrintable(input: Buffer): Buffer {
  const out = Buffer.alloc(input.length);
  let n = 0;
  for (let i = 0; i < input.length; i++) {
    const b = input[i] as number;
    if (b !== 0x3d) {
      out[n++] = b;
      continue;
    }
    // Soft line break, possibly with trailing whitespace the sender's MTA added.
    let j = i + 1;
    while (input[j] === 0x20 || input[j] === 0x09) j++;
    if (input[j] === LF || (input[j] === CR && input[j + 1] === LF)) {
      i = input[j] === CR ? j + 1 : j;
      continue;
    }
    const hex = input.toString('latin1', i + 1, i + 3);
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      out[n++] = parseInt(hex, 16);
      i += 2;
    } else {
      out[n++] = b;
    }
  }
  return out.subarray(0, n);
}

function decodeTransfer(body: Buffer, encoding: string | undefined): Buffer {
  const cte = (encoding ?? '').trim().toLowerCase();
  // Node's base64 decoder skips line breaks and stops quietly at garbage, which is the leniency wanted here.
  if (cte === 'base64') return Buffer.from(body.toString('latin1'), 'base64');
  if (cte === 'quoted-printable') return decodeQuotedPrintable(body);
  return body;
}

function contentType(
  value: string | undefined,
  fallback: string,
): { type: string; params: Record<string, string> } {
  if (value === undefined || value.trim() === '') return { type: fallback, params: {} };
  try {
    const parsed = libmime.parseHeaderValue(value);
    const type = parsed.value.trim().toLowerCase();
    const params: Record<string, string> = {};
    for (const [k, v] of Object.entries(parsed.params)) {
      if (typeof v === 'string') params[k.toLowerCase()] = v;
    }
    return { type: type.includes('/') ? type : fallback, params };
  } catch {
    return { type: fallback, params: {} };
  }
}

/** The body starts after the blank separator line; a part without one is all body (see splitMessage). */
function bodyAfterSeparator(rest: Buffer): Buffer {
  if (rest[0] === LF) return rest.subarray(1);
  if (rest[0] === CR && rest[1] === LF) return rest.subarray(2);
  return rest;
}

function isDelimiterTail(body: Buffer, from: number, lineEnd: number): boolean {
  for (let i = from; i < lineEnd; i++) {
    const b = body[i];
    if (b !== 0x20 && b !== 0x09 && b !== CR) return false;
  }
  return true;
}

/**
 * RFC 2046 §5.1.1: a delimiter is `--boundary` at the start of a line, optionally `--` (close), then only
 * transport padding. The line break before a delimiter belongs to the delimiter, not to the part.
 */
function splitMultipart(body: Buffer, boundary: string): Buffer[] {
  const delimiter = Buffer.from(`--${boundary}`, 'latin1');
  const parts: Buffer[] = [];
  let partStart = -1;
  let pos = 0;
  while (pos < body.length) {
    const lf = body.indexOf(LF, pos);
    const lineEnd = lf === -1 ? body.length : lf;
    const next = lf === -1 ? body.length : lf + 1;
    if (
      lineEnd - pos >= delimiter.length &&
      body.compare(delimiter, 0, delimiter.length, pos, pos + delimiter.length) === 0
    ) {
      let after = pos + delimiter.length;
      const closing = body[after] === 0x2d && body[after + 1] === 0x2d;
      if (closing) after += 2;
      if (isDelimiterTail(body, after, lineEnd)) {
        if (partStart !== -1) {
          let end = pos;
          if (end > partStart && body[end - 1] === LF) end--;
          if (end > partStart && body[end - 1] === CR) end--;
          parts.push(body.subarray(partStart, end));
        }
        if (closing) return parts;
        partStart = next;
      }
    }
    pos = next;
  }
  // A missing close delimiter (truncated mail) still yields the last part.
  if (partStart !== -1 && partStart < body.length) parts.push(body.subarray(partStart));
  return parts;
}

interface DsnField {
  name: string;
  value: string;
}

/** Groups of `Name: value` lines separated by blank lines (RFC 3464 §2.1); continuation lines are unfolded. */
function statusGroups(text: string): DsnField[][] {
  const groups: DsnField[][] = [];
  let current: DsnField[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') {
      if (current.length > 0) groups.push(current);
      current = [];
      continue;
    }
    const last = current[current.length - 1];
    if ((line[0] === ' ' || line[0] === '\t') && last !== undefined) {
      last.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    current.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

function fieldOf(group: DsnField[], name: string): string | undefined {
  return group.find((f) => f.name === name)?.value;
}

/** `type; value` fields (Reporting-MTA, Final-Recipient): the value after the type, without comments. */
function typedValue(value: string): string {
  const semicolon = value.indexOf(';');
  const after = (semicolon === -1 ? value : value.slice(semicolon + 1)).trim();
  const token = after.split(/[\s(]/, 1)[0] ?? '';
  return token.replace(/^<(.*)>$/, '$1');
}

function readDeliveryStatus(text: string, state: WalkState): void {
  for (const group of statusGroups(text)) {
    // Blocks are told apart by content, not position: some MTAs omit the blank line after the per-message block.
    const mta = fieldOf(group, 'reporting-mta');
    if (mta !== undefined && state.reportingMta === undefined) {
      const host = typedValue(mta);
      if (/^[\x21-\x7e]{1,255}$/.test(host)) state.reportingMta = host;
    }
    const recipient = fieldOf(group, 'final-recipient') ?? fieldOf(group, 'original-recipient');
    if (recipient === undefined) continue;
    const action =
      (fieldOf(group, 'action') ?? '')
        .trim()
        .split(/[\s(;]/, 1)[0]
        ?.toLowerCase() ?? '';
    const status = (fieldOf(group, 'status') ?? '').trim();
    // Action is mandatory; a report that leaves it out is trusted on a permanent (5.x.x) status alone.
    const failed = action === 'failed' || (action === '' && /^5\.\d{1,3}\.\d{1,3}/.test(status));
    if (!failed) continue;
    const address = rawValueToText(typedValue(recipient)).toLowerCase();
    // Only the first failed recipient is used; the cap keeps a report of thousands of blocks cheap.
    if (isPlainAddress(address)) addBounded(state.failed, address, MAIL_LIMITS.dsnRecipients);
  }
}

function readReturnedHeaders(part: Buffer, state: WalkState): void {
  const returned = splitMessage(part);
  if (returned.truncated) noteLimit(state.limits, returned.truncated);
  const messageId = getHeader(returned, 'Message-ID');
  if (messageId === undefined) return;
  const first = extractMessageIds(messageId)[0];
  if (first !== undefined) addId(state, first);
}

function walk(entity: Buffer, depth: number, state: WalkState, defaultType: string, inReport: boolean): void {
  if (depth > MAX_DEPTH || state.parts >= MAX_PARTS) {
    noteLimit(state.limits, 'mime-depth');
    return;
  }
  state.parts++;
  const msg = splitMessage(entity);
  if (msg.truncated) {
    // Without the whole header block the part's type and body start are unknown.
    noteLimit(state.limits, msg.truncated);
    return;
  }
  const { type, params } = contentType(getHeader(msg, 'Content-Type'), defaultType);
  const body = bodyAfterSeparator(msg.rest);
  const encoding = getHeader(msg, 'Content-Transfer-Encoding');

  if (type.startsWith('multipart/')) {
    const boundary = params.boundary;
    if (boundary === undefined || boundary === '' || boundary.length > 200) return;
    const isReport = type === 'multipart/report';
    if (isReport) state.sawReport = true;
    const childDefault = type === 'multipart/digest' ? 'message/rfc822' : 'text/plain';
    for (const part of splitMultipart(body, boundary)) walk(part, depth + 1, state, childDefault, isReport);
    return;
  }
  if (type === 'message/delivery-status' || type === 'message/global-delivery-status') {
    state.sawReport = true;
    const status = decodeTransfer(body.subarray(0, MAIL_LIMITS.dsnStatusBytes * 2), encoding);
    readDeliveryStatus(status.toString('latin1', 0, MAIL_LIMITS.dsnStatusBytes), state);
    return;
  }
  // Returned content is only trusted as "the original" inside a report; an attached message elsewhere is not
  // what bounced. Its own MIME structure is never walked: a returned bounce must not add failed recipients.
  const returned =
    type === 'text/rfc822-headers' ||
    type === 'message/rfc822' ||
    type === 'message/global' ||
    type === 'message/global-headers';
  if (returned && inReport) readReturnedHeaders(decodeTransfer(body, encoding), state);
}

export function parseDsn(raw: Buffer): DsnInfo {
  const state: WalkState = { failed: new Set(), ids: new Set(), limits: [], parts: 0, sawReport: false };
  let top = splitMessage(Buffer.alloc(0));
  try {
    top = splitMessage(raw);
    walk(raw, 0, state, 'text/plain', false);
  } catch {
    // Best effort by contract: whatever was collected before an unexpected failure is still returned.
  }
  if (state.ids.size === 0 && state.sawReport) {
    // The DSN's own threading headers point at the bounced message when the report returned no headers; the
    // last References entry is the closest, so they are read backwards.
    for (const value of threadValues(top, 'In-Reply-To', state))
      for (const id of extractMessageIds(value)) addId(state, id);
    for (const value of threadValues(top, 'References', state).reverse())
      for (const id of extractMessageIds(value).reverse()) addId(state, id);
  }
  return {
    failedRecipients: [...state.failed],
    originalMessageIds: [...state.ids],
    ...(state.reportingMta !== undefined && { reportingMta: state.reportingMta }),
    ...(state.limits.length > 0 && { limits: state.limits }),
  };
}

function threadValues(top: ReturnType<typeof splitMessage>, name: string, state: WalkState): string[] {
  return getHeaders(top, name).filter((value) => {
    if (value.length <= MAIL_LIMITS.threadHeaderBytes) return true;
    noteLimit(state.limits, 'references');
    return false;
  });
}

/**
 * SES puts its own message id in the Message-ID it sends (`<SESID@email.amazonses.com>` or, in newer regions,
 * `<SESID@eu-west-1.amazonses.com>`), and the outbound table is keyed by that SES id, so the bare id is the best
 * candidate; the full header value with and without brackets follows for records keyed differently.
 */
const SES_MESSAGE_ID = /^<?([^<>@\s]+)@(?:email|[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonses\.com>?$/i;

export function outboundLookupKeys(messageIds: readonly string[]): string[] {
  const keys = new Set<string>();
  for (const id of messageIds) {
    const value = id.trim();
    if (value === '' || value.length > MAX_ID_LENGTH) continue;
    const bare = value.replace(/^<(.*)>$/, '$1').trim();
    if (bare === '') continue;
    const ses = SES_MESSAGE_ID.exec(value);
    if (ses?.[1] !== undefined) keys.add(ses[1]);
    keys.add(`<${bare}>`);
    keys.add(bare);
  }
  return [...keys];
}
