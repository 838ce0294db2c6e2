/**
 * Seeded fuzzing of the pure mail stages (parse, auto-reply policy and composition, forward rewrite, DSN parsing,
 * SES bounce detection and rewrite, header split/serialize), shared by test/integration/fuzz.test.ts and
 * bench/fuzz.bench.ts (which times it).
 *
 * Inputs: {@link nextInput} draws random bytes, random header soups ({@link randomMessage}) or mutations
 * ({@link mutate}) of real-world seeds ({@link fuzzSeeds}: DSN fixtures, the broken-MIME corpus, a few hand-made
 * mails). {@link checkFuzzInput} runs one input through every stage and asserts what must hold; a HEADER_INJECTION
 * refusal is allowed only where the input makes it right, and every refusal is counted in {@link FuzzStats} so a
 * run can bound the rates (a stage that refused everything would otherwise pass every per-input check).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { WorkerError } from '../../src/errors.ts';
import { composeAutoReply } from '../../src/mail/autoreply-compose.ts';
import { autoReplyDecision } from '../../src/mail/autoreply-policy.ts';
import { isSesBounce, rewriteBounce } from '../../src/mail/bounce.ts';
import { parseDsn } from '../../src/mail/dsn.ts';
import { rewriteForForward } from '../../src/mail/forward.ts';
import { isPlainAddress, serializeMessage, splitMessage } from '../../src/mail/header-block.ts';
import type { MailView } from '../../src/mail/mail-view.ts';
import { parseMail } from '../../src/pipeline/parse.ts';
import { brokenMimeCorpus } from '../fixtures/broken-mime/corpus.ts';

const CR = 0x0d;
const LF = 0x0a;

// ---------------------------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------------------------

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

export function fuzzSeeds(): Buffer[] {
  const dsnDir = new URL('../fixtures/dsn/', import.meta.url);
  const fixtures = readdirSync(dsnDir)
    .filter((f) => f.endsWith('.eml'))
    .map((f) => readFileSync(new URL(f, dsnDir)));
  const small = brokenMimeCorpus()
    .filter((c) => c.raw.length < 20_000)
    .map((c) => c.raw);
  return [
    ...fixtures,
    ...small,
    b(
      'From: "Pat Q." <pat@external.test>\r\nTo: Alice <alice@example.com>\r\nCc: bob@example.com\r\n' +
        'Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?= and more\r\nMessage-ID: <m1@external.test>\r\n' +
        'In-Reply-To: <p0@example.com>\r\nReferences: <a@x> <b@y>\r\nReply-To: Pat <reply@external.test>\r\n' +
        'Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\n' +
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\n' +
        'Content-Transfer-Encoding: quoted-printable\r\n\r\nHello =C3=A9\r\n--alt\r\nContent-Type: text/html\r\n\r\n' +
        '<p>Hello</p>\r\n--alt--\r\n',
    ),
    b(
      'From: MAILER-DAEMON@amazonses.com\r\nTo: alice@example.com\r\nSubject: Delivery Status Notification (Failure)\r\n' +
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n--r\r\n' +
        'Content-Type: text/plain\r\n\r\nfailed\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\n' +
        'Reporting-MTA: dns; a.example\r\n\r\nFinal-Recipient: rfc822; Bob@Example.com\r\nAction: failed\r\n' +
        'Status: 5.1.1\r\n\r\n--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <orig@email.amazonses.com>\r\n' +
        '--r--\r\n',
    ),
    b(
      'From: list@lists.example\r\nList-Id: <l.example>\r\nPrecedence: bulk\r\nAuto-Submitted: auto-generated\r\n\r\nx',
    ),
    b('Subject: no from\n\nLF only body\n'),
  ];
}

export const TOKENS = [
  '\r\n',
  '\n',
  '\r',
  '\x00',
  ':',
  ' ',
  '\t',
  '=?utf-8?B?',
  '=?utf-8?Q?',
  '=?',
  '?=',
  '--',
  '"',
  '<',
  '>',
  '@',
  ',',
  ';',
  '(',
  ')',
  '\\',
  '\r\n\r\n',
  '\r\n ',
  'boundary=',
  'boundary="x"',
  '--x\r\n',
  '--x--\r\n',
  'Content-Type: multipart/mixed; boundary=x\r\n',
  'Content-Type: message/rfc822\r\n',
  'Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n',
  'Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b.c\r\nAction: failed\r\n',
  'Content-Transfer-Encoding: base64\r\n',
  'Content-Transfer-Encoding: quoted-printable\r\n',
  '=\r\n',
  '=ZZ',
  'From: ',
  'Reply-To: ',
  'To: ',
  'Cc: ',
  'Subject: ',
  'Message-ID: <',
  'References: ',
  'In-Reply-To: ',
  'MAILER-DAEMON@amazonses.com',
  'noreply@x.test',
  'alice@example.com',
  'Auto-Submitted: no\r\n',
  'X-SES-Worker-Processed: x\r\n',
  'List-Unsubscribe: <mailto:u@x>\r\n',
  '\xff',
  '\x80',
  '\xc3\xa9',
  '\xe2\x80\xae',
  '\xf0\x9f\x92\xa9',
  'charset=utf-7',
  'charset=x-unknown',
  '%',
  '.',
  '\r\n.\r\n',
];

export function pick<T>(random: () => number, list: readonly T[]): T {
  return list[Math.floor(random() * list.length)] as T;
}

export function int(random: () => number, max: number): number {
  return Math.floor(random() * max);
}

export function randomBytes(random: () => number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = int(random, 256);
  return out;
}

export function randomMessage(random: () => number): Buffer {
  const names = [
    'From',
    'To',
    'Cc',
    'Reply-To',
    'Subject',
    'Message-ID',
    'References',
    'In-Reply-To',
    'Content-Type',
    'Content-Transfer-Encoding',
    'Auto-Submitted',
    'Precedence',
    'X-Auto-Response-Suppress',
    'Date',
    'List-Id',
    'X-Any',
  ];
  const lines: Buffer[] = [];
  const fields = int(random, 12);
  for (let i = 0; i < fields; i++) {
    const value: Buffer[] = [];
    const parts = int(random, 6);
    for (let j = 0; j < parts; j++)
      value.push(random() < 0.6 ? b(pick(random, TOKENS)) : randomBytes(random, int(random, 12)));
    lines.push(
      b(`${pick(random, names)}:${random() < 0.8 ? ' ' : ''}`),
      ...value,
      b(random() < 0.9 ? '\r\n' : '\n'),
    );
  }
  if (random() < 0.8) lines.push(b('\r\n'));
  const body = int(random, 6);
  for (let i = 0; i < body; i++)
    lines.push(random() < 0.5 ? b(pick(random, TOKENS)) : randomBytes(random, int(random, 40)));
  return Buffer.concat(lines);
}

export function mutate(random: () => number, input: Buffer, seeds: readonly Buffer[]): Buffer {
  let data = input;
  const rounds = 1 + int(random, 4);
  for (let r = 0; r < rounds; r++) {
    const at = int(random, data.length + 1);
    switch (int(random, 9)) {
      case 0: {
        if (data.length === 0) break;
        const copy = Buffer.from(data);
        copy[Math.min(at, copy.length - 1)] = int(random, 256);
        data = copy;
        break;
      }
      case 1:
        data = Buffer.concat([data.subarray(0, at), b(pick(random, TOKENS)), data.subarray(at)]);
        break;
      case 2:
        data = Buffer.concat([
          data.subarray(0, at),
          data.subarray(Math.min(data.length, at + 1 + int(random, 64))),
        ]);
        break;
      case 3: {
        const end = Math.min(data.length, at + 1 + int(random, 200));
        const chunk = data.subarray(at, end);
        data = Buffer.concat([
          data.subarray(0, end),
          ...Array.from({ length: 1 + int(random, 8) }, () => chunk),
          data.subarray(end),
        ]);
        break;
      }
      case 4:
        data = data.subarray(0, at);
        break;
      case 5: {
        const other = pick(random, seeds);
        data = Buffer.concat([data.subarray(0, at), other.subarray(int(random, other.length + 1))]);
        break;
      }
      case 6:
        data = b(data.toString('latin1').replace(/\r\n/g, random() < 0.5 ? '\n' : '\r'));
        break;
      case 7:
        data = Buffer.concat([
          data.subarray(0, at),
          randomBytes(random, 1 + int(random, 16)),
          data.subarray(at),
        ]);
        break;
      default:
        data = Buffer.concat([
          data.subarray(0, at),
          b(pick(random, TOKENS).repeat(1 + int(random, 300))),
          data.subarray(at),
        ]);
    }
  }
  return data.length > 64 * 1024 ? data.subarray(0, 64 * 1024) : data;
}

export function nextInput(random: () => number, seeds: readonly Buffer[]): Buffer {
  const roll = random();
  if (roll < 0.05) return randomBytes(random, int(random, 2048));
  if (roll < 0.25) return randomMessage(random);
  return mutate(random, pick(random, seeds), seeds);
}

// ---------------------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------------------

/** The stages that may refuse an input with HEADER_INJECTION, as counted in {@link FuzzStats.rewrites}. */
export type RewriteName =
  | 'composeAutoReply'
  | 'rewriteForForward'
  /** SES bounce rewrite with an original source we chose: a plain address, so a refusal is a bug. */
  | 'rewriteBounce, plain source'
  /** SES bounce rewrite with the mail's own From as the original source: hostile, refusals expected. */
  | 'rewriteBounce, source from the mail';

