/**
 * End to end against a real mail server: the pipeline (test/harness/pipeline-rig.ts, wired like the daemon) reads
 * from the emulators (SQS, S3, DynamoDB, SES) and delivers into a real Postfix + Dovecot started from the Debian
 * packages by scripts/mailserver/start.sh, on free loopback ports, with its root under a temporary directory.
 * Assertions read the Maildir files Dovecot writes, counting copies per Message-ID, and Dovecot's log of what the
 * shipped Sieve script (docker/mailserver/before.dovecot.sieve) stored and discarded. The real mail server's answers
 * are checked here against the classifier: an unconfigured domain, an unknown mailbox, a content rejection.
 * The kill -9 proofs against the same real server are in exactly-once.test.ts.
 *
 * Needs root and the packages of scripts/mailserver/install.sh. Without them the whole file is skipped, unless CI
 * is set: then it fails, so a CI machine that lost the packages cannot go green by skipping.
 * E2E_KEEP_MAILSERVER=1 leaves the mail server's directory (configs, logs, Maildirs) in place and prints its path.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';

import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import nodemailer from 'nodemailer';

import { deliveryId } from '../../src/pipeline/delivery-id.ts';
import { createDomainQueue, waitUntil, type TestStack } from '../harness/emulators.ts';
import { startRig, type LogLine, type MailServerRig } from '../harness/pipeline-rig.ts';
import { ledgerRecord } from '../harness/ledger-record.ts';
import { buildMime, putMail, type MimeInput, type PutMailResult } from '../harness/ses-events.ts';
import { stripVerdicts } from '../harness/verdict-lines.ts';
import {
  acceptedBy,
  bodyOf,
  copiesByMessageId,
  headerBlock,
  inCi,
  maildirMessages,
  postfixQueueId,
  sendmail,
  sieveActions,
  splitTrace,
  unavailableReason,
  useMailServerAndStack,
  waitForMaildir,
  waitUntilPostfixIdle,
  type MailServerAndStack,
} from './real-mailserver.ts';

const DOMAIN = 'example.com';
/** The deployment secret of the SMTP rig: it keys the delivery ids. */
const E2E_SECRET = 'e2e-deployment-secret-0123456789';
const OTHER = 'another.com';
/** Served by the worker, unknown to Postfix and Dovecot: a domain not (yet) configured in docker-mailserver. */
const UNCONFIGURED = 'unconfigured.test';
/** Queue names of the LMTP rig, so it never sees the SMTP rig's messages. */
const LMTP_QUEUE_TEMPLATE = '{domain}-lmtp-queue';

const unavailable = unavailableReason();
const skip = unavailable !== undefined && !inCi ? `real mail server unavailable: ${unavailable}` : false;

// ---------------------------------------------------------------------------------------------------------------------
// Pipeline helpers
// ---------------------------------------------------------------------------------------------------------------------

async function mail(input: Partial<MimeInput> = {}): Promise<Buffer> {
  return buildMime({
    from: 'Sender <sender@external.test>',
    to: `alice@${DOMAIN}`,
    subject: 'Hello',
    // Lines starting with a dot exercise SMTP/LMTP dot-stuffing on the way in and out of Postfix.
    text: 'Line one\r\n.\r\n..two dots\r\n.leading dot\r\nLine two\r\n',
    ...input,
  });
}

/** A subject that finds exactly this test's message in a Maildir. */
function uniqueSubject(what: string): string {
  return `e2e ${what} ${randomUUID()}`;
}

async function metadataOf(stack: TestStack, put: PutMailResult): Promise<Record<string, string>> {
  const head = await stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
  return head.Metadata ?? {};
}

/** Whether the SQS message is still in its queue (ready, delayed or in flight). */
function inQueue(stack: TestStack, put: PutMailResult): boolean {
  const name = new URL(put.queueUrl).pathname.split('/').pop() ?? '';
  const queue = stack.fauxqs.server.inspectQueue(name);
  assert.ok(queue, `queue ${name} exists`);
  const { ready, delayed, inflight } = queue.messages;
  return [...ready, ...delayed, ...inflight.map((m) => m.message)].some(
    (m) => m.messageId === put.sqsMessageId,
  );
}

