import { Readable } from 'node:stream';
import { errorMessage } from '../errors.ts';
import { MailParser, type AttachmentStream, type MessageText } from 'mailparser';
import { headerParsers } from '../mail/header-parsers.ts';
import { rawValueToText, splitMessage, type SplitMessage } from '../mail/header-block.ts';
import { MAIL_LIMITS, headersIncomplete, noteLimit, type MailLimit } from '../mail/mail-limits.ts';
import type { MailAddress, MailView } from '../mail/mail-view.ts';
import type { PipelinePorts } from './ports.ts';

/** Stage 3's outcome: the mail's header view, and whether it carries a loop marker we trust. */
export interface ParsedHeaders {
  view: MailView;
  /** The header block, split once: every later stage that edits headers starts from it. */
  split: SplitMessage;
  /** Our own marker came back: the mail is delivered, but no rules and no bounce rewrite run on it. */
  loopMarker: boolean;
}

/** Stage 3: the header view every later stage reads (bodies are decoded later, only for an auto-reply). */
export function readHeaders(raw: Buffer, recipients: readonly string[], ports: PipelinePorts): ParsedHeaders {
  const split = splitMessage(raw);
  const view = headerView(split);
  const markers = view.headers.get(ports.loopMarker.name.toLowerCase()) ?? [];
  return { view, split, loopMarker: ports.loopMarker.isTrusted(markers, recipients) };
}

export interface ParseOptions {
  /** Give up on the MIME body walk after this long; the header view is kept. */
  timeoutMs?: number;
  /** Bodies longer than this are cut in the view (the view only feeds quoting and rules). */
  maxBodyChars?: number;
  /**
   * Only this many leading bytes go through the MIME walk. Text bodies come first in practice and the view keeps
   * at most `maxBodyChars` of them, so walking a 40 MB attachment would only cost memory.
   */
  maxParseBytes?: number;
}

/**
 * A read-only view of the mail for bounce detection, blocklist and rules. Headers come from a byte-level
 * scan that cannot fail; mailparser contributes the decoded text/html bodies. Attachments are drained, never
 * buffered, so memory stays near the mail's own size. Delivery never depends on this succeeding.
 */
export async function parseMail(raw: Buffer, options: ParseOptions = {}): Promise<MailView> {
  return withBodies(raw, headerView(splitMessage(raw)), options);
}

/**
 * Adds the decoded bodies to a header view. Only an auto-reply quotes them, so the pipeline calls this just for
 * mail that may get one: the MIME walk is the costliest step of the view and most mail never needs it. It is not
 * started on an incomplete header block or on more multipart containers than MAIL_LIMITS allows (`mime-depth`).
 *
 * mailparser reads only the fields that shape the body (MIME_FIELDS), not the whole header block: it decodes every
 * field it is given (addresses, encoded words), which cost seconds on a hostile megabyte of header the view has
 * already read within its bounds.
 */
export async function withBodies(raw: Buffer, view: MailView, options: ParseOptions = {}): Promise<MailView> {
  if (headersIncomplete(view.limits)) {
    return { ...view, parseError: 'header block past its bound: MIME body walk skipped' };
  }
  const maxBytes = options.maxParseBytes ?? 4 * 1024 * 1024;
  const mimeFields = MIME_FIELDS.flatMap(([name, key]) => {
    const value = view.headers.get(key)?.[0];
    return value === undefined ? [] : [`${name}: ${value}\r\n`];
  });
  if (mimeFields.some((f) => f.length > MAIL_LIMITS.mimeFieldBytes)) {
    return {
      ...view,
      limits: noteLimit([...(view.limits ?? [])], 'mime-header'),
      parseError: `a MIME field over ${MAIL_LIMITS.mimeFieldBytes} bytes (mime-header): MIME body walk skipped`,
    };
  }
  const bodyStart = view.headerBytes ?? raw.length - splitMessage(raw).rest.length;
  const body = raw.subarray(bodyStart, bodyStart + maxBytes);
  const input = Buffer.concat([Buffer.from(mimeFields.join(''), 'latin1'), body]);
  if (multipartContainers(input, MAIL_LIMITS.mimeContainers) > MAIL_LIMITS.mimeContainers) {
    return {
      ...view,
      limits: noteLimit([...(view.limits ?? [])], 'mime-depth'),
      parseError: `more than ${MAIL_LIMITS.mimeContainers} multipart containers (mime-depth): MIME body walk skipped`,
    };
  }
  try {
    const bodies = await extractBodies(input, options.timeoutMs ?? 10_000, options.maxBodyChars ?? 1_000_000);
    return { ...view, ...bodies };
  } catch (error) {
    return { ...view, parseError: errorMessage(error) };
  }
}