export interface RewriteStats {
  attempts: number;
  /** HEADER_INJECTION refusals. */
  refused: number;
}

export interface FuzzStats {
  inputs: number;
  parseErrors: number;
  dsnReports: number;
  sesBounces: number;
  /** Inputs the auto-reply policy answered (the oracle checked where the reply goes and that SES vouched for it). */
  autoReplies: number;
  rewrites: Record<RewriteName, RewriteStats>;
}

export function newFuzzStats(): FuzzStats {
  const rewrite = (): RewriteStats => ({ attempts: 0, refused: 0 });
  return {
    inputs: 0,
    parseErrors: 0,
    dsnReports: 0,
    sesBounces: 0,
    autoReplies: 0,
    rewrites: {
      composeAutoReply: rewrite(),
      rewriteForForward: rewrite(),
      'rewriteBounce, plain source': rewrite(),
      'rewriteBounce, source from the mail': rewrite(),
    },
  };
}

function isInjection(error: unknown): boolean {
  return error instanceof WorkerError && error.code === 'HEADER_INJECTION';
}

/** Runs `fn`, counting the attempt; a HEADER_INJECTION refusal is counted (and yields undefined), anything else throws. */
async function counted<T>(stats: RewriteStats, fn: () => T | Promise<T>): Promise<T | undefined> {
  stats.attempts += 1;
  try {
    return await fn();
  } catch (error) {
    if (!isInjection(error)) throw error;
    stats.refused += 1;
    return undefined;
  }
}

