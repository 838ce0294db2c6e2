/**
 * Malformed input never stops a delivery or crashes a thread.
 *
 * 1. A corpus of broken MIME (test/fixtures/broken-mime/corpus.ts) through the BUILT daemon (`npm run build`
 *    first): every case is delivered, and the bytes at the SMTP sink are the original bytes after our five
 *    X-SES-*-Verdict lines, in SMTP wire form (RFC 5321 §2.3.8: nodemailer's DataStream turns a bare CR or LF into
 *    CRLF and ends the data with CRLF — Postfix does the same to bare LF). Malformed SQS bodies end up in the DLQ.
 * 2. A seeded fuzz run (FUZZ_SEED, FUZZ_COUNT to replay or extend) of random and mutated messages through the pure
 *    stages: parse, auto-reply policy and composition, forward rewrite, DSN parsing, SES bounce detection and
 *    rewrite, header split/serialize. Nothing may throw except WorkerError HEADER_INJECTION.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { WorkerError } from '../../src/errors.ts';
import { composeAutoReply } from '../../src/mail/autoreply-compose.ts';
import { autoReplyDecision } from '../../src/mail/autoreply-policy.ts';
import { isSesBounce, rewriteBounce } from '../../src/mail/bounce.ts';
import { parseDsn } from '../../src/mail/dsn.ts';
import { rewriteForForward } from '../../src/mail/forward.ts';
import { isPlainAddress, serializeMessage, splitMessage } from '../../src/mail/header-block.ts';
import type { MailView } from '../../src/mail/mail-view.ts';
import { parseMail } from '../../src/pipeline/parse.ts';
import { detectEol } from '../../src/pipeline/verdicts.ts';
import { brokenMimeCorpus, mulberry32 } from '../fixtures/broken-mime/corpus.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import { killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { outcomeLines } from '../harness/faults.ts';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { putMail } from '../harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const CR = 0x0d;
const LF = 0x0a;

/** What SMTP puts on the wire for `data`: bare CR and bare LF become CRLF, and the data ends with CRLF. */
function smtpWireForm(data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length * 2 + 2);
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const byte = data[i] as number;
    if (byte === CR) {
      out[n++] = CR;
      out[n++] = LF;
      if (data[i + 1] === LF) i++;
    } else if (byte === LF) {
      out[n++] = CR;
      out[n++] = LF;
    } else out[n++] = byte;
  }
  if (n === 0 || out[n - 1] !== LF) {
    out[n++] = CR;
    out[n++] = LF;
  }
  return out.subarray(0, n);
}

/**
 * The worker's five verdict lines (all PASS, as putMail's notification says), with the mail's own line ending; a
 * mail whose first line starts with whitespace gets an empty line after them, so it cannot fold into ours.
 */
function verdictPrefix(raw: Buffer): Buffer {
  const eol = detectEol(raw);
  const guard = raw[0] === 0x20 || raw[0] === 0x09 ? eol : '';
  return Buffer.from(
    ['Spam', 'Virus', 'SPF', 'DKIM', 'DMARC'].map((name) => `X-SES-${name}-Verdict: PASS${eol}`).join('') +
      guard,
    'latin1',
  );
}

function firstDifference(a: Buffer, b: Buffer): string {
  const length = Math.min(a.length, b.length);
  let i = 0;
  while (i < length && a[i] === b[i]) i++;
  return `lengths ${a.length} vs ${b.length}, first difference at byte ${i}: ${JSON.stringify(
    a.toString('latin1', Math.max(0, i - 20), i + 20),
  )} vs ${JSON.stringify(b.toString('latin1', Math.max(0, i - 20), i + 20))}`;
}