/** The header fields that shape a body: the first of each goes to mailparser, unfolded (see withBodies). */
const MIME_FIELDS = [
  ['MIME-Version', 'mime-version'],
  ['Content-Type', 'content-type'],
  ['Content-Transfer-Encoding', 'content-transfer-encoding'],
] as const;

/**
 * Every multipart container declares one boundary, and the nesting depth cannot exceed the number of containers,
 * so counting `boundary=` bounds the depth without a MIME parse. Counting stops one past `max`.
 */
function multipartContainers(raw: Buffer, max: number): number {
  const text = raw.toString('latin1');
  const pattern = /boundary\s*=/gi;
  let count = 0;
  while (count <= max && pattern.exec(text) !== null) count++;
  return count;
}

/**
 * The header half of the view; exported for callers that already hold a split message. Every value it parses is
 * bounded (MAIL_LIMITS): address fields, the number of To/Cc addresses, References and In-Reply-To.
 */
export function headerView(split: SplitMessage): MailView {
  const limits: MailLimit[] = split.truncated ? [split.truncated] : [];
  const headers = new Map<string, string[]>();
  for (const field of split.fields) {
    const name = field.key;
    const list = headers.get(name);
    if (list) list.push(field.value);
    else headers.set(name, [field.value]);
  }
  const first = (name: string): string | undefined => headers.get(name)?.[0];
  const from = mailboxField(first('from'), limits);
  const sender = mailboxField(first('sender'), limits);
  const messageId = firstMessageId(first('message-id'));
  const inReplyTo = firstMessageId(threadHeader(first('in-reply-to'), limits));
  const contentType =
    (first('content-type') ?? 'text/plain').split(';')[0]?.trim().toLowerCase() || 'text/plain';
  const recipients = recipientLists(headers, limits);
  return {
    headers,
    // Header bytes are held as latin1; RFC 6532 allows raw UTF-8, which rawValueToText recovers. The subject is
    // cut before decoding: the view only feeds a reply's subject, which is cut to 250 characters anyway.
    subject: headerParsers
      .decodeWords(rawValueToText((first('subject') ?? '').slice(0, MAIL_LIMITS.subjectChars)))
      .trim(),
    ...(from && { from }),
    ...(sender && { sender }),
    to: recipients.to,
    cc: recipients.cc,
    ...(messageId && { messageId }),
    ...(inReplyTo && { inReplyTo }),
    references: messageIds(threadHeader(first('references'), limits) ?? ''),
    contentType,
    headerBytes: split.fields.reduce((bytes, field) => bytes + field.raw.length, 0),
    ...(limits.length > 0 && { limits }),
  };
}

/**
 * An address field over its bound is not parsed at all: a prefix could name a different first mailbox. `names`:
 * whether display names are decoded (only From's and Sender's are ever shown).
 */
function addressField(value: string | undefined, limits: MailLimit[], names = true): MailAddress[] {
  if (value === undefined) return [];
  if (value.length > MAIL_LIMITS.addressFieldBytes) {
    noteLimit(limits, 'address-list');
    return [];
  }
  return parseAddresses(value, { names });
}

