/**
 * Malformed input never stops a delivery or crashes a thread.
 *
 * 1. A corpus of broken MIME (test/fixtures/broken-mime/corpus.ts) through the BUILT daemon (`npm run build`
 *    first): every case is delivered, and the bytes at the SMTP sink are the original bytes after our five
 *    X-SES-*-Verdict lines, in SMTP wire form (RFC 5321 §2.3.8: nodemailer's DataStream turns a bare CR or LF into
 *    CRLF and ends the data with CRLF — Postfix does the same to bare LF). Malformed SQS bodies end up in the DLQ.
 * 2. A seeded fuzz run (FUZZ_SEED, FUZZ_COUNT to replay or extend) of random and mutated messages through the pure
 *    stages: parse, auto-reply policy (its target and SES's verdicts checked by an oracle) and composition, forward rewrite, DSN parsing, SES bounce detection and
 *    rewrite, header split/serialize (test/harness/mail-fuzz.ts). Nothing may throw except WorkerError
 *    HEADER_INJECTION, and those refusals are counted and bounded.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { rewriteForForward } from '../../src/mail/forward.ts';
import { splitMessage } from '../../src/mail/header-block.ts';
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
import {
  checkFuzzInput,
  FUZZ_LOOP_MARKER,
  fuzzSeeds,
  newFuzzStats,
  nextInput,
} from '../harness/mail-fuzz.ts';
import { putMail } from '../harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
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
        const id = /^X-SES-Worker-Delivery-Id: deliver\.[0-9a-f]{32}\r\n/.exec(
          copy.toString('latin1', 0, 80),
        );
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
      loopMarker: FUZZ_LOOP_MARKER,
      messageIdDomain: 'example.com',
      now: new Date('2024-06-01T12:00:00Z'),
    });
    const fields = splitMessage(forwarded).fields;
    const marker = fields.find((f) => f.name === FUZZ_LOOP_MARKER.name);
    // Without the empty line editHeaders puts before such a `rest`, " stray first line" would fold into the loop
    // marker (which then fails a signature check: loop protection lost) and the original From/Message-ID would
    // follow as a second set. The same applies to rewriteBounce (same editHeaders).
    assert.equal(marker?.value, FUZZ_LOOP_MARKER.value, 'the loop marker value was changed');
    assert.equal(fields.filter((f) => f.name.toLowerCase() === 'from').length, 1, 'two From fields');
    assert.equal(
      fields.filter((f) => f.name.toLowerCase() === 'message-id').length,
      1,
      'two Message-ID fields',
    );
  });

  // Run time (10,000 inputs) is measured in bench/fuzz.bench.ts, not limited here. The work is bounded by the count.
  it('fuzz: random and mutated messages through parse, rules, compose and rewrite (seeded)', async (t) => {
    const seed = Number(process.env.FUZZ_SEED ?? 20_240_601);
    const count = Number(process.env.FUZZ_COUNT ?? 10_000);
    const random = mulberry32(seed);
    const seeds = fuzzSeeds();
    const stats = newFuzzStats();
    for (let i = 0; i < count; i++) {
      const input = nextInput(random, seeds);
      try {
        await checkFuzzInput(input, random, stats);
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
    const rates = Object.entries(stats.rewrites).map(
      ([name, r]) =>
        `${name} ${r.refused}/${r.attempts} refused (${((100 * r.refused) / r.attempts).toFixed(1)} %)`,
    );
    t.diagnostic(
      `${count} inputs (seed ${seed}): ${stats.parseErrors} parse errors, ${stats.dsnReports} DSN reports, ` +
        `${stats.sesBounces} SES bounces, ${stats.autoReplies} auto-replies; ${rates.join('; ')}`,
    );
    // A refused input skips the per-input checks, so the refusals are bounded here: a stage that refused everything
    // (or most things) must fail the run. Auto-replies and forwards take every value from the mail through a
    // sanitizer, and the bounce rewrite's plain sources are single mailboxes: none of these may be refused.
    const { rewrites } = stats;
    for (const name of ['composeAutoReply', 'rewriteForForward'] as const) {
      assert.equal(rewrites[name].attempts, count, `${name} ran for every input`);
    }
    assert.equal(rewrites.composeAutoReply.refused, 0, 'auto-replies refused');
    assert.equal(rewrites.rewriteForForward.refused, 0, 'forwards refused');
    assert.equal(
      rewrites['rewriteBounce, plain source'].refused,
      0,
      'bounce rewrites with a plain source refused',
    );
    // The rest are proportions, meaningless for the few inputs of a replay (FUZZ_COUNT=<case + 1>).
    if (count < 1_000) return;
    // The out-of-office oracle only judges inputs the policy answered or suppressed for want of authentication:
    // enough of them must get a reply for it to mean anything.
    assert.ok(stats.autoReplies > count / 50, `only ${stats.autoReplies} auto-replies in ${count} inputs`);
    assert.ok(
      rewrites['rewriteBounce, plain source'].attempts > count / 3,
      'too few plain-source bounce rewrites',
    );
    // The mail's own From (its address, or the raw field) as the source is refused when it is not one plain mailbox:
    // ~27 % of them with the default seed and with seeds 1-3. The bounds are wide of that so other seeds pass too:
    // below, hostile sources stopped reaching the rewrite; above, it refuses sources it should take.
    const hostile = rewrites['rewriteBounce, source from the mail'];
    assert.ok(hostile.attempts > count / 3, 'too few bounce rewrites with the source from the mail');
    const hostileRate = hostile.refused / hostile.attempts;
    assert.ok(
      hostileRate > 0.1 && hostileRate < 0.5,
      `bounce rewrites refused ${(100 * hostileRate).toFixed(1)} % of the sources from the mail`,
    );
  });
});