describe('malformed input never stops a delivery or crashes a thread', () => {
  describe('broken MIME through the built daemon', () => {
    let stack: TestStack;
    let sink: SmtpSink;
    let daemon: DaemonProcess;
    before(async () => {
      stack = await startStack({ tables: true });
      sink = await startSmtpSink({ size: 64 * 1024 * 1024 });
    });
    after(async () => {
      await killAllDaemons();
      await sink?.stop();
      await stack?.stop();
    });

    it('delivers every case raw (verdict lines + original bytes); malformed SQS bodies go to the DLQ', async (t) => {
      const domain = 'corpus.test';
      const queue = await createDomainQueue(stack.sqs, domain, {
        visibilityTimeout: 3,
        withDlq: true,
        maxReceiveCount: 2,
      });
      daemon = await spawnDaemon({
        domains: [domain],
        env: {
          ...stack.env,
          SMTP_HOST: '127.0.0.1',
          SMTP_PORT: String(sink.port),
          INTERNAL_SMTP_PORT: String(sink.port),
          WAIT_TIME_SECONDS: '1',
          LOG_LEVEL: 'info',
        },
      });
      t.after(() => daemon.stop());
      const corpus = brokenMimeCorpus();
      const ids = new Map<string, string>();
      for (const c of corpus) {
        // An out-of-office rule makes the daemon walk every broken MIME body (it only does so to quote one).
        await stack.ddb.send(
          new PutCommand({
            TableName: 'email-rules',
            Item: {
              email_address: `${c.name}@${domain}`.toLowerCase(),
              ooo_active: true,
              ooo_message: 'away',
            },
          }),
        );
        const put = await putMail(stack, {
          domain,
          raw: c.raw,
          recipients: [`${c.name}@${domain}`],
          source: 'sender@external.test',
          shape: 'sns-s3',
          // SES truncates the notification's header list; a 5 MB header would not fit an SQS message anyway.
          notification: { headers: [], headersTruncated: true },
        });
        ids.set(c.name, put.messageId);
      }
      const malformedBodies = [
        'not json at all',
        '{"Type":"Notification","Message":"{not json"}',
        JSON.stringify({
          Type: 'Notification',
          Message: JSON.stringify({ notificationType: 'Received', mail: {} }),
        }),
        JSON.stringify({
          notificationType: 'Received',
          mail: { messageId: '../../etc/passwd' },
          receipt: {},
        }),
        '[]',
        JSON.stringify({ Type: 'SubscriptionConfirmation', Message: 'You have chosen to subscribe' }),
      ];
      for (const body of malformedBodies) {
        await stack.sqs.send(new SendMessageCommand({ QueueUrl: queue.queueUrl, MessageBody: body }));
      }

      const delivered = (name: string) => sink.messages.filter((m) => m.to.includes(`${name}@${domain}`));
      await waitUntil(
        () => corpus.every((c) => delivered(c.name).length > 0),
        90_000,
        'every corpus case',
        100,
      );
      await waitUntil(
        async () =>
          (await queueCounts(stack.sqs, queue.queueUrl)).visible +
            (await queueCounts(stack.sqs, queue.queueUrl)).inFlight ===
          0,
        30_000,
        'main queue empty',
        200,
      );
      const dlq = await queueCounts(stack.sqs, queue.dlqUrl ?? '');

      const failures: string[] = [];
      for (const c of corpus) {
        const copies = delivered(c.name);
        if (copies.length !== 1) failures.push(`${c.name}: ${copies.length} copies`);
        const expected = smtpWireForm(Buffer.concat([verdictPrefix(c.raw), c.raw]));
        // The delivery id (its value is a hash of the SES id) comes first; the verdicts and the bytes follow.
        const copy = copies[0]?.raw ?? Buffer.alloc(0);
        const id = /^X-SES-Worker-Delivery-Id: deliver\.[0-9a-f]{32}\r\n/.exec(copy.toString('latin1', 0, 80));
        if (!id) failures.push(`${c.name}: no delivery id first`);
        const got = copy.subarray(id?.[0].length ?? 0);
        if (!got.equals(expected)) failures.push(`${c.name}: ${firstDifference(got, expected)}`);
      }
      const outcomes = outcomeLines(daemon.logs);
      const statuses = corpus.map(
        (c) => `${c.name}=${outcomes.find((l) => l.sesMessageId === ids.get(c.name))?.status}`,
      );
      const parseFailed = daemon.logs
        .filter((l) => l.msg === 'MIME parse failed; the auto-reply quotes no body')
        .map(
          (l) => `${corpus.find((c) => ids.get(c.name) === l.sesMessageId)?.name} (${String(l.parseError)})`,
        );
      const malformed = daemon.logs.filter(
        (l) => l.msg === 'malformed SQS message left for the dead-letter queue',
      ).length;
      t.diagnostic(
        `${corpus.length} cases delivered; MIME parse failed (delivered raw): ${parseFailed.join(', ')}; ` +
          `${malformed} malformed-body outcomes; DLQ holds ${dlq.visible}`,
      );
      t.diagnostic(statuses.join(' '));
      const died = daemon.logs.filter((l) => l.msg === 'poller thread died; restarting');
      assert.deepEqual(died, [], 'a poller thread died');
      assert.match(await daemon.metrics(), /ses_worker_poller_up\{domain="corpus\.test"\} 1/);
      assert.doesNotMatch(await daemon.metrics(), /ses_worker_poller_restarts_total\{[^}]*\} [1-9]/);
      assert.deepEqual(failures, []);
      assert.equal(dlq.visible, malformedBodies.length, 'malformed SQS bodies in the DLQ');
    });
  });

  it('a header rewrite of a mail whose first line starts with whitespace keeps one header block', () => {
    const raw = b(
      ' stray first line\r\nFrom: spoofed@bank.test\r\nMessage-ID: <orig@bank.test>\r\n\r\nbody\r\n',
    );
    const forwarded = rewriteForForward(raw, {
      forwardingAddress: 'alice@example.com',
      originalRecipient: 'alice@example.com',
      domain: 'example.com',
      subjectPrefix: 'FWD: ',
      loopMarker: LOOP,
      messageIdDomain: 'example.com',
      now: NOW,
    });
    const fields = splitMessage(forwarded).fields;
    const marker = fields.find((f) => f.name === LOOP.name);
    // Today: our fields, then " stray first line" folds into the loop marker (which then fails a signature check:
    // loop protection lost) and the original From/Message-ID follow as a second set: two From, two Message-ID.
    // Fix (src/mail/header-block.ts editHeaders): when `msg.rest` is non-empty and does not start with a line
    // ending (the scan stopped at a non-field line, not at the blank separator), emit `msg.eol` between the
    // fields and `rest`, so `rest` stays body. The same applies to rewriteBounce (same editHeaders).
    assert.equal(marker?.value, LOOP.value, 'the loop marker value was changed');
    assert.equal(fields.filter((f) => f.name.toLowerCase() === 'from').length, 1, 'two From fields');
    assert.equal(
      fields.filter((f) => f.name.toLowerCase() === 'message-id').length,
      1,
      'two Message-ID fields',
    );
  });

  it('fuzz: random and mutated messages through parse, rules, compose and rewrite (seeded)', async (t) => {
    const seed = Number(process.env.FUZZ_SEED ?? 20_240_601);
    const count = Number(process.env.FUZZ_COUNT ?? 10_000);
    const random = mulberry32(seed);
    const seeds = fuzzSeeds();
    const started = Date.now();
    const stats: FuzzStats = { injection: {}, replies: 0, parseErrors: 0, dsnReports: 0, sesBounces: 0 };
    for (let i = 0; i < count; i++) {
      const input = nextInput(random, seeds);
      try {
        await checkOne(input, random, stats);
      } catch (error) {
        const file = join(tmpdir(), `fuzz-${seed}-${i}.eml`);
        writeFileSync(file, input);
        throw new Error(
          `fuzz case ${i} (FUZZ_SEED=${seed}) failed; input saved to ${file}: ${
            error instanceof Error ? (error.stack ?? error.message) : String(error)
          }`,
          { cause: error },
        );
      }
    }
    const ms = Date.now() - started;
    t.diagnostic(`${count} inputs in ${ms} ms (seed ${seed}): ${JSON.stringify(stats)}`);
    assert.ok(ms < 60_000, `fuzz run took ${ms} ms`);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Fuzz machinery
// ---------------------------------------------------------------------------------------------------------------------

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function fuzzSeeds(): Buffer[] {
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

const TOKENS = [
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

function pick<T>(random: () => number, list: readonly T[]): T {
  return list[Math.floor(random() * list.length)] as T;
}

function int(random: () => number, max: number): number {
  return Math.floor(random() * max);
}

function randomBytes(random: () => number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = int(random, 256);
  return out;
}

function randomMessage(random: () => number): Buffer {
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

function mutate(random: () => number, input: Buffer, seeds: readonly Buffer[]): Buffer {
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

function nextInput(random: () => number, seeds: readonly Buffer[]): Buffer {
  const roll = random();
  if (roll < 0.05) return randomBytes(random, int(random, 2048));
  if (roll < 0.25) return randomMessage(random);
  return mutate(random, pick(random, seeds), seeds);
}

function isInjection(error: unknown): boolean {
  return error instanceof WorkerError && error.code === 'HEADER_INJECTION';
}

interface FuzzStats {
  /** HEADER_INJECTION refusals per function. */
  injection: Record<string, number>;
  replies: number;
  parseErrors: number;
  dsnReports: number;
  sesBounces: number;
}

/** Runs `fn`; a HEADER_INJECTION refusal counts (and yields undefined), anything else thrown fails the case. */
function allowInjection<T>(what: string, fn: () => T, stats: FuzzStats): T | undefined {
  try {
    return fn();
  } catch (error) {
    if (isInjection(error)) {
      stats.injection[what] = (stats.injection[what] ?? 0) + 1;
      return undefined;
    }
    throw error;
  }
}

const fieldsNamed = (raw: Buffer, name: string) =>
  splitMessage(raw).fields.filter((f) => f.name.toLowerCase() === name.toLowerCase());

/** Header rewrites may change fields only: the input's body bytes must end the output, and there is one From. */
function assertHeaderOnlyRewrite(what: string, input: Buffer, output: Buffer, from: string): void {
  const rest = splitMessage(input).rest;
  assert.ok(output.subarray(output.length - rest.length).equals(rest), `${what} changed the body bytes`);
  const froms = fieldsNamed(output, 'from');
  assert.equal(froms.length, 1, `${what} produced ${froms.length} From fields`);
  assert.ok(froms[0]?.value.includes(from), `${what}: From is ${JSON.stringify(froms[0]?.value)}`);
}

const NOW = new Date('2024-06-01T12:00:00Z');
const LOOP = { name: 'X-SES-Worker-Processed', value: 'worker-example.com; id=fuzz' };
const RULE_MESSAGES = [
  'I am away.',
  'Back on Monday.\r\nBcc: evil@x.test\r\n',
  '<html><body><p>Away</p></body></html>',
  '',
];

async function checkOne(raw: Buffer, random: () => number, stats: FuzzStats): Promise<void> {
  // Byte-preserving header scan: serialize(split(x)) is x.
  assert.ok(serializeMessage(splitMessage(raw)).equals(raw), 'split/serialize round trip changed the bytes');

  const view: MailView = await parseMail(raw, { timeoutMs: 5_000 });
  if (view.parseError) stats.parseErrors += 1;
  const envelope =
    random() < 0.8
      ? (view.from?.address ?? '')
      : pick(random, ['', 'MAILER-DAEMON@amazonses.com', '<x@y>', 'a@b']);
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

  const decision = autoReplyDecision({
    view,
    envelopeSender: envelope,
    recipient: 'alice@example.com',
    isSesBounce: sesBounce,
    hasLoopMarker: false,
    requireAddressed: random() < 0.5,
  });
  // Compose for every input (not only when the policy says yes) so hostile names, subjects and bodies get there.
  const to = decision.reply ? decision.to : { address: 'reply@external.test', name: view.from?.name ?? '' };
  const contentType = random() < 0.5 ? 'text' : 'html';
  let reply: Buffer | undefined;
  try {
    reply = (
      await composeAutoReply({
        recipient: 'alice@example.com',
        to,
        original: view,
        message: pick(random, RULE_MESSAGES),
        contentType,
        subjectPrefix: 'Auto: ',
        loopMarker: LOOP,
        messageIdDomain: 'example.com',
        now: NOW,
      })
    ).raw;
  } catch (error) {
    if (!isInjection(error)) throw error;
    stats.injection.composeAutoReply = (stats.injection.composeAutoReply ?? 0) + 1;
  }
  if (reply) {
    stats.replies += 1;
    for (let i = 0; i < reply.length; i++) {
      if (reply[i] === LF) assert.equal(reply[i - 1], CR, 'auto-reply has a bare LF');
      if (reply[i] === CR) assert.equal(reply[i + 1], LF, 'auto-reply has a bare CR');
    }
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

  const forwarded = allowInjection(
    'rewriteForForward',
    () =>
      rewriteForForward(raw, {
        forwardingAddress: 'alice@example.com',
        originalRecipient: 'alice@example.com',
        domain: 'example.com',
        subjectPrefix: 'FWD: ',
        loopMarker: LOOP,
        messageIdDomain: 'example.com',
        now: NOW,
      }),
    stats,
  );
  if (forwarded) assertHeaderOnlyRewrite('rewriteForForward', raw, forwarded, '<alice@example.com>');

  const source =
    random() < 0.5 ? (view.from?.address ?? 'pat@external.test') : (view.headers.get('from')?.[0] ?? '');
  const bounced = allowInjection(
    'rewriteBounce',
    () => rewriteBounce(raw, { failedRecipient: 'bob@example.com', originalSource: source }),
    stats,
  );
  if (bounced) assertHeaderOnlyRewrite('rewriteBounce', raw, bounced, '<bob@example.com>');
}
