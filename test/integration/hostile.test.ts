/**
 * Hostile input cannot stop the BUILT daemon (`npm run build` first; `npm test` does it): a raw-socket fuzz of both
 * HTTP ports, mails past every bound of src/mail/mail-limits.ts, CR/LF/<> in every notification field, a replayed
 * loop marker, rules data over its bounds, and unexpected errors in a poller thread and in the main thread.
 *
 * Work is bounded by counting — DynamoDB requests through a counting proxy, ids looked up, limits reported — never
 * by a timed assertion; each case reports its time in the test output. One stack, one SMTP sink and one DynamoDB
 * proxy for the file; the bound cases share one daemon, the last-line-of-defence cases start their own.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it, mock, type TestContext } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { MailParser } from 'mailparser';
import { headerParsers } from '../../src/mail/header-parsers.ts';
import { MAIL_LIMITS } from '../../src/mail/mail-limits.ts';
import { deliveryId } from '../../src/pipeline/delivery-id.ts';
import { mulberry32 } from '../fixtures/broken-mime/corpus.ts';
import {
  killAllDaemons,
  outlastDeadPoll,
  spawnDaemon,
  type DaemonProcess,
} from '../harness/daemon-process.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type DomainQueue,
  type TestStack,
} from '../harness/emulators.ts';
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from '../harness/faults.ts';
import {
  INJECTIONS,
  forgedBounce,
  headerBomb,
  httpFuzzRequest,
  longHeaderLine,
  nestedMime,
  putHostileMail,
  sumMetric,
  type FuzzRequest,
  type HostilePut,
} from '../harness/hostile-input.ts';
import { headerWork, MiB, SHAPES, SOURCE as SHAPE_SOURCE } from '../harness/header-shapes.ts';
import type { LogLine } from '../harness/pipeline-rig.ts';
import type { SesReceivedNotification } from '../harness/ses-events.ts';
import { startSmtpSink, type ReceivedMail, type SmtpSink } from '../harness/smtp-sink.ts';
import { stripVerdicts } from '../harness/verdict-lines.ts';

const DOMAIN = 'hostile.test';
const BUCKET = 'hostile-test-emails';
const SECRET = 'hostile-suite-loop-marker-secret-0123456789';
const OUTBOUND = 'ses-outbound-messages';

let stack: TestStack;
let sink: SmtpSink;
let dynamo: FaultProxy;

before(async () => {
  stack = await startStack({ tables: true });
  dynamo = await startFaultProxy(stack.endpoints.dynamodb);
  sink = await startSmtpSink({ size: 64 * 1024 * 1024 });
});
after(async () => {
  await killAllDaemons();
  await sink?.stop();
  await dynamo?.stop();
  await stack?.stop();
});

function daemonEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...stack.env,
    AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(sink.port),
    INTERNAL_SMTP_PORT: String(sink.port),
    SMTP_TIMEOUT_MS: '10000',
    RULES_CACHE_SECONDS: '0',
    LOOP_MARKER_SECRET: SECRET,
    LOG_LEVEL: 'info',
    ...extra,
  };
}

async function rule(item: Record<string, unknown>, table = 'email-rules'): Promise<void> {
  await stack.ddb.send(new PutCommand({ TableName: table, Item: item }));
}

/** The outcome line of a message, by SES message id (or SQS message id for notifications that have none). */
function outcomeOf(daemon: DaemonProcess, put: HostilePut): Promise<LogLine> {
  return daemon.waitForLog(
    (l) =>
      typeof l.disposition === 'string' &&
      (l.sesMessageId === put.messageId || l.sqsMessageId === put.sqsMessageId),
    90_000,
    `the outcome of ${put.messageId}`,
  );
}

const deliveriesTo = (recipient: string): ReceivedMail[] =>
  sink.messages.filter((m) => m.to.includes(recipient));

/** Delivered once, raw: the worker's verdict lines, then exactly the bytes SES stored. */
async function assertDeliveredRaw(recipient: string, raw: Buffer): Promise<void> {
  await waitUntil(() => deliveriesTo(recipient).length > 0, 30_000, `delivery to ${recipient}`);
  const copies = deliveriesTo(recipient);
  assert.equal(copies.length, 1, `${copies.length} copies to ${recipient}`);
  assert.ok(
    stripVerdicts(copies[0]?.raw ?? Buffer.alloc(0)).equals(raw),
    `the copy to ${recipient} is not raw`,
  );
}

/** The DynamoDB requests made while `work` ran, for counting. */
async function countingDynamo<T>(work: () => Promise<T>): Promise<{ result: T; requests: ProxiedRequest[] }> {
  const from = dynamo.requests.length;
  const result = await work();
  return { result, requests: dynamo.requests.slice(from) };
}

function outboundLookups(requests: readonly ProxiedRequest[]): {
  batches: number;
  maxKeys: number;
  gets: number;
} {
  const batches = requests.filter((r) => r.operation === 'BatchGetItem' && r.body?.includes(OUTBOUND));
  const keys = batches.map((r) => {
    const body = JSON.parse(r.body ?? '{}') as { RequestItems?: Record<string, { Keys: unknown[] }> };
    return body.RequestItems?.[OUTBOUND]?.Keys.length ?? 0;
  });
  return {
    batches: batches.length,
    maxKeys: Math.max(0, ...keys),
    gets: requests.filter((r) => r.operation === 'GetItem' && r.body?.includes(OUTBOUND)).length,
  };
}