/** The first mailbox of From or Sender; a field over MAIL_LIMITS.mailboxFieldBytes is not parsed. */
function mailboxField(value: string | undefined, limits: MailLimit[]): MailAddress | undefined {
  if (value === undefined) return undefined;
  if (value.length > MAIL_LIMITS.mailboxFieldBytes) {
    noteLimit(limits, 'address-list');
    return undefined;
  }
  return parseAddresses(value)[0];
}

/**
 * To and Cc share one budget of addresses and one of bytes; fields after either is spent are not parsed. They only
 * say whether a recipient was named, so their display names are not decoded.
 */
function recipientLists(
  headers: ReadonlyMap<string, readonly string[]>,
  limits: MailLimit[],
): { to: MailAddress[]; cc: MailAddress[] } {
  let budget: number = MAIL_LIMITS.addresses;
  let bytes: number = MAIL_LIMITS.recipientFieldBytes;
  const read = (name: 'to' | 'cc'): MailAddress[] => {
    const out: MailAddress[] = [];
    for (const value of headers.get(name) ?? []) {
      if (budget === 0 || value.length > bytes) {
        noteLimit(limits, 'address-list');
        break;
      }
      bytes -= value.length;
      const parsed = addressField(value, limits, false);
      if (parsed.length > budget) noteLimit(limits, 'address-list');
      const taken = parsed.slice(0, budget);
      out.push(...taken);
      budget -= taken.length;
    }
    return out;
  };
  return { to: read('to'), cc: read('cc') };
}

/** References/In-Reply-To over the bound are ignored: the reply is not threaded, the bounce not matched by them. */
function threadHeader(value: string | undefined, limits: MailLimit[]): string | undefined {
  if (value === undefined || value.length <= MAIL_LIMITS.threadHeaderBytes) return value;
  noteLimit(limits, 'references');
  return undefined;
}

export function parseAddresses(value: string | undefined, options: { names?: boolean } = {}): MailAddress[] {
  if (!value) return [];
  const names = options.names ?? true;
  const out: MailAddress[] = [];
  for (const entry of headerParsers.mailboxes(rawValueToText(value))) {
    const address = entry.address.trim().toLowerCase();
    if (!/^[^\s@]+@[^\s@]+$/.test(address)) continue;
    out.push({ address, name: names ? headerParsers.decodeWords(entry.name).trim() : '' });
  }
  return out;
}

const MESSAGE_ID_RE = /<[^<>\s]{1,998}>/g;

export function messageIds(value: string): string[] {
  return [...value.matchAll(MESSAGE_ID_RE)].map((m) => m[0]).slice(-100);
}

function firstMessageId(value: string | undefined): string | undefined {
  return value === undefined ? undefined : messageIds(value)[0];
}

async function extractBodies(
  raw: Buffer,
  timeoutMs: number,
  maxChars: number,
): Promise<Pick<MailView, 'text' | 'html'>> {
  const parser = new MailParser({
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
    skipImageLinks: true,
  });
  const result: { text?: string; html?: string } = {};
  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve, reject) => {
    parser.on('data', (data: AttachmentStream | MessageText) => {
      if (data.type === 'attachment') {
        // Drain, don't buffer: forwards reuse the original bytes, so attachment content is never needed here.
        data.content.on('data', () => undefined);
        data.content.on('end', () => data.release?.());
        data.content.on('error', () => undefined);
        return;
      }
      if (typeof data.text === 'string') result.text = data.text.slice(0, maxChars);
      if (typeof data.html === 'string') result.html = data.html.slice(0, maxChars);
    });
    parser.once('end', resolve);
    // `on`, not `once`: mailparser can emit more than one error (and one after destroy()); an unheard one would
    // crash the thread. Rejecting a settled promise is a no-op.
    parser.on('error', reject);
    timer = setTimeout(() => reject(new Error(`MIME parse exceeded ${timeoutMs} ms`)), timeoutMs);
  });
  Readable.from([raw]).pipe(parser);
  try {
    await done;
  } finally {
    clearTimeout(timer);
    parser.removeAllListeners('data');
    // On timeout or error the stream may still hold buffered input; free it now.
    if (!parser.readableEnded) parser.destroy();
  }
  return result;
}