const FIELD_LINE = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;

interface HeaderScan {
  /** Offset of the line that ends the header block (the empty line, or the first line that is no field). */
  end: number;
  /** The unfolded fields, as `name: value` text. */
  fields: string[];
}

/**
 * The header block read line by line with a regular expression: deliberately not `splitMessage`, so the rewrite
 * checks below do not trust the code they check. Same rules: it ends at an empty line or at the first line that
 * is neither a field nor a continuation of one; a message without either is all headers.
 */
function scanHeaders(raw: Buffer): HeaderScan {
  const fields: string[] = [];
  let start = 0;
  while (start < raw.length) {
    const lf = raw.indexOf(LF, start);
    const line = raw.toString('latin1', start, lf === -1 ? raw.length : lf).replace(/\r$/, '');
    const emptyLine = lf !== -1 && line === '';
    if (emptyLine) return { end: start, fields };
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1] += line;
    else if (FIELD_LINE.test(line)) fields.push(line);
    else return { end: start, fields };
    if (lf === -1) break;
    start = lf + 1;
  }
  return { end: raw.length, fields };
}

/**
 * Header rewrites may change fields only. The input's body (everything after its header block) must end the
 * output byte for byte and still be body there (the output's header block ends before it, at most one line ending
 * earlier); and there is exactly one From, naming `from`.
 */
function assertHeaderOnlyRewrite(what: string, input: Buffer, output: Buffer, from: string): void {
  const body = input.subarray(scanHeaders(input).end);
  const bodyStart = output.length - body.length;
  assert.ok(bodyStart >= 0 && output.subarray(bodyStart).equals(body), `${what} changed the body bytes`);
  const out = scanHeaders(output);
  const between = output.toString('latin1', out.end, bodyStart);
  assert.ok(
    out.end <= bodyStart && ['', '\r\n', '\n'].includes(between),
    `${what}: the output's header block ends at ${out.end}, the body starts at ${bodyStart}`,
  );
  const froms = out.fields.filter((f) => /^from[ \t]*:/i.test(f));
  assert.equal(froms.length, 1, `${what} produced ${froms.length} From fields`);
  assert.ok(froms[0]?.includes(from), `${what}: ${JSON.stringify(froms[0])}`);
}