function states(outcome: LogLine): Record<string, string> {
  return Object.fromEntries((outcome.recipients ?? []).map((r) => [r.recipient, r.state]));
}

function codes(outcome: LogLine): Record<string, number | undefined> {
  return Object.fromEntries((outcome.recipients ?? []).map((r) => [r.recipient, r.code]));
}

// ---------------------------------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------------------------------

// A skipped suite shows up in no count; a skipped test shows up as `# skipped 1` with the reason.
if (skip) it('e2e: pipeline into a real Postfix + Dovecot', { skip }, () => {});
else
  describe('e2e: pipeline into a real Postfix + Dovecot', () => {
    /** Queue URLs of the LMTP rig, by domain. */
    const lmtpQueues = new Map<string, string>();
    const { mailServer, emulators } = useMailServerAndStack(
      { tables: true, domains: [DOMAIN, OTHER, UNCONFIGURED], queueOptions: { visibilityTimeout: 30 } },
      {
        async afterStart(env: MailServerAndStack) {
          for (const domain of [DOMAIN, OTHER, UNCONFIGURED]) {
            const queue = await createDomainQueue(env.emulators().sqs, domain, {
              template: LMTP_QUEUE_TEMPLATE,
              visibilityTimeout: 30,
            });
            lmtpQueues.set(domain, queue.queueUrl);
          }
          const server = env.mailServer();
          console.log(
            `mail server: smtp ${server.smtpPort}, internal ${server.internalPort}, lmtp ${server.lmtpPort}; started in ${server.startMs} ms`,
          );
        },
      },
    );

    describe('DELIVERY_PROTOCOL=smtp (Postfix)', () => {
      let rig: MailServerRig | undefined;
      const smtpRig = (): MailServerRig => {
        assert.ok(rig, 'rig started');
        return rig;
      };

      before(async () => {
        rig = await startRig({
          domains: [DOMAIN, OTHER, UNCONFIGURED],
          stack: emulators(),
          mailServer: mailServer(),
          env: { LOOP_MARKER_SECRET: E2E_SECRET },
        });
      });
      after(async () => {
        await rig?.stop();
      });

      it('delivers over SMTP into the Maildir: the original bytes follow the trace and verdict headers', async () => {
        const subject = uniqueSubject('smtp');
        const raw = await mail({
          subject,
          attachments: [{ filename: 'a.bin', content: Buffer.alloc(3000, 7) }],
        });
        assert.ok(raw.includes('\r\n..two dots\r\n'), 'the mail has lines starting with a dot');
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw,
          recipients: [`alice@${DOMAIN}`],
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        const outcome = await smtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'delivered');
        assert.equal(outcome.disposition, 'delete');

        const stored = await waitForMaildir(mailServer(), `alice@${DOMAIN}`, subject);
        assert.match(stored.path, /\/mail\/example\.com\/alice\/new\/[^/]+$/);
        const { trace, rest } = splitTrace(stored.content);
        assert.equal(trace[0], 'Return-Path: <sender@external.test>');
        assert.equal(trace[1], `Delivered-To: alice@${DOMAIN}`);
        assert.equal(trace.length, 4, `Dovecot's and Postfix's Received headers:\n${trace.join('\n')}`);
        assert.match(trace[2] ?? '', /with LMTP/);
        assert.match(trace[3] ?? '', /\(Postfix\) with E?SMTP id/);
        assert.ok(stripVerdicts(rest).equals(raw), 'the original bytes, unchanged');
        assert.equal(await acceptedBy(mailServer(), postfixQueueId(trace)), 'worker');
        const info = await stat(stored.path);
        assert.equal(info.uid, 8, 'Dovecot writes as mail (uid 8)');
        assert.equal(info.mode & 0o777, 0o600);

        // A plain delivery: the verdict is in the ledger record, the S3 object keeps none.
        assert.deepEqual(await metadataOf(emulators(), put), {});
        assert.equal((await ledgerRecord(emulators(), put.messageId, DOMAIN))?.verdict, 'delivered');
        await waitUntil(() => !inQueue(emulators(), put), 5000, 'the SQS message to be deleted');
      });

      it('delivers a 5 MB mail byte for byte', async () => {
        const subject = uniqueSubject('large');
        const raw = await mail({
          subject,
          attachments: [{ filename: 'big.bin', content: Buffer.alloc(5 * 1024 * 1024, 0xa5) }],
        });
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw,
          recipients: [`bob@${DOMAIN}`],
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        const outcome = await smtpRig().outcome(put.messageId, 30_000);
        assert.equal(outcome.status, 'delivered');
        const stored = await waitForMaildir(mailServer(), `bob@${DOMAIN}`, subject);
        assert.ok(
          stripVerdicts(splitTrace(stored.content).rest).equals(raw),
          'the original bytes, unchanged',
        );
      });

      it('records users Postfix rejects (unknown user, 550 hook) as invalid and deletes the message', async () => {
        const subject = uniqueSubject('unknown');
        const recipients = [`alice@${DOMAIN}`, `nobody@${DOMAIN}`, `gone@${DOMAIN}`];
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw: await mail({ subject, to: recipients }),
          recipients,
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        const outcome = await smtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'partial');
        assert.equal(outcome.disposition, 'delete');
        assert.deepEqual(states(outcome), {
          [`alice@${DOMAIN}`]: 'delivered',
          [`nobody@${DOMAIN}`]: 'invalid',
          [`gone@${DOMAIN}`]: 'invalid',
        });
        assert.equal(codes(outcome)[`nobody@${DOMAIN}`], 550);
        assert.equal(codes(outcome)[`gone@${DOMAIN}`], 550);
        const metadata = await metadataOf(emulators(), put);
        assert.equal(metadata.status, 'partial');
        assert.deepEqual(metadata.invalid_inboxes?.split(',').sort(), [`gone@${DOMAIN}`, `nobody@${DOMAIN}`]);
        await waitUntil(() => !inQueue(emulators(), put), 5000, 'the SQS message to be deleted');
        await waitForMaildir(mailServer(), `alice@${DOMAIN}`, subject);
      });

      it('keeps the message in the queue when Postfix answers 451 (busy@example.com)', async () => {
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw: await mail({ subject: uniqueSubject('busy'), to: `busy@${DOMAIN}` }),
          recipients: [`busy@${DOMAIN}`],
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        const outcome = await smtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'deferred');
        assert.equal(outcome.disposition, 'retry');
        assert.equal(outcome.recipients?.[0]?.state, 'deferred');
        assert.equal(outcome.recipients?.[0]?.code, 451);
        assert.ok(inQueue(emulators(), put), 'the SQS message is still there');
        const metadata = await metadataOf(emulators(), put);
        assert.equal(metadata.processed, undefined, 'no final verdict in S3');
      });

      it('a domain Postfix is not configured for (554 5.7.1 Relay access denied): parked in its queue, the domain degraded, not invalid', async () => {
        const to = `someone@${UNCONFIGURED}`;
        const put = await putMail(emulators(), {
          domain: UNCONFIGURED,
          raw: await mail({ subject: uniqueSubject('unconfigured'), to }),
          recipients: [to],
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        const outcome = await smtpRig().outcome(put.messageId);
        // The mail server refusing the domain is an outage of the deployment, not the mail's fault: the message is
        // kept invisible and retried in place when the domain is accepted, its receive count untouched.
        assert.equal(outcome.disposition, 'park');
        assert.equal(outcome.status, 'deferred');
        assert.equal(outcome.recipients?.[0]?.state, 'deferred');
        assert.equal(outcome.recipients?.[0]?.code, 554);
        assert.match(
          String(outcome.recipients?.[0]?.detail),
          /554 5\.7\.1 <someone@unconfigured\.test>: Relay access denied/,
        );
        const status = smtpRig().runtimes.get(UNCONFIGURED)?.poller.getStatus();
        assert.match(status?.degraded ?? '', /Relay access denied/, 'the domain is degraded with the reply');
        assert.equal(
          smtpRig().runtimes.get(DOMAIN)?.poller.getStatus().degraded,
          undefined,
          'only that domain',
        );
        assert.ok(inQueue(emulators(), put), 'the SQS message is still there');
        assert.equal((await metadataOf(emulators(), put)).status, undefined, 'no verdict in S3');
      });

      it('a content rejection after DATA (Postfix header_checks REJECT) is final for the mail and recorded in S3', async () => {
        const subject = uniqueSubject('rejected');
        const recipients = [`alice@${DOMAIN}`, `bob@${DOMAIN}`];
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw: await mail({ subject, to: recipients, headers: { 'X-E2E-Reject': 'yes' } }),
          recipients,
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        const outcome = await smtpRig().outcome(put.messageId);
        assert.equal(outcome.disposition, 'delete');
        assert.equal(outcome.status, 'rejected');
        assert.deepEqual(states(outcome), { [`alice@${DOMAIN}`]: 'rejected', [`bob@${DOMAIN}`]: 'rejected' });
        const metadata = await metadataOf(emulators(), put);
        assert.equal(metadata.status, 'rejected');
        assert.equal(
          metadata.content_rejected,
          recipients.map((r) => `${r}: 550 5.7.1 Message content rejected (simulated)`).join(' | '),
        );
        await waitUntil(() => !inQueue(emulators(), put), 5000, 'the SQS message to be deleted');
        for (const r of recipients) {
          const stored = await maildirMessages(mailServer(), r);
          assert.ok(!stored.some((m) => m.content.includes(Buffer.from(subject))), `no copy for ${r}`);
        }
      });

      it('the shipped Sieve script keeps one copy per delivery id, on both Postfix ports, and ignores forged copies below ours', async () => {
        const id = `deliver.${randomUUID().replaceAll('-', '')}`;
        const copy = (messageId: string, forged?: string) =>
          Buffer.from(
            `X-SES-Worker-Delivery-Id: ${id}\r\nFrom: sender@external.test\r\nTo: bob@${DOMAIN}\r\n` +
              `Subject: sieve ${messageId}\r\nMessage-ID: <${messageId}@e2e.test>\r\n` +
              (forged ? `X-SES-Worker-Delivery-Id: ${forged}\r\n` : '') +
              '\r\nbody\r\n',
          );
        const send = async (port: number, raw: Buffer) => {
          const transport = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
          try {
            await transport.sendMail({
              envelope: { from: 'sender@external.test', to: [`bob@${DOMAIN}`] },
              raw,
            });
          } finally {
            transport.close();
          }
        };
        const first = `sieve-first-${randomUUID()}`;
        const again = `sieve-again-${randomUUID()}`;
        const forgedBelow = `sieve-forged-${randomUUID()}`;
        await send(mailServer().smtpPort, copy(first));
        await send(mailServer().internalPort, copy(again));
        await send(mailServer().smtpPort, copy(again));
        // A sender's own copy of the field, below ours, naming the id above: not looked at.
        const otherId = `deliver.${randomUUID().replaceAll('-', '')}`;
        await send(
          mailServer().smtpPort,
          Buffer.from(copy(forgedBelow, id).toString('latin1').replace(id, otherId), 'latin1'),
        );
        await waitUntilPostfixIdle(mailServer());
        const counts = await copiesByMessageId(mailServer(), `bob@${DOMAIN}`);
        assert.equal(counts.get(`${first}@e2e.test`), 1, 'the first copy is kept');
        assert.equal(
          counts.get(`${again}@e2e.test`),
          undefined,
          'copies with an id already seen are discarded',
        );
        assert.equal(counts.get(`${forgedBelow}@e2e.test`), 1, 'a forged field below ours changes nothing');
        const actions = await sieveActions(mailServer(), `bob@${DOMAIN}`, /^sieve-/);
        assert.deepEqual(actions, { stored: 2, discarded: 2 });
      });

      it("a copied delivery id arriving any other way (port 25, submission, sendmail) is delivered without it; the worker's copy still arrives, and its second copy is dropped", async () => {
        const tag = randomUUID();
        const subject = uniqueSubject('copied id');
        const alice = `alice@${DOMAIN}`;
        const bob = `bob@${DOMAIN}`;
        const raw = await mail({ subject, to: [alice, bob], messageId: `real-${tag}@external.test` });
        // 1. bob's copy arrives first: it shows the delivery id, one for every recipient of the mail.
        const sesId = `copied-${tag}`.replaceAll('-', '');
        const put = (recipient: string) =>
          putMail(emulators(), {
            domain: DOMAIN,
            raw,
            recipients: [recipient],
            source: 'sender@external.test',
            shape: 'sns-s3',
            messageId: sesId,
          });
        await smtpRig().outcome((await put(bob)).messageId);
        const bobCopy = splitTrace((await waitForMaildir(mailServer(), bob, subject)).content).rest;
        const id = /^X-SES-Worker-Delivery-Id: (\S+)\r?$/m.exec(headerBlock(bobCopy))?.[1];
        assert.ok(id, 'the worker marked its copy');
        assert.notEqual(
          id,
          deliveryId(sesId, 0, { kind: 'deliver' }),
          'keyed: not computable from the SES id',
        );

        // 2. bob sends alice mail carrying that id first, every other way into the mail server.
        const forged = (how: string) =>
          Buffer.from(
            `X-SES-Worker-Delivery-Id: ${id}\r\nFrom: ${bob}\r\nTo: ${alice}\r\nSubject: forged ${how}\r\n` +
              `Message-ID: <copied-${how}-${tag}@example.com>\r\n\r\nbody\r\n`,
          );
        const smtp = async (port: number, how: string) => {
          const transport = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
          try {
            await transport.sendMail({ envelope: { from: bob, to: [alice] }, raw: forged(how) });
          } finally {
            transport.close();
          }
        };
        await smtp(mailServer().publicPort, 'port25');
        await smtp(mailServer().submissionPort, 'submission');
        await sendmail(mailServer(), bob, alice, forged('sendmail'));
        await waitUntilPostfixIdle(mailServer());

        // 3. the worker's copy for alice (a retry of the same mail) is delivered, not taken for a duplicate.
        const outcome = await smtpRig().outcome((await put(alice)).messageId);
        assert.equal(outcome.status, 'delivered');
        const aliceCopy = await waitForMaildir(mailServer(), alice, subject);
        // 4. a second copy the worker hands over (the crash window the ledger cannot close) is still dropped.
        const again = splitTrace(aliceCopy.content).rest;
        const transport = nodemailer.createTransport({
          host: '127.0.0.1',
          port: mailServer().smtpPort,
          ignoreTLS: true,
        });
        try {
          await transport.sendMail({ envelope: { from: 'sender@external.test', to: [alice] }, raw: again });
        } finally {
          transport.close();
        }
        await waitUntilPostfixIdle(mailServer());

        const stored = (await maildirMessages(mailServer(), alice)).filter((m) => m.content.includes(tag));
        const subjects = stored.map((m) => /^Subject: (.*)\r$/m.exec(headerBlock(m.content))?.[1]).sort();
        assert.deepEqual(subjects, ['forged port25', 'forged sendmail', 'forged submission', subject].sort());
        for (const m of stored.filter((x) => x.content.includes(Buffer.from('Subject: forged '))))
          assert.doesNotMatch(
            headerBlock(m.content),
            /^X-SES-Worker-Delivery-Id:/im,
            'removed on the way in',
          );
        assert.match(
          headerBlock(splitTrace(aliceCopy.content).rest),
          new RegExp(`^X-SES-Worker-Delivery-Id: ${id}\r?$`, 'm'),
        );
        const actions = await sieveActions(mailServer(), alice, new RegExp(`${tag}@`));
        assert.deepEqual(actions, { stored: 4, discarded: 1 });
      });

      it('keeps every delivery-id mark while several senders deliver to one mailbox at once (as replicas do)', async () => {
        // Dovecot loses marks when two deliveries to one user overlap, and its lmtp_user_concurrency_limit check is
        // racy across connections; Postfix (user-patches.sh: one LMTP delivery per recipient) is what serialises.
        // Three connections in lockstep, each mail twice: every second copy must be discarded.
        const SENDERS = 3;
        const ROUNDS = 40;
        const mailbox = `alice@${DOMAIN}`;
        const prefix = `lockstep-${randomUUID()}`;
        const transports = Array.from({ length: SENDERS }, () =>
          nodemailer.createTransport({
            host: '127.0.0.1',
            port: mailServer().smtpPort,
            ignoreTLS: true,
            pool: true,
            maxConnections: 1,
          }),
        );
        const copy = (n: number) =>
          Buffer.from(
            `X-SES-Worker-Delivery-Id: deliver.${prefix}-${n}\r\nFrom: sender@external.test\r\nTo: ${mailbox}\r\n` +
              `Subject: lockstep ${n}\r\nMessage-ID: <${prefix}-${n}@e2e.test>\r\n\r\nbody\r\n`,
          );
        try {
          for (const pass of [1, 2]) {
            for (let round = 0; round < ROUNDS; round += 1) {
              await Promise.all(
                transports.map((transport, sender) =>
                  transport.sendMail({
                    envelope: { from: 'sender@external.test', to: [mailbox] },
                    raw: copy(round * SENDERS + sender),
                  }),
                ),
              );
            }
            if (pass === 1) await waitUntilPostfixIdle(mailServer());
          }
        } finally {
          for (const transport of transports) transport.close();
        }
        await waitUntilPostfixIdle(mailServer());
        const counts = [...(await copiesByMessageId(mailServer(), mailbox))].filter(([id]) =>
          id.startsWith(prefix),
        );
        const twice = counts.filter(([, n]) => n > 1).map(([id]) => id);
        assert.equal(counts.length, SENDERS * ROUNDS, 'every mail stored');
        assert.deepEqual(twice, [], 'mails stored twice: a delivery-id mark was lost');
        const escaped = prefix.replaceAll('-', '\\-');
        const actions = await sieveActions(mailServer(), mailbox, new RegExp(`^${escaped}-`));
        assert.deepEqual(actions, { stored: SENDERS * ROUNDS, discarded: SENDERS * ROUNDS });
      });

      it('forwards to carol@another.com through the internal port into her Maildir', async () => {
        await emulators().ddb.send(
          new PutCommand({
            TableName: 'email-rules',
            Item: { email_address: `bob@${DOMAIN}`, ooo_active: false, forwards: [`carol@${OTHER}`] },
          }),
        );
        const subject = uniqueSubject('forward');
        const raw = await mail({
          subject,
          to: `bob@${DOMAIN}`,
          attachments: [{ filename: 'i.pdf', content: Buffer.alloc(2000, 1) }],
        });
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw,
          recipients: [`bob@${DOMAIN}`],
          source: 'sender@external.test',
          shape: 'sns-s3',
        });
        try {
          const outcome = await smtpRig().outcome(put.messageId);
          assert.equal(outcome.status, 'delivered');
          assert.deepEqual(
            outcome.effects?.map((e) => [e.kind, e.target, e.route, e.status]),
            [['forward', `carol@${OTHER}`, 'internal', 'sent']],
          );
          await waitForMaildir(mailServer(), `bob@${DOMAIN}`, subject);
          const forwarded = await waitForMaildir(mailServer(), `carol@${OTHER}`, subject);
          const { trace, rest } = splitTrace(forwarded.content);
          assert.equal(trace[0], `Return-Path: <bob@${DOMAIN}>`);
          assert.equal(trace[1], `Delivered-To: carol@${OTHER}`);
          assert.equal(await acceptedBy(mailServer(), postfixQueueId(trace)), 'internal');
          assert.match(
            rest.toString('latin1', 0, 100),
            /^X-SES-Worker-Delivery-Id: forward\.[0-9a-f]{32}\r\n/,
          );
          assert.match(headerBlock(rest), new RegExp(`^Subject: FWD: ${subject}$`, 'm'));
          assert.ok(bodyOf(rest).equals(bodyOf(raw)), 'body bytes preserved');
        } finally {
          await emulators().ddb.send(
            new PutCommand({
              TableName: 'email-rules',
              Item: { email_address: `bob@${DOMAIN}`, ooo_active: false },
            }),
          );
        }
      });

      it("auto-replies to an internal sender through the internal port into the sender's Maildir", async () => {
        await emulators().ddb.send(
          new PutCommand({
            TableName: 'email-rules',
            Item: {
              email_address: `carol@${OTHER}`,
              ooo_active: true,
              ooo_message: 'Carol is away until Monday.',
            },
          }),
        );
        const subject = uniqueSubject('ooo');
        const put = await putMail(emulators(), {
          domain: OTHER,
          raw: await mail({ from: `Bob <bob@${DOMAIN}>`, to: `carol@${OTHER}`, subject }),
          recipients: [`carol@${OTHER}`],
          source: `bob@${DOMAIN}`,
          shape: 'sns-s3',
        });
        try {
          const outcome = await smtpRig().outcome(put.messageId);
          assert.equal(outcome.status, 'delivered');
          assert.deepEqual(
            outcome.effects?.map((e) => [e.kind, e.target, e.route, e.status]),
            [['autoreply', `bob@${DOMAIN}`, 'internal', 'sent']],
          );
          await waitForMaildir(mailServer(), `carol@${OTHER}`, subject);
          const reply = await waitForMaildir(mailServer(), `bob@${DOMAIN}`, `Auto: ${subject}`);
          const { trace, rest } = splitTrace(reply.content);
          assert.equal(trace[0], 'Return-Path: <>', 'auto-replies use the null envelope sender');
          assert.equal(trace[1], `Delivered-To: bob@${DOMAIN}`);
          assert.equal(await acceptedBy(mailServer(), postfixQueueId(trace)), 'internal');
          assert.match(
            rest.toString('latin1', 0, 100),
            /^X-SES-Worker-Delivery-Id: autoreply\.[0-9a-f]{32}\r\n/,
          );
          const headers = headerBlock(rest);
          assert.match(headers, /^Auto-Submitted: auto-replied$/m);
          assert.match(headers, new RegExp(`^Subject: Auto: ${subject}$`, 'm'));
          assert.match(rest.toString('utf8'), /Carol is away until Monday\./);
        } finally {
          await emulators().ddb.send(
            new PutCommand({
              TableName: 'email-rules',
              Item: { email_address: `carol@${OTHER}`, ooo_active: false },
            }),
          );
        }
      });
    });

    describe('DELIVERY_PROTOCOL=lmtp (Dovecot)', () => {
      let rig: MailServerRig | undefined;
      const lmtpRig = (): MailServerRig => {
        assert.ok(rig, 'rig started');
        return rig;
      };

      before(async () => {
        rig = await startRig({
          domains: [DOMAIN, OTHER, UNCONFIGURED],
          stack: emulators(),
          mailServer: mailServer(),
          lmtp: true,
          env: { QUEUE_NAME_TEMPLATE: LMTP_QUEUE_TEMPLATE },
        });
      });
      after(async () => {
        await rig?.stop();
      });

      const lmtpQueueUrl = (domain: string): string => {
        const url = lmtpQueues.get(domain);
        assert.ok(url, `LMTP queue of ${domain}`);
        return url;
      };

      it('delivers over LMTP straight into Dovecot, one copy per recipient', async () => {
        const subject = uniqueSubject('lmtp');
        const recipients = [`alice@${DOMAIN}`, `bob@${DOMAIN}`];
        const raw = await mail({ subject, to: recipients });
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw,
          recipients,
          source: 'sender@external.test',
          shape: 'sns-s3',
          queueUrl: lmtpQueueUrl(DOMAIN),
        });
        const outcome = await lmtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'delivered');
        assert.deepEqual(states(outcome), {
          [`alice@${DOMAIN}`]: 'delivered',
          [`bob@${DOMAIN}`]: 'delivered',
        });
        for (const recipient of recipients) {
          const stored = await waitForMaildir(mailServer(), recipient, subject);
          const { trace, rest } = splitTrace(stored.content);
          // One transaction with two recipients: Dovecot stores one copy for both (hard links) and then adds neither
          // Delivered-To nor a `for <address>` clause.
          assert.equal(
            trace.length,
            2,
            `Return-Path and Dovecot's Received header only:\n${trace.join('\n')}`,
          );
          assert.equal(trace[0], 'Return-Path: <sender@external.test>');
          assert.match(trace[1] ?? '', /^Received: .*\r\n\tby mail\.example\.test with LMTP\r\n/);
          assert.ok(stripVerdicts(rest).equals(raw), `the original bytes, unchanged, for ${recipient}`);
        }
        await waitUntil(() => !inQueue(emulators(), put), 5000, 'the SQS message to be deleted');
      });

      it('over LMTP a domain Dovecot does not serve looks like an unknown mailbox: 550 5.1.1, invalid', async () => {
        const to = `someone@${UNCONFIGURED}`;
        const put = await putMail(emulators(), {
          domain: UNCONFIGURED,
          raw: await mail({ subject: uniqueSubject('lmtp-unconfigured'), to }),
          recipients: [to],
          source: 'sender@external.test',
          shape: 'sns-s3',
          queueUrl: lmtpQueueUrl(UNCONFIGURED),
        });
        const outcome = await lmtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'invalid');
        assert.equal(outcome.disposition, 'delete');
        assert.equal(outcome.recipients?.[0]?.code, 550);
        assert.match(String(outcome.recipients?.[0]?.detail), /550 5\.1\.1 .*User doesn't exist/);
        assert.equal((await metadataOf(emulators(), put)).invalid_inboxes, to);
      });

      it('a per-recipient 5xx after DATA (Dovecot quota, 552 5.2.2) rejects that recipient only, recorded in S3', async () => {
        const subject = uniqueSubject('lmtp-quota');
        const recipients = [`alice@${DOMAIN}`, `tiny@${DOMAIN}`];
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw: await mail({ subject, to: recipients, text: 'q'.repeat(4000) }),
          recipients,
          source: 'sender@external.test',
          shape: 'sns-s3',
          queueUrl: lmtpQueueUrl(DOMAIN),
        });
        const outcome = await lmtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'partial');
        assert.equal(outcome.disposition, 'delete');
        assert.deepEqual(states(outcome), {
          [`alice@${DOMAIN}`]: 'delivered',
          [`tiny@${DOMAIN}`]: 'rejected',
        });
        assert.equal(codes(outcome)[`tiny@${DOMAIN}`], 552);
        const metadata = await metadataOf(emulators(), put);
        assert.match(
          metadata.content_rejected ?? '',
          /^tiny@example\.com: 552 5\.2\.2 <tiny@example\.com> Quota exceeded/,
        );
        assert.equal(metadata.invalid_inboxes, undefined);
        await waitForMaildir(mailServer(), `alice@${DOMAIN}`, subject);
      });

      it('records a user Dovecot does not know (550) as invalid and deletes the message', async () => {
        const subject = uniqueSubject('lmtp-unknown');
        const recipients = [`bob@${DOMAIN}`, `ghost@${DOMAIN}`];
        const put = await putMail(emulators(), {
          domain: DOMAIN,
          raw: await mail({ subject, to: recipients }),
          recipients,
          source: 'sender@external.test',
          shape: 'sns-s3',
          queueUrl: lmtpQueueUrl(DOMAIN),
        });
        const outcome = await lmtpRig().outcome(put.messageId);
        assert.equal(outcome.status, 'partial');
        assert.equal(outcome.disposition, 'delete');
        assert.deepEqual(states(outcome), { [`bob@${DOMAIN}`]: 'delivered', [`ghost@${DOMAIN}`]: 'invalid' });
        assert.equal(codes(outcome)[`ghost@${DOMAIN}`], 550);
        const metadata = await metadataOf(emulators(), put);
        assert.equal(metadata.invalid_inboxes, `ghost@${DOMAIN}`);
        await waitUntil(() => !inQueue(emulators(), put), 5000, 'the SQS message to be deleted');
        await waitForMaildir(mailServer(), `bob@${DOMAIN}`, subject);
      });
    });
  });