function report(t: TestContext, what: string, started: number, outcome: LogLine, extra = ''): void {
  t.diagnostic(
    `${what}: settled in ${Date.now() - started} ms, status=${outcome.status}, ` +
      `limits=${JSON.stringify(outcome.limits ?? [])}${extra ? `, ${extra}` : ''}`,
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// One daemon for the HTTP fuzz and every bound
// ---------------------------------------------------------------------------------------------------------------------

describe('hostile input against the built daemon', () => {
  let daemon: DaemonProcess;
  let queue: DomainQueue;
  const stalled: net.Socket[] = [];

  before(async () => {
    queue = await createDomainQueue(stack.sqs, DOMAIN, { withDlq: true, maxReceiveCount: 2 });
    await rule({ email_address: `ooo@${DOMAIN}`, ooo_active: true, ooo_message: 'I am away.' });
    await rule({ email_address: `deep@${DOMAIN}`, ooo_active: true, ooo_message: 'Away, deeply.' });
    await rule({ email_address: `fwd@${DOMAIN}`, ooo_active: false, forwards: ['friend@elsewhere.test'] });
    await rule({
      email_address: `mixed@${DOMAIN}`,
      ooo_active: false,
      forwards: ['friend@elsewhere.test', `inside@${DOMAIN}`],
    });
    daemon = await spawnDaemon({ domains: [DOMAIN], env: daemonEnv() });
  });
  after(() => {
    for (const socket of stalled) socket.destroy();
  });

  const put = (
    raw: Buffer,
    recipients: string[],
    extra: Partial<Parameters<typeof putHostileMail>[1]> = {},
  ) =>
    putHostileMail(stack, {
      queueUrl: queue.queueUrl,
      bucket: BUCKET,
      raw,
      recipients,
      source: 'sender@external.test',
      ...extra,
    });

  it('survives 1,200 malformed and random HTTP requests on both ports, then serves and delivers', async (t) => {
    const random = mulberry32(Number(process.env.FUZZ_SEED ?? 8_080));
    const ports = [daemon.healthPort, daemon.metricsPort];
    const killer = Buffer.from('GET http://[/ HTTP/1.1\r\nHost: fuzz\r\n\r\n', 'latin1');
    const answers = await Promise.all(ports.map((port) => fire(port, { bytes: killer, stall: false })));
    for (const answer of answers)
      assert.match(answer, /^HTTP\/1\.1 400 /, 'the request that used to kill the process');

    const started = Date.now();
    const outcomes = { answered: 0, closed: 0, stalled: 0 };
    for (let sent = 0; sent < 1_200;) {
      const batch: Array<Promise<string>> = [];
      for (let i = 0; i < 24 && sent < 1_200; i++, sent++) {
        const request = httpFuzzRequest(random);
        const port = ports[sent % 2] as number;
        if (request.stall) {
          stalled.push(stall(port, request));
          outcomes.stalled += 1;
        } else batch.push(fire(port, request));
      }
      for (const answer of await Promise.all(batch)) outcomes[answer === '' ? 'closed' : 'answered'] += 1;
    }
    t.diagnostic(`HTTP fuzz: ${JSON.stringify(outcomes)} in ${Date.now() - started} ms`);

    assert.equal(daemon.exit, undefined, daemon.describe());
    assert.equal(
      (await daemon.request('GET', '/health')).status,
      200,
      'health answers while slow clients wait',
    );
    const metrics = await daemon.metrics();
    const healthErrors = sumMetric(metrics, 'ses_worker_http_errors_total', { server: 'health' });
    const metricsErrors = sumMetric(metrics, 'ses_worker_http_errors_total', { server: 'metrics' });
    t.diagnostic(`errors counted: health ${healthErrors}, metrics ${metricsErrors}`);
    assert.ok(
      healthErrors >= 300 && metricsErrors >= 300,
      `${healthErrors} / ${metricsErrors} errors counted`,
    );

    const raw = Buffer.from(
      'From: after@external.test\r\nTo: user@hostile.test\r\nSubject: after the fuzz\r\n\r\nhi\r\n',
    );
    await put(raw, [`after-fuzz@${DOMAIN}`]);
    await assertDeliveredRaw(`after-fuzz@${DOMAIN}`, raw);
    // The slow clients are cut off by the headers timeout, not left to hold connections forever.
    await waitUntil(
      () => stalled.every((s) => s.destroyed || s.readableEnded),
      30_000,
      'stalled clients closed',
    );
  });

  it('delivers a forged bounce with 10,000 References ids raw, after one bounded lookup per attempt', async (t) => {
    const raw = forgedBounce(`bounce10k@${DOMAIN}`, 10_000, 1_000);
    const started = Date.now();
    const { result: outcome, requests } = await countingDynamo(async () =>
      outcomeOf(daemon, await put(raw, [`bounce10k@${DOMAIN}`], { source: '' })),
    );
    const lookups = outboundLookups(requests);
    report(t, 'forged bounce, 10k ids', started, outcome, `outbound lookups ${JSON.stringify(lookups)}`);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(outcome.limits, ['dsn-ids']);
    assert.equal(lookups.gets, 0, 'no GetItem per candidate');
    assert.ok(
      lookups.batches >= 1 && lookups.batches <= 3,
      `${lookups.batches} BatchGetItem (one per attempt)`,
    );
    assert.ok(lookups.maxKeys <= 30, `${lookups.maxKeys} keys in one lookup`);
    await assertDeliveredRaw(`bounce10k@${DOMAIN}`, raw);
  });

  it('delivers a forged bounce with 100,000 References ids raw without looking any of them up', async (t) => {
    const raw = forgedBounce(`bounce100k@${DOMAIN}`, 100_000, 1_000);
    const started = Date.now();
    const { result: outcome, requests } = await countingDynamo(async () =>
      outcomeOf(daemon, await put(raw, [`bounce100k@${DOMAIN}`], { source: '' })),
    );
    report(
      t,
      'forged bounce, 100k ids',
      started,
      outcome,
      `outbound lookups ${JSON.stringify(outboundLookups(requests))}`,
    );
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(outcome.limits, ['header-bytes']);
    assert.equal(outboundLookups(requests).batches, 0);
    await assertDeliveredRaw(`bounce100k@${DOMAIN}`, raw);
  });

  it('does not treat a bounce SES did not authenticate as an SES bounce', async (t) => {
    const raw = forgedBounce(`unauth@${DOMAIN}`, 20, 20);
    const started = Date.now();
    const { result: outcome, requests } = await countingDynamo(async () =>
      outcomeOf(
        daemon,
        await put(raw, [`unauth@${DOMAIN}`], {
          source: 'attacker@evil.test',
          edit: (n: SesReceivedNotification) => {
            n.receipt.dmarcVerdict.status = 'FAIL';
            n.receipt.spfVerdict.status = 'PASS';
          },
        }),
      ),
    );
    report(t, 'unauthenticated bounce', started, outcome);
    assert.equal(outcome.status, 'delivered');
    assert.equal(
      outboundLookups(requests).batches,
      0,
      'no outbound lookup for mail SES did not authenticate',
    );
    assert.ok(daemon.logs.some((l) => l.msg.startsWith('mail claims to be an SES bounce') && l.sesMessageId));
    await assertDeliveredRaw(`unauth@${DOMAIN}`, raw);
  });

  it('delivers a 40 MB header bomb raw, without a thread restart', async (t) => {
    const raw = headerBomb(40_000_000, `bomb@${DOMAIN}`);
    const started = Date.now();
    const outcome = await outcomeOf(daemon, await put(raw, [`bomb@${DOMAIN}`]));
    report(t, '40 MB header bomb', started, outcome);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(outcome.limits, ['header-fields']);
    await assertDeliveredRaw(`bomb@${DOMAIN}`, raw);
  });

  it('delivers 10,000 levels of MIME nesting raw and still sends the out-of-office reply', async (t) => {
    const raw = nestedMime(
      10_000,
      `From: Nester <nester@external.test>\r\nTo: deep@${DOMAIN}\r\nSubject: deep\r\nMessage-ID: <deep@external.test>\r\n`,
    );
    const sentBefore = stack.ses.sent.length;
    const started = Date.now();
    const outcome = await outcomeOf(
      daemon,
      await put(raw, [`deep@${DOMAIN}`], { source: 'nester@external.test' }),
    );
    report(t, '10,000-level MIME nesting', started, outcome, `effects ${JSON.stringify(outcome.effects)}`);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(outcome.limits, ['mime-depth']);
    assert.equal(outcome.effects?.[0]?.status, 'sent', 'the auto-reply goes, quoting nothing');
    const reply = stack.ses.sent
      .slice(sentBefore)
      .find((m) => m.destinations.includes('nester@external.test'));
    assert.ok(reply, 'auto-reply sent through SES');
    assert.doesNotMatch(reply.raw.toString('latin1'), /the innermost text/);
    await assertDeliveredRaw(`deep@${DOMAIN}`, raw);
  });

  it('delivers a mail with a 5 MB header line raw', async (t) => {
    const raw = longHeaderLine(5 * 1024 * 1024, `long@${DOMAIN}`);
    const started = Date.now();
    const outcome = await outcomeOf(daemon, await put(raw, [`long@${DOMAIN}`]));
    report(t, '5 MB header line', started, outcome);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(outcome.limits, ['header-bytes']);
    await assertDeliveredRaw(`long@${DOMAIN}`, raw);
  });

  it('lets no CR, LF, NUL, space or <> from any notification field shape an SMTP command', async (t) => {
    const mail = (to: string) =>
      Buffer.from(`From: n@external.test\r\nTo: ${to}\r\nSubject: fields\r\n\r\nhi\r\n`);
    const cases: Array<{
      name: string;
      recipient: string;
      expect: Expectation;
      extra: Partial<Parameters<typeof putHostileMail>[1]>;
    }> = [];
    INJECTIONS.forEach((injection, i) => {
      const add = (name: string, expect: Expectation, extra: Partial<Parameters<typeof putHostileMail>[1]>) =>
        cases.push({ name: `${name} #${i}`, recipient: `${name}${i}@${DOMAIN}`, expect, extra });
      add('recipients', 'delivered', {
        edit: (n) => n.receipt.recipients.push(`in${injection}jected@${DOMAIN}`, `${injection}@${DOMAIN}`),
      });
      add('source', 'delivered', { source: `evil${injection}@attacker.test` });
      add('messageid', 'malformed', { edit: (n) => (n.mail.messageId += injection) });
      add('bucket', 'malformed', {
        edit: (n) => ((n.receipt.action as { bucketName: string }).bucketName += injection),
      });
      // Any character but a control one may be in an S3 key: those name an object that is not there (retried).
      add('key', /\p{Cc}/u.test(injection) ? 'malformed' : 'retried', {
        edit: (n) => ((n.receipt.action as { objectKey: string }).objectKey += injection),
      });
      add('verdict', 'delivered', {
        edit: (n) => (n.receipt.spamVerdict.status = `PASS${injection}` as 'PASS'),
      });
      add('other', 'delivered', {
        edit: (n) => {
          n.receipt.action.topicArn += injection;
          n.mail.timestamp += injection;
          n.mail.destination = [...n.mail.destination, `x${injection}@${DOMAIN}`];
          n.mail.commonHeaders.from = [`a${injection}@b`];
          n.mail.headers.push({ name: `X${injection}`, value: injection });
        },
        envelope: { Subject: `s${injection}`, TopicArn: `arn${injection}`, MessageId: injection },
      });
    });
    const started = Date.now();
    const puts = await Promise.all(
      cases.map((c) => put(mail(c.recipient), [c.recipient], c.extra).then((p) => ({ ...c, put: p }))),
    );
    const outcomes = await Promise.all(
      puts.map(async (c) => ({ ...c, outcome: await outcomeOf(daemon, c.put) })),
    );
    t.diagnostic(`${cases.length} hostile notifications settled in ${Date.now() - started} ms`);

    for (const c of outcomes) {
      if (c.expect === 'malformed') {
        assert.equal(c.outcome.status, 'malformed', c.name);
        assert.equal(c.outcome.disposition, 'dead-letter', c.name);
        assert.equal(deliveriesTo(c.recipient).length, 0, `${c.name} delivered`);
        continue;
      }
      if (c.expect === 'retried') {
        assert.equal(c.outcome.disposition, 'retry', `${c.name}: ${JSON.stringify(c.outcome)}`);
        assert.equal(deliveriesTo(c.recipient).length, 0, `${c.name} delivered`);
        continue;
      }
      assert.equal(
        c.outcome.status,
        c.name.startsWith('recipients') ? 'partial' : 'delivered',
        `${c.name}: ${JSON.stringify(c.outcome)}`,
      );
      await waitUntil(() => deliveriesTo(c.recipient).length === 1, 10_000, `delivery for ${c.name}`);
    }
    // Whatever reached the mail server, every envelope address is a plain mailbox (or the null sender).
    const plain = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9.-]+$/;
    for (const m of sink.messages) {
      assert.ok(m.from === '' || plain.test(m.from), `MAIL FROM ${JSON.stringify(m.from)}`);
      for (const to of m.to) assert.ok(plain.test(to), `RCPT TO ${JSON.stringify(to)}`);
    }

    const recipientsCase = outcomes.find((c) => c.name === 'recipients #0');
    const invalid = recipientsCase?.outcome.recipients?.filter((r) => r.state === 'invalid') ?? [];
    assert.equal(invalid.length, 2, JSON.stringify(recipientsCase?.outcome.recipients));
    const head = await stack.s3.send(
      new HeadObjectCommand({ Bucket: BUCKET, Key: recipientsCase?.put.key ?? '' }),
    );
    assert.match(
      head.Metadata?.invalid_inboxes ?? '',
      /^in%0D%0Arcpt to:<evil@attacker\.test>jected@hostile\.test,/,
    );

    const sourceCase = outcomes.find((c) => c.name === 'source #0');
    assert.equal(
      deliveriesTo(sourceCase?.recipient ?? '')[0]?.from,
      '',
      'unusable sender becomes the null sender',
    );
    const sourceHead = await stack.s3.send(
      new HeadObjectCommand({ Bucket: BUCKET, Key: sourceCase?.put.key ?? '' }),
    );
    assert.match(sourceHead.Metadata?.invalid_source ?? '', /^evil%0D%0ARCPT/);

    const verdictCase = outcomes.find((c) => c.name === 'verdict #0');
    assert.match(
      deliveriesTo(verdictCase?.recipient ?? '')[0]?.raw.toString('latin1') ?? '',
      /^X-SES-Worker-Delivery-Id: deliver\.[0-9a-f]{32}\r\nX-SES-Spam-Verdict: UNKNOWN\r\n/,
    );
  });

  it('does not trust a loop marker replayed into other mail, but stops a forward that loops back', async (t) => {
    const sentBefore = stack.ses.sent.length;
    const stranger = 'stranger@outside.test';
    const first = (to: string, headers = '') =>
      Buffer.from(`From: Stranger <${stranger}>\r\nTo: ${to}\r\nSubject: hello\r\n${headers}\r\nbody\r\n`);
    const started = Date.now();

    // 1. Anyone who writes to the out-of-office mailbox gets its auto-reply, with a signed marker.
    await outcomeOf(daemon, await put(first(`ooo@${DOMAIN}`), [`ooo@${DOMAIN}`], { source: stranger }));
    const replyTo = () => stack.ses.sent.slice(sentBefore).find((m) => m.destinations.includes(stranger));
    await waitUntil(() => replyTo() !== undefined, 10_000, 'the auto-reply');
    const reply = replyTo();
    const marker = /^X-SES-Worker-Processed: (.+)\r$/im.exec(reply?.raw.toString('latin1') ?? '')?.[1];
    assert.ok(marker, 'the auto-reply carries a marker');

    // 2. ... and pastes it into mail to the forwarding mailbox: its rules still run.
    const replayed = await outcomeOf(
      daemon,
      await put(first(`fwd@${DOMAIN}`, `X-SES-Worker-Processed: ${marker}\r\n`), [`fwd@${DOMAIN}`], {
        source: stranger,
      }),
    );
    assert.equal(replayed.loopMarker, undefined, 'a replayed marker is not trusted');
    assert.equal(replayed.effects?.[0]?.status, 'sent', JSON.stringify(replayed.effects));

    // 3. ... and into mail to the out-of-office mailbox itself: not a loop either.
    const again = await outcomeOf(
      daemon,
      await put(first(`ooo@${DOMAIN}`, `X-SES-Worker-Processed: ${marker}\r\n`), [`ooo@${DOMAIN}`], {
        source: stranger,
      }),
    );
    assert.equal(again.loopMarker, undefined);
    assert.notEqual(again.effects?.[0]?.reason, 'loop-marker');

    // 4. The forward to friend@ comes back (friend forwards everything to fwd@): that loop stops here.
    const forwarded = stack.ses.sent
      .slice(sentBefore)
      .find((m) => m.destinations.includes('friend@elsewhere.test'));
    assert.ok(forwarded, 'the forward went out');
    const back = Buffer.concat([Buffer.from('Received: from friend by elsewhere.test\r\n'), forwarded.raw]);
    const looped = await outcomeOf(
      daemon,
      await put(back, [`fwd@${DOMAIN}`], { source: 'friend@elsewhere.test' }),
    );
    t.diagnostic(`loop marker cases settled in ${Date.now() - started} ms`);
    assert.equal(looped.loopMarker, true, JSON.stringify(looped));
    assert.deepEqual(looped.effects ?? [], [], 'no second forward');
    assert.equal(looped.status, 'delivered');
  });

  it('cuts rules data over its bounds and says so: 30,000 patterns, 100 forwards, a 200 KB message', async (t) => {
    const patterns = Array.from({ length: 30_000 }, (_, i) => `s${i}@*`);
    await rule({ email_address: `patterns@${DOMAIN}`, blocked_patterns: patterns }, 'email-blocked-senders');
    await rule({
      email_address: `patterns@${DOMAIN}`,
      ooo_active: false,
      forwards: Array.from({ length: 100 }, (_, i) => `f${i}@${DOMAIN}`),
      ooo_message: 'x'.repeat(200_000),
    });
    const mail = (from: string) =>
      Buffer.from(`From: <${from}>\r\nTo: patterns@${DOMAIN}\r\nSubject: patterns\r\n\r\nhi\r\n`);
    const started = Date.now();
    const early = await outcomeOf(
      daemon,
      await put(mail('s10@x.test'), [`patterns@${DOMAIN}`], { source: 's10@x.test' }),
    );
    const late = await outcomeOf(
      daemon,
      await put(mail('s20000@x.test'), [`patterns@${DOMAIN}`], { source: 's20000@x.test' }),
    );
    t.diagnostic(
      `rules data bounds: settled in ${Date.now() - started} ms; forwards made: ${late.effects?.length}`,
    );
    assert.equal(early.status, 'blocked', 'a pattern within the bound still blocks');
    assert.equal(late.status, 'delivered', 'a pattern past the bound is not used');
    assert.deepEqual([...((late.limits as string[] | undefined) ?? [])].sort(), [
      'blocked-patterns',
      'forwards',
      'ooo-message',
    ]);
    assert.equal(late.effects?.filter((e) => e.kind === 'forward').length, 20, 'forwards cut to the bound');
    const warned = daemon.logs
      .filter((l) => l.msg.startsWith('rules data over its bound'))
      .map((l) => l.limit);
    for (const limit of ['blocked-patterns', 'forwards', 'ooo-message'])
      assert.ok(warned.includes(limit), `${limit} not in ${JSON.stringify(warned)}`);
  });

  it('is no reflector: a reply goes only where SES authenticated the envelope sender, never on DKIM alone', async (t) => {
    const attempts = stack.ses.sendAttempts;
    const started = Date.now();
    // The issue's shape: signed by the attacker's own domain (DKIM PASS), From and envelope a victim in another
    // domain (SPF FAIL, DMARC GRAY), one victim per mail.
    const victims = ['ceo@victim-one.test', 'cfo@victim-two.test', 'hr@victim-three.test'];
    const outcomes = await Promise.all(
      victims.map(async (victim) =>
        outcomeOf(
          daemon,
          await put(
            Buffer.from(
              `From: ${victim}\r\nTo: ooo@${DOMAIN}\r\nSubject: reflect\r\n\r\n${'x'.repeat(9_000)}\r\n`,
            ),
            [`ooo@${DOMAIN}`],
            {
              source: victim,
              edit: (n: SesReceivedNotification) => {
                n.receipt.spfVerdict.status = 'FAIL';
                n.receipt.dkimVerdict.status = 'PASS';
                n.receipt.dmarcVerdict.status = 'GRAY';
              },
            },
          ),
        ),
      ),
    );
    t.diagnostic(`reflector attempts settled in ${Date.now() - started} ms`);
    for (const outcome of outcomes) {
      assert.equal(outcome.status, 'delivered');
      assert.deepEqual(
        outcome.effects?.map((e) => [e.kind, e.status, e.reason]),
        [['autoreply', 'suppressed', 'unauthenticated-sender']],
      );
    }
    assert.equal(stack.ses.sendAttempts, attempts, 'nothing went out through SES');
    const head = await stack.s3.send(
      new HeadObjectCommand({ Bucket: BUCKET, Key: outcomes[0]?.sesMessageId ?? '' }),
    );
    assert.equal(head.Metadata?.suppressed_effects, `autoreply:ooo@${DOMAIN}:unauthenticated-sender`);
    const metrics = await daemon.metrics();
    assert.ok(
      sumMetric(metrics, 'ses_worker_effects_total', {
        kind: 'autoreply',
        status: 'suppressed',
        reason: 'unauthenticated-sender',
      }) >= victims.length,
    );
  });

  it('does not forward what SES marked spam or virus FAIL to outside addresses; inside forwards and the mailbox copy go', async () => {
    const sentBefore = stack.ses.sent.length;
    const flagged = async (verdict: 'spamVerdict' | 'virusVerdict') =>
      outcomeOf(
        daemon,
        await put(
          Buffer.from(`From: spammer@bulk.test\r\nTo: mixed@${DOMAIN}\r\nSubject: ${verdict}\r\n\r\nbuy\r\n`),
          [`mixed@${DOMAIN}`],
          {
            source: 'spammer@bulk.test',
            edit: (n: SesReceivedNotification) => {
              n.receipt[verdict].status = 'FAIL';
            },
          },
        ),
      );
    for (const [verdict, reason] of [
      ['spamVerdict', 'spam'],
      ['virusVerdict', 'virus'],
    ] as const) {
      const outcome = await flagged(verdict);
      assert.equal(outcome.status, 'delivered', 'the mailbox copy is delivered');
      assert.deepEqual(
        outcome.effects?.map((e) => [e.target, e.route, e.status, e.reason]).sort(),
        [
          ['friend@elsewhere.test', 'ses', 'suppressed', reason],
          [`inside@${DOMAIN}`, 'internal', 'sent', undefined],
        ],
        verdict,
      );
      const head = await stack.s3.send(
        new HeadObjectCommand({ Bucket: BUCKET, Key: outcome.sesMessageId ?? '' }),
      );
      assert.equal(head.Metadata?.suppressed_effects, `forward:mixed@${DOMAIN}:${reason}`);
    }
    assert.equal(
      stack.ses.sent.slice(sentBefore).filter((m) => m.destinations.includes('friend@elsewhere.test')).length,
      0,
      'nothing SES flagged went out through SES',
    );
    await waitUntil(() => deliveriesTo(`inside@${DOMAIN}`).length === 2, 10_000, 'the inside forwards');
    const metrics = await daemon.metrics();
    for (const reason of ['spam', 'virus'])
      assert.ok(
        sumMetric(metrics, 'ses_worker_effects_total', { kind: 'forward', status: 'suppressed', reason }) >=
          1,
        reason,
      );
  });

  it('marks its copies with a delivery id keyed by the deployment secret, which no one can compute from the SES id', async () => {
    const raw = Buffer.from(`From: a@external.test\r\nTo: keyed@${DOMAIN}\r\nSubject: keyed\r\n\r\nhi\r\n`);
    const put1 = await put(raw, [`keyed@${DOMAIN}`]);
    await assertDeliveredRaw(`keyed@${DOMAIN}`, raw);
    const id = /^X-SES-Worker-Delivery-Id: (\S+)\r\n/.exec(
      deliveriesTo(`keyed@${DOMAIN}`)[0]?.raw.toString('latin1', 0, 100) ?? '',
    )?.[1];
    assert.equal(id, deliveryId(put1.messageId, 0, { kind: 'deliver' }, SECRET));
    assert.notEqual(
      id,
      deliveryId(put1.messageId, 0, { kind: 'deliver' }),
      'not the unkeyed hash of the SES id',
    );
  });

  it('settles a forged bounce of 20,000 References ids with the requests of a plain mail of its size', async (t) => {
    const forged = forgedBounce(`forged20k@${DOMAIN}`, 20_000, 1_000);
    const filler = `X-Filler: ${'f'.repeat(990)}\r\n`.repeat(Math.ceil(forged.length / 1_002));
    const plain = Buffer.from(
      `From: a@external.test\r\nTo: plain20k@${DOMAIN}\r\nSubject: plain\r\n${filler}\r\nbody\r\n`,
    );
    const settle = async (raw: Buffer, recipient: string, edit?: (n: SesReceivedNotification) => void) => {
      const started = Date.now();
      const { result: outcome, requests } = await countingDynamo(async () =>
        outcomeOf(
          daemon,
          await put(raw, [recipient], { source: 'attacker@evil.test', ...(edit && { edit }) }),
        ),
      );
      // Only this mail's requests (its SES id, its recipient): completes of earlier mails may land meanwhile.
      const own = requests.filter(
        (r) => r.body?.includes(outcome.sesMessageId ?? '?') || r.body?.includes(recipient),
      );
      return { outcome, requests: own, ms: Date.now() - started };
    };
    const mail = await settle(plain, `plain20k@${DOMAIN}`);
    // A forged bounce: SES did not authenticate amazonses.com (DMARC FAIL, SPF for the attacker's domain).
    const bounce = await settle(forged, `forged20k@${DOMAIN}`, (n) => {
      n.receipt.dmarcVerdict.status = 'FAIL';
    });
    t.diagnostic(
      `forged bounce (${forged.length} bytes) settled in ${bounce.ms} ms, plain mail (${plain.length}) in ${mail.ms} ms`,
    );
    assert.equal(bounce.outcome.status, 'delivered');
    assert.equal(mail.outcome.status, 'delivered');
    assert.equal(
      outboundLookups(bounce.requests).batches,
      0,
      'no outbound lookup for a bounce SES did not vouch for',
    );
    const operations = (requests: readonly ProxiedRequest[]) => requests.map((r) => r.operation).sort();
    assert.deepEqual(operations(bounce.requests), operations(mail.requests));
    await assertDeliveredRaw(`forged20k@${DOMAIN}`, forged);
  });

  it("refuses a notification naming another domain's bucket, and handles at most 100 recipients of one", async () => {
    const raw = Buffer.from(`From: a@external.test\r\nTo: x@${DOMAIN}\r\nSubject: elsewhere\r\n\r\nhi\r\n`);
    const foreign = await putHostileMail(stack, {
      queueUrl: queue.queueUrl,
      bucket: 'someone-elses-bucket',
      raw,
      recipients: [`elsewhere@${DOMAIN}`],
      source: 'a@external.test',
    });
    const refused = await outcomeOf(daemon, foreign);
    assert.equal(refused.status, 'malformed');
    assert.equal(refused.disposition, 'dead-letter');
    assert.match(String(refused.reason), /someone-elses-bucket.*BUCKET_NAME_TEMPLATE.*ALLOWED_MAIL_BUCKETS/);
    const untouched = await stack.s3.send(
      new HeadObjectCommand({ Bucket: 'someone-elses-bucket', Key: foreign.key }),
    );
    assert.deepEqual(untouched.Metadata ?? {}, {}, 'no verdict stamped on the other mail');
    assert.equal(deliveriesTo(`elsewhere@${DOMAIN}`).length, 0);

    const many = Array.from({ length: 150 }, (_, i) => `many${i}@${DOMAIN}`);
    const crowd = await outcomeOf(daemon, await put(raw, many));
    assert.equal(crowd.status, 'delivered');
    assert.equal(crowd.recipients?.length, MAIL_LIMITS.recipients);
    assert.deepEqual(crowd.limits, ['recipients']);
    for (const r of many.slice(0, 100)) await waitUntil(() => deliveriesTo(r).length === 1, 10_000, r);
    assert.equal(many.slice(100).filter((r) => deliveriesTo(r).length > 0).length, 0);
    const head = await stack.s3.send(
      new HeadObjectCommand({ Bucket: BUCKET, Key: crowd.sesMessageId ?? '' }),
    );
    assert.match(head.Metadata?.excess_recipients ?? '', /^many100%40hostile\.test,.*\+\d+$/);
    assert.ok(
      daemon.logs.some((l) => l.sesMessageId === crowd.sesMessageId && l.excess === 50),
      'the log says how many were left out',
    );
  });

  it('matches a refusal back to a needlessly quoted recipient and refuses one that needs its quotes', async () => {
    sink.setRcptReply(`bad@${DOMAIN}`, { code: 550, message: '5.1.1 no such user' });
    try {
      const raw = Buffer.from(`From: a@external.test\r\nTo: ok@${DOMAIN}\r\nSubject: quoted\r\n\r\nhi\r\n`);
      const outcome = await outcomeOf(
        daemon,
        await put(raw, [`"bad"@${DOMAIN}`, `"a,b"@${DOMAIN}`, `ok-quoted@${DOMAIN}`]),
      );
      assert.equal(outcome.status, 'partial');
      const states = Object.fromEntries(
        (outcome.recipients ?? []).map((r) => [r.recipient, [r.state, r.code]]),
      );
      assert.deepEqual(states, {
        [`bad@${DOMAIN}`]: ['invalid', 550],
        [`"a,b"@${DOMAIN}`]: ['invalid', undefined],
        [`ok-quoted@${DOMAIN}`]: ['delivered', 250],
      });
      await assertDeliveredRaw(`ok-quoted@${DOMAIN}`, raw);
      const head = await stack.s3.send(
        new HeadObjectCommand({ Bucket: BUCKET, Key: outcome.sesMessageId ?? '' }),
      );
      // invalid_inboxes is comma-separated as given: the refused address keeps its comma.
      const invalid = head.Metadata?.invalid_inboxes ?? '';
      for (const address of [`bad@${DOMAIN}`, `"a,b"@${DOMAIN}`])
        assert.ok(invalid.includes(address), invalid);
    } finally {
      sink.setRcptReply(`bad@${DOMAIN}`, undefined);
    }
  });

  it('ends with no poller restart, no pause, and every bound counted', async () => {
    const metrics = await daemon.metrics();
    assert.equal(sumMetric(metrics, 'ses_worker_poller_restarts_total'), 0);
    assert.equal(sumMetric(metrics, 'ses_worker_poller_up', { domain: DOMAIN }), 1);
    for (const limit of [
      'recipients',
      'dsn-ids',
      'header-bytes',
      'header-fields',
      'mime-depth',
      'blocked-patterns',
      'forwards',
      'ooo-message',
    ])
      assert.ok(sumMetric(metrics, 'ses_worker_mail_limits_total', { domain: DOMAIN, limit }) >= 1, limit);
    assert.deepEqual(
      daemon.logs.filter((l) => l.msg === 'pausing polling' || l.msg === 'poller thread died; restarting'),
      [],
    );
    assert.equal((await daemon.request('GET', '/health')).status, 200);
    assert.equal(daemon.exit, undefined);
    // Nothing the suite sent is left but what was not deleted on purpose: malformed notifications (they wait for
    // the dead-letter queue) and the ones naming a missing object (retried).
    const kept = outcomeLinesOf(daemon).filter((l) => l.disposition !== 'delete').length;
    const left = async () => {
      const counts = await queueCounts(stack.sqs, queue.queueUrl);
      return counts.visible + counts.inFlight;
    };
    // Deletes are batched: the last ones may still be on their way.
    await waitUntil(async () => (await left()) <= kept, 10_000, `at most ${kept} messages left in the queue`);
  });
});

type Expectation = 'delivered' | 'malformed' | 'retried';

function outcomeLinesOf(daemon: DaemonProcess): LogLine[] {
  const seen = new Set<string>();
  return daemon.logs.filter((l) => {
    if (typeof l.disposition !== 'string' || typeof l.sqsMessageId !== 'string' || seen.has(l.sqsMessageId))
      return false;
    seen.add(l.sqsMessageId);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------------------------------
// One object, two domains
// ---------------------------------------------------------------------------------------------------------------------

describe('two domains sharing one stored mail (one receipt rule for both)', () => {
  const ALPHA = 'alpha.test';
  const BETA = 'beta.test';
  const SHARED = 'shared-mail-test';
  let daemon: DaemonProcess;
  const queues = new Map<string, DomainQueue>();

  before(async () => {
    for (const domain of [ALPHA, BETA]) queues.set(domain, await createDomainQueue(stack.sqs, domain));
    for (const address of [`blocks@${ALPHA}`, `blocks@${BETA}`])
      await rule({ email_address: address, blocked_patterns: ['*@spam.test'] }, 'email-blocked-senders');
    daemon = await spawnDaemon({ domains: [ALPHA, BETA], env: daemonEnv({ ALLOWED_MAIL_BUCKETS: SHARED }) });
  });

  /**
   * SES stores the mail once and announces it on both domains' queues (one topic, two subscriptions): the object is
   * put with the first notification, later ones only enqueue the same body. Returns the outcome on `domain`.
   */
  const stored = new Map<string, string>();
  async function notify(
    domain: string,
    messageId: string,
    raw: Buffer,
    recipients: string[],
    source: string,
  ) {
    const queueUrl = queues.get(domain)?.queueUrl ?? '';
    const body = stored.get(messageId);
    let sqsMessageId: string;
    if (body === undefined) {
      const put = await putHostileMail(stack, {
        queueUrl,
        bucket: SHARED,
        raw,
        recipients,
        source,
        messageId,
      });
      stored.set(messageId, put.body);
      sqsMessageId = put.sqsMessageId;
    } else {
      const sent = await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }));
      sqsMessageId = sent.MessageId ?? '';
    }
    return daemon.waitForLog(
      (l) => typeof l.disposition === 'string' && l.sqsMessageId === sqsMessageId,
      30_000,
      `${domain}'s outcome`,
    );
  }

  const metadata = async (key: string) =>
    (await stack.s3.send(new HeadObjectCommand({ Bucket: SHARED, Key: key }))).Metadata ?? {};
  const exists = (key: string) =>
    stack.s3.send(new HeadObjectCommand({ Bucket: SHARED, Key: key })).then(
      () => true,
      () => false,
    );

  it("one domain's final verdict is not the other's: both deliver, each verdict recorded", async () => {
    const id = `shared-both-${Date.now()}`;
    const recipients = [`one@${ALPHA}`, `two@${BETA}`];
    const raw = Buffer.from(
      `From: a@external.test\r\nTo: ${recipients.join(', ')}\r\nSubject: shared\r\n\r\nhi\r\n`,
    );
    const alpha = await notify(ALPHA, id, raw, recipients, 'a@external.test');
    assert.equal(alpha.status, 'delivered');
    const beta = await notify(BETA, id, raw, recipients, 'a@external.test');
    assert.equal(beta.status, 'delivered', "not taken for a redelivery of the other domain's mail");
    await assertDeliveredRaw(`one@${ALPHA}`, raw);
    await assertDeliveredRaw(`two@${BETA}`, raw);
    assert.equal((await metadata(id)).domain_verdicts, `${ALPHA}=delivered,${BETA}=delivered`);
    // A redelivered notification of either is a duplicate again, for that domain.
    assert.equal((await notify(ALPHA, id, raw, recipients, 'a@external.test')).status, 'duplicate');
  });

  it('the object stays while another domain still needs it, and goes when every domain blocked the sender', async () => {
    const blockedEverywhere = `shared-blocked-${Date.now()}`;
    const recipients = [`blocks@${ALPHA}`, `blocks@${BETA}`];
    const raw = Buffer.from(
      `From: x@spam.test\r\nTo: ${recipients.join(', ')}\r\nSubject: spam\r\n\r\nbuy\r\n`,
    );
    assert.equal((await notify(ALPHA, blockedEverywhere, raw, recipients, 'x@spam.test')).status, 'blocked');
    assert.ok(await exists(blockedEverywhere), 'kept: beta has not decided yet');
    assert.equal((await metadata(blockedEverywhere)).domain_verdicts, `${ALPHA}=blocked`);
    assert.equal((await notify(BETA, blockedEverywhere, raw, recipients, 'x@spam.test')).status, 'blocked');
    await waitUntil(
      async () => !(await exists(blockedEverywhere)),
      5_000,
      'the object deleted once both blocked',
    );

    const blockedInAlpha = `shared-half-${Date.now()}`;
    const mixed = [`blocks@${ALPHA}`, `reads@${BETA}`];
    const half = Buffer.from(`From: x@spam.test\r\nTo: ${mixed.join(', ')}\r\nSubject: half\r\n\r\nhi\r\n`);
    assert.equal((await notify(ALPHA, blockedInAlpha, half, mixed, 'x@spam.test')).status, 'blocked');
    assert.ok(await exists(blockedInAlpha), 'kept for beta');
    assert.equal((await notify(BETA, blockedInAlpha, half, mixed, 'x@spam.test')).status, 'delivered');
    await assertDeliveredRaw(`reads@${BETA}`, half);
    assert.ok(await exists(blockedInAlpha), 'a delivered mail keeps its object');
    assert.equal((await metadata(blockedInAlpha)).domain_verdicts, `${ALPHA}=blocked,${BETA}=delivered`);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Header work, counted
// ---------------------------------------------------------------------------------------------------------------------

describe('header work is bounded whatever the header (counted, not timed)', () => {
  /** The text each costly parser was given while `work` ran, in characters, and the MIME walk's header bytes. */
  async function parserInput(work: () => Promise<void>) {
    const mailboxes = mock.method(headerParsers, 'mailboxes');
    const decoded = mock.method(headerParsers, 'decodeWords');
    const walked = mock.method(MailParser.prototype, 'write');
    try {
      await work();
      const chars = (calls: ReadonlyArray<{ arguments: unknown[] }>) =>
        calls.reduce((n, c) => n + String(c.arguments[0]).length, 0);
      const walkHeader = walked.mock.calls.reduce((n, c) => {
        const chunk = c.arguments[0] as Buffer;
        const end = chunk.indexOf('\r\n\r\n');
        return n + (end < 0 ? chunk.length : end);
      }, 0);
      return { mailboxes: chars(mailboxes.mock.calls), decoded: chars(decoded.mock.calls), walkHeader };
    } finally {
      mailboxes.mock.restore();
      decoded.mock.restore();
      walked.mock.restore();
    }
  }

  // What the bounds allow, whatever the header: From and Sender in the view, To and Cc together, From and Reply-To in
  // a forward, From for the bounce check; two decoded subjects and the display names of those one-mailbox fields;
  // the three MIME fields the body walk reads.
  const maxMailboxes = 5 * MAIL_LIMITS.mailboxFieldBytes + MAIL_LIMITS.recipientFieldBytes;
  const maxDecoded = 2 * MAIL_LIMITS.subjectChars + 4 * MAIL_LIMITS.mailboxFieldBytes;
  const maxWalkHeader = 3 * (MAIL_LIMITS.mimeFieldBytes + 32);

  for (const shape of SHAPES) {
    it(shape.name, async (t) => {
      const sizes = [MiB / 4, MiB - 8 * 1024].map((n) => shape.build(Math.floor(n)));
      const input = [];
      for (const raw of sizes)
        input.push(await parserInput(() => headerWork(raw, shape.source ?? SHAPE_SOURCE)));
      t.diagnostic(`${shape.name}: ${JSON.stringify(input)}`);
      const [quarter, whole] = input as [(typeof input)[0], (typeof input)[0]];
      assert.ok(whole.mailboxes <= maxMailboxes, `${whole.mailboxes} characters to the address parser`);
      assert.ok(whole.decoded <= maxDecoded, `${whole.decoded} characters to the RFC 2047 decoder`);
      assert.ok(whole.walkHeader <= maxWalkHeader, `${whole.walkHeader} header bytes to the MIME walk`);
      // Four times the header does not cost four times the parsing: what the parsers get stops at their bounds.
      assert.ok(whole.mailboxes <= Math.max(4 * quarter.mailboxes, maxMailboxes));
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------------
// The last line of defence
// ---------------------------------------------------------------------------------------------------------------------

describe('unexpected errors in the built daemon', () => {
  const D = 'defence.test';
  let queue: DomainQueue;
  before(async () => {
    queue = await createDomainQueue(stack.sqs, D, { visibilityTimeout: 60 });
  });
  const putOne = (recipient: string) =>
    putHostileMail(stack, {
      queueUrl: queue.queueUrl,
      bucket: 'defence-test-emails',
      raw: Buffer.from(`From: a@external.test\r\nTo: ${recipient}\r\nSubject: defence\r\n\r\nhi\r\n`),
      recipients: [recipient],
      source: 'a@external.test',
    });
  const inFlight = async () => {
    await waitUntil(
      async () => (await queueCounts(stack.sqs, queue.queueUrl)).inFlight === 1,
      20_000,
      'mail in flight',
    );
  };
  const spawn = () =>
    spawnDaemon({
      domains: [D],
      env: daemonEnv({ UNSAFE_TEST_HOOKS: 'true', SHUTDOWN_GRACE_SECONDS: '30' }),
    });

  it('restarts only the poller thread that had an unhandled rejection, and the main thread drains on its own', async () => {
    sink.setDataDelay(0);
    const daemon = await spawn();
    assert.equal((await daemon.request('POST', `/debug/crash?domain=${D}&how=rejection`)).status, 202);
    const crashedAt = Date.now();
    await daemon.waitForLog((l) => l.msg === 'poller thread died; restarting', 10_000, 'the thread restart');
    await waitUntil(
      async () => (await daemon.request('GET', '/health')).status === 200,
      20_000,
      'healthy again',
    );
    assert.equal(sumMetric(await daemon.metrics(), 'ses_worker_poller_restarts_total', { domain: D }), 1);
    await outlastDeadPoll(crashedAt);
    await putOne(`after-rejection@${D}`);
    await waitUntil(
      () => deliveriesTo(`after-rejection@${D}`).length === 1,
      20_000,
      'delivery after the restart',
    );
    assert.equal(daemon.exit, undefined, 'the process lives on');

    // An uncaught exception in the main thread, while a delivery is under way: it drains, then exits 70.
    sink.setDataDelay(3_000);
    await putOne(`in-flight@${D}`);
    await inFlight();
    assert.equal((await daemon.request('POST', '/debug/fail-main?how=exception')).status, 202);
    const exit = await daemon.exited;
    const exitedAt = Date.now();
    sink.setDataDelay(0);
    assert.deepEqual(exit, { code: 70, signal: null }, daemon.describe());
    const fatal = daemon.logs.find((l) => l.level === 'fatal');
    assert.match(
      String((fatal?.err as { stack?: string } | undefined)?.stack),
      /main thread failed on request/,
    );
    assert.ok(daemon.logs.some((l) => l.msg === 'shutting down: draining in-flight messages'));
    const copies = deliveriesTo(`in-flight@${D}`);
    assert.equal(copies.length, 1, 'the in-flight mail was delivered during the drain');
    assert.ok((copies[0]?.receivedAt ?? Infinity) <= exitedAt);
    assert.deepEqual(
      await queueCounts(stack.sqs, queue.queueUrl),
      { visible: 0, inFlight: 0 },
      'and deleted',
    );
  });

  it('exits at once on a second unexpected error while draining, leaving the mail in the queue', async () => {
    sink.setDataDelay(15_000);
    const daemon = await spawn();
    await putOne(`second@${D}`);
    await inFlight();
    assert.equal((await daemon.request('POST', '/debug/fail-main?how=rejection')).status, 202);
    await daemon.waitForLog((l) => l.level === 'fatal', 5_000, 'the first fatal line');
    await daemon.request('POST', '/debug/fail-main?how=exception').catch(() => undefined);
    const exit = await daemon.exited;
    sink.setDataDelay(0);
    assert.deepEqual(exit, { code: 70, signal: null }, daemon.describe());
    assert.equal(deliveriesTo(`second@${D}`).length, 0, 'exited before the delivery finished');
    const counts = await queueCounts(stack.sqs, queue.queueUrl);
    assert.equal(counts.visible + counts.inFlight, 1, 'the unfinished mail is still in the queue');
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------------------------------------

/** Writes the request, half-closes, and returns what the server answered before closing ('' for nothing). */
function fire(port: number, request: FuzzRequest): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.end(request.bytes));
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(done, 5_000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', done);
    socket.on('error', done);
  });
}

/** A slow client: sends part of a request and waits. */
function stall(port: number, request: FuzzRequest): net.Socket {
  const socket = net.connect(port, '127.0.0.1', () => socket.write(request.bytes));
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  return socket;
}