const fieldsNamed = (raw: Buffer, name: string) =>
  splitMessage(raw).fields.filter((f) => f.name.toLowerCase() === name.toLowerCase());

const NOW = new Date('2024-06-01T12:00:00Z');
const VERDICT_STATUSES = ['PASS', 'FAIL', 'GRAY', 'PROCESSING_FAILED', 'DISABLED', 'UNKNOWN'] as const;
const HOSTED_DOMAINS = ['example.com'];

const domainOfAddress = (address: string): string =>
  address.slice(address.lastIndexOf('@') + 1).toLowerCase();

/**
 * The out-of-office oracle, written from the rules rather than the code: a reply goes only to the envelope sender
 * (lower-cased, without angle brackets), never to From or Reply-To; with the authentication rule on, a reply outside
 * the hosted domains needs SPF PASS (the envelope domain is the reply's) or DMARC PASS with the From domain the
 * reply's; DKIM never counts; and a suppression for want of authentication happens only when neither holds.
 */
function assertReplyPolicy(
  decision: ReturnType<typeof autoReplyDecision>,
  envelope: string,
  view: MailView,
  verdicts: { spf: string; dkim: string; dmarc: string } | undefined,
): void {
  const bare = envelope
    .trim()
    .replace(/^<(.*)>$/, '$1')
    .trim()
    .toLowerCase();
  const fromDomain = view.from ? domainOfAddress(view.from.address) : '';
  const vouched = (domain: string): boolean =>
    verdicts === undefined ||
    HOSTED_DOMAINS.includes(domain) ||
    verdicts.spf === 'PASS' ||
    (verdicts.dmarc === 'PASS' && fromDomain === domain);
  if (decision.reply) {
    assert.equal(decision.to.address, bare, 'the reply goes to the envelope sender');
    assert.ok(
      vouched(domainOfAddress(bare)),
      `a reply SES did not authenticate: ${JSON.stringify(verdicts)}`,
    );
    const named = [view.from, view.sender].find((h) => h?.address.trim().toLowerCase() === bare);
    assert.equal(
      decision.to.name,
      named?.name ?? '',
      'the display name of a header naming the envelope sender',
    );
  } else if (decision.reason === 'unauthenticated-sender') {
    assert.ok(!vouched(domainOfAddress(bare)), `suppressed though SES vouched: ${JSON.stringify(verdicts)}`);
  }
}
export const FUZZ_LOOP_MARKER = { name: 'X-SES-Worker-Processed', value: 'worker-example.com; id=fuzz' };
const RULE_MESSAGES = [
  'I am away.',
  'Back on Monday.\r\nBcc: evil@x.test\r\n',
  '<html><body><p>Away</p></body></html>',
  '',
];
/** Original sources of our own making for the bounce rewrite: each one mailbox, so none may be refused. */
const PLAIN_SOURCES = [
  'pat@external.test',
  'Pat Q <pat@external.test>',
  '"Q, Pat" <pat@external.test>',
  'Zoë Ünïcode <zoe@external.test>',
];

function assertCrlfOnly(what: string, raw: Buffer): void {
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === LF) assert.equal(raw[i - 1], CR, `${what} has a bare LF`);
    if (raw[i] === CR) assert.equal(raw[i + 1], LF, `${what} has a bare CR`);
  }
}

