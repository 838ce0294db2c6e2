/**
 * Where the BUILT daemon's out-of-office reply goes (`npm run build` first): to the envelope sender SES reported
 * (RFC 3834 §4, as docker-mailserver's own Pigeonhole vacation does), with the display name of a From or Sender field
 * naming that address, never to From or Reply-To; and what an operator sees when there is none (the S3 audit
 * metadata, the effect counter by reason). SES (aws-ses-v2-local behind a recording proxy) shows each reply's
 * destination and bytes.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { createDomainQueue, startStack, type TestStack } from '../harness/emulators.ts';
import { sumMetric } from '../harness/hostile-input.ts';
import type { LogLine } from '../harness/pipeline-rig.ts';
import { putMail } from '../harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const DOMAIN = 'ooo.test';
const AWAY = `away@${DOMAIN}`;

let stack: TestStack;
let sink: SmtpSink;
let daemon: DaemonProcess;

before(async () => {
  stack = await startStack({ tables: true });
  sink = await startSmtpSink();
  await createDomainQueue(stack.sqs, DOMAIN);
  await stack.ddb.send(
    new PutCommand({
      TableName: 'email-rules',
      Item: { email_address: AWAY, ooo_active: true, ooo_message: 'Away until Monday.' },
    }),
  );
  daemon = await spawnDaemon({
    domains: [DOMAIN],
    env: {
      ...stack.env,
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(sink.port),
      INTERNAL_SMTP_PORT: String(sink.port),
      RULES_CACHE_SECONDS: '0',
      LOOP_MARKER_SECRET: 'out-of-office-suite-secret-0123456789',
    },
  });
});
after(async () => {
  await killAllDaemons();
  await sink?.stop();
  await stack?.stop();
});

/** Sends a mail to the out-of-office mailbox with the given header lines and envelope sender; its outcome line. */
async function send(
  headers: string,
  source: string,
): Promise<{ outcome: LogLine; messageId: string; key: string }> {
  const raw = Buffer.from(
    `${headers}To: ${AWAY}\r\nSubject: question\r\nMessage-ID: <${randomUUID()}@x>\r\n\r\nHi\r\n`,
  );
  const put = await putMail(stack, { domain: DOMAIN, raw, recipients: [AWAY], source, shape: 'sns-s3' });
  const outcome = await daemon.waitForLog(
    (l) => typeof l.disposition === 'string' && l.sesMessageId === put.messageId,
    30_000,
    `the outcome of ${put.messageId}`,
  );
  return { outcome, messageId: put.messageId, key: put.key ?? '' };
}

/** The reply SES got for a mail: its destinations and its To header, unfolded. */
function replyTo(destination: string): { destinations: string[]; to: string } {
  const reply = stack.ses.sent.find((m) => m.destinations.includes(destination));
  assert.ok(reply, `a reply sent to ${destination}`);
  const head = reply.raw
    .subarray(0, reply.raw.indexOf('\r\n\r\n'))
    .toString('utf8')
    .replace(/\r\n(?=[ \t])/g, '');
  return { destinations: reply.destinations, to: /^To: (.*)$/m.exec(head)?.[1] ?? '' };
}

describe('the out-of-office reply answers the envelope sender', () => {
  it('envelope = From: to that address, with the From display name (Reply-To ignored)', async () => {
    const { outcome } = await send(
      'From: "A Author" <author1@sender.test>\r\nReply-To: Help Desk <help@sender.test>\r\n',
      'author1@sender.test',
    );
    assert.deepEqual(
      outcome.effects?.map((e) => [e.kind, e.target, e.status]),
      [['autoreply', 'author1@sender.test', 'sent']],
    );
    const reply = replyTo('author1@sender.test');
    assert.deepEqual(reply.destinations, ['author1@sender.test']);
    assert.equal(reply.to, 'A Author <author1@sender.test>');
    assert.ok(!stack.ses.sent.some((m) => m.destinations.includes('help@sender.test')), 'not to Reply-To');
  });

  it('envelope = Sender: to the secretary who sent it, with the Sender display name, not to the author', async () => {
    const { outcome } = await send(
      'From: "A Author" <author2@sender.test>\r\nSender: "A Secretary" <secretary2@sender.test>\r\n',
      'secretary2@sender.test',
    );
    assert.equal(outcome.effects?.[0]?.target, 'secretary2@sender.test');
    const reply = replyTo('secretary2@sender.test');
    assert.deepEqual(reply.destinations, ['secretary2@sender.test']);
    assert.equal(reply.to, 'A Secretary <secretary2@sender.test>');
    assert.ok(!stack.ses.sent.some((m) => m.destinations.includes('author2@sender.test')), 'not to From');
  });

  it('envelope in no header: to the bare envelope address', async () => {
    const { outcome } = await send('From: "A Author" <author3@sender.test>\r\n', 'other3@sender.test');
    assert.equal(outcome.effects?.[0]?.target, 'other3@sender.test');
    const reply = replyTo('other3@sender.test');
    assert.deepEqual(reply.destinations, ['other3@sender.test']);
    assert.equal(reply.to, 'other3@sender.test');
  });

  it('no envelope sender, or an unusable one: no reply, and the reason in the log, the S3 metadata and the metric', async () => {
    const attempts = stack.ses.sendAttempts;
    const cases = [
      { source: '', reason: 'empty-sender' },
      { source: 'evil\r\nRCPT TO:<victim@x.test>@sender.test', reason: 'unusable-sender' },
    ];
    for (const c of cases) {
      const { outcome, key } = await send('From: "A Author" <author4@sender.test>\r\n', c.source);
      assert.equal(outcome.status, 'delivered', 'the mail itself is delivered');
      assert.deepEqual(
        outcome.effects?.map((e) => [e.kind, e.status, e.reason]),
        [['autoreply', 'suppressed', c.reason]],
      );
      const head = await stack.s3.send(
        new HeadObjectCommand({ Bucket: `${DOMAIN.replaceAll('.', '-')}-emails`, Key: key }),
      );
      assert.equal(head.Metadata?.suppressed_effects, `autoreply:${AWAY}:${c.reason}`);
      assert.equal(
        sumMetric(await daemon.metrics(), 'ses_worker_effects_total', {
          domain: DOMAIN,
          kind: 'autoreply',
          status: 'suppressed',
          reason: c.reason,
        }),
        1,
      );
    }
    assert.equal(stack.ses.sendAttempts, attempts, 'nothing went out');
    assert.ok(!stack.ses.sent.some((m) => m.destinations.includes('author4@sender.test')), 'not to From');
  });
});