/** One input through every pure stage; throws on anything that must not happen. */
export async function checkFuzzInput(raw: Buffer, random: () => number, stats: FuzzStats): Promise<void> {
  stats.inputs += 1;
  // Byte-preserving header scan: serialize(split(x)) is x.
  assert.ok(serializeMessage(splitMessage(raw)).equals(raw), 'split/serialize round trip changed the bytes');

  const view: MailView = await parseMail(raw, { timeoutMs: 5_000 });
  if (view.parseError) stats.parseErrors += 1;
  const envelope =
    random() < 0.6
      ? (view.from?.address ?? '')
      : pick(random, [
          '',
          'MAILER-DAEMON@amazonses.com',
          '<x@y>',
          'a@b',
          'Pat@External.TEST',
          'colleague@example.com',
          'SRS0=abc=TT=external.test=pat@forwarder.test',
          '"q u"@external.test',
          'noreply@external.test',
        ]);
  const sesBounce = isSesBounce(view, envelope);
  if (sesBounce) stats.sesBounces += 1;

  const dsn = parseDsn(raw);
  if (dsn.failedRecipients.length > 0) stats.dsnReports += 1;
  for (const address of dsn.failedRecipients) {
    assert.ok(
      isPlainAddress(address) && address === address.toLowerCase(),
      `DSN recipient ${JSON.stringify(address)}`,
    );
  }

  const verdicts = {
    spf: pick(random, VERDICT_STATUSES),
    dkim: pick(random, VERDICT_STATUSES),
    dmarc: pick(random, VERDICT_STATUSES),
  };
  const requireAuthenticated = random() < 0.7;
  const decision = autoReplyDecision({
    view,
    envelopeSender: envelope,
    recipient: 'alice@example.com',
    isSesBounce: sesBounce,
    hasLoopMarker: false,
    requireAddressed: random() < 0.5,
    ...(requireAuthenticated && { requireAuthenticated: { verdicts, hostedDomains: HOSTED_DOMAINS } }),
  });
  if (decision.reply) stats.autoReplies += 1;
  assertReplyPolicy(decision, envelope, view, requireAuthenticated ? verdicts : undefined);
  // Compose for every input (not only when the policy says yes) so hostile names, subjects and bodies get there.
  const to = decision.reply ? decision.to : { address: 'reply@external.test', name: view.from?.name ?? '' };
  const contentType = random() < 0.5 ? 'text' : 'html';
  const message = pick(random, RULE_MESSAGES);
  const reply = await counted(stats.rewrites.composeAutoReply, async () => {
    const composed = await composeAutoReply({
      recipient: 'alice@example.com',
      to,
      original: view,
      message,
      contentType,
      subjectPrefix: 'Auto: ',
      loopMarker: FUZZ_LOOP_MARKER,
      messageIdDomain: 'example.com',
      now: NOW,
    });
    return composed.raw;
  });
  if (reply) {
    assertCrlfOnly('auto-reply', reply);
    for (const name of ['from', 'to', 'subject', 'message-id']) {
      assert.equal(
        fieldsNamed(reply, name).length,
        1,
        `auto-reply has ${fieldsNamed(reply, name).length} ${name} fields`,
      );
    }
    assert.equal(fieldsNamed(reply, 'bcc').length, 0, 'auto-reply grew a Bcc');
    // MailComposer writes a non-ASCII domain as an A-label (its own punycode, not UTS-46): compare the domain
    // exactly only when it is ASCII.
    const toValue = fieldsNamed(reply, 'to')[0]?.value ?? '';
    const expected = /^[\x20-\x7e]*$/.test(to.address)
      ? to.address
      : `${to.address.slice(0, to.address.lastIndexOf('@'))}@`;
    assert.ok(toValue.includes(expected), `auto-reply To ${toValue} is not ${to.address}`);
  }

  const forwarded = await counted(stats.rewrites.rewriteForForward, () =>
    rewriteForForward(raw, {
      forwardingAddress: 'alice@example.com',
      originalRecipient: 'alice@example.com',
      domain: 'example.com',
      subjectPrefix: 'FWD: ',
      loopMarker: FUZZ_LOOP_MARKER,
      messageIdDomain: 'example.com',
      now: NOW,
    }),
  );
  if (forwarded) assertHeaderOnlyRewrite('rewriteForForward', raw, forwarded, '<alice@example.com>');

  const plainSource = random() < 0.5;
  const source = plainSource
    ? pick(random, PLAIN_SOURCES)
    : random() < 0.5
      ? (view.from?.address ?? 'pat@external.test')
      : (view.headers.get('from')?.[0] ?? '');
  const bounced = await counted(
    stats.rewrites[plainSource ? 'rewriteBounce, plain source' : 'rewriteBounce, source from the mail'],
    () => rewriteBounce(raw, { failedRecipient: 'bob@example.com', originalSource: source }),
  );
  if (bounced) assertHeaderOnlyRewrite('rewriteBounce', raw, bounced, '<bob@example.com>');
}
