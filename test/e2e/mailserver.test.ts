/**
 * End to end against a real mail server: the pipeline (test/harness/pipeline-rig.ts, wired like the daemon) reads
 * from the emulators (SQS, S3, DynamoDB, SES) and delivers into a real Postfix + Dovecot started from the Debian
 * packages by scripts/mailserver/start.sh, on free loopback ports, with its root under a temporary directory.
 * Assertions read the Maildir files Dovecot writes.
 *
 * Needs root and the packages of scripts/mailserver/install.sh. Without them the whole file is skipped, unless CI
 * is set: then it fails, so a CI machine that lost the packages cannot go green by skipping.
 * E2E_KEEP_MAILSERVER=1 leaves the mail server's directory (configs, logs, Maildirs) in place and prints its path.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { PutCommand } from '@aws-sdk/lib-dynamodb';

import { createDomainQueue, startStack, waitUntil, type TestStack } from '../harness/emulators.ts';
import {
  startRig,
  type LogLine,
  type MailServerRig,
  type MailServerTarget,
} from '../harness/pipeline-rig.ts';
import { buildMime, putMail, type MimeInput, type PutMailResult } from '../harness/ses-events.ts';
import { stripVerdicts } from '../harness/verdict-lines.ts';

const DOMAIN = 'example.com';
const OTHER = 'another.com';
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const START_SCRIPT = join(REPO, 'scripts/mailserver/start.sh');
const STOP_SCRIPT = join(REPO, 'scripts/mailserver/stop.sh');
/** Postfix queues and delivers asynchronously; a delivery normally lands within a few hundred milliseconds. */
const MAILDIR_TIMEOUT_MS = 20_000;
/** Queue names of the LMTP rig, so it never sees the SMTP rig's messages. */
const LMTP_QUEUE_TEMPLATE = '{domain}-lmtp-queue';

const inCi = process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI.toLowerCase());

/** Why the real mail server cannot run here, or undefined when it can. */
function unavailableReason(): string | undefined {
  const missing = ['/usr/sbin/postfix', '/usr/sbin/postconf', '/usr/sbin/dovecot', '/usr/bin/doveadm'].filter(
    (bin) => !existsSync(bin),
  );
  if (missing.length > 0)
    return `${missing.join(', ')} not installed (run: sudo bash scripts/mailserver/install.sh)`;
  if (process.getuid?.() !== 0) return 'Postfix and the Maildir files (uid 8, mode 0600) need root';
  return undefined;
}

const unavailable = unavailableReason();
const skip = unavailable !== undefined && !inCi ? `real mail server unavailable: ${unavailable}` : false;

// ---------------------------------------------------------------------------------------------------------------------
// Mail server process and Maildir helpers
// ---------------------------------------------------------------------------------------------------------------------

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(file, args, { env, timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error)
        reject(new Error(`${file} ${args.join(' ')} failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolvePromise(stdout);
    });
  });
}

/** Ports nothing listens on right now (the kernel's choice for port 0, released again). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolvePromise, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolvePromise(server));
        }),
    ),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP port');
    return address.port;
  });
  await Promise.all(servers.map((server) => new Promise((done) => server.close(done))));
  return ports;
}

interface MailServer extends MailServerTarget {
  root: string;
  startMs: number;
}

async function startMailServer(): Promise<MailServer> {
  // The free ports could be taken by another process before Postfix binds them: try again with new ones then.
  for (let attempt = 1; ; attempt++) {
    const root = await mkdtemp(join(tmpdir(), 'uew-e2e-mailserver-'));
    const [smtpPort, internalPort, lmtpPort] = (await freePorts(3)) as [number, number, number];
    const started = Date.now();
    try {
      const stdout = await run(
        'bash',
        [START_SCRIPT, root],
        {
          ...process.env,
          MS_SMTP_PORT: String(smtpPort),
          MS_INTERNAL_PORT: String(internalPort),
          MS_LMTP_PORT: String(lmtpPort),
        },
        60_000,
      );
      const startMs = Date.now() - started;
      assert.match(stdout, new RegExp(`^MS_SMTP_PORT=${smtpPort}$`, 'm'), stdout);
      return { root, host: '127.0.0.1', smtpPort, internalPort, lmtpPort, startMs };
    } catch (error) {
      // Whatever did start (Dovecot before a Postfix failure) must not outlive the test.
      await run('bash', [STOP_SCRIPT, root], process.env, 60_000).catch(() => undefined);
      await rm(root, { recursive: true, force: true });
      if (attempt >= 3 || !/already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function stopMailServer(server: MailServer): Promise<void> {
  await run('bash', [STOP_SCRIPT, server.root], process.env, 60_000);
  if (process.env.E2E_KEEP_MAILSERVER) console.log(`mail server directory kept: ${server.root}`);
  else await rm(server.root, { recursive: true, force: true });
}

async function logTail(server: MailServer, name: string, lines = 25): Promise<string> {
  try {
    const text = await readFile(join(server.root, 'log', name), 'utf8');
    return `--- ${name}\n${text.split('\n').slice(-lines).join('\n')}`;
  } catch {
    return `--- ${name}: none`;
  }
}

async function logs(server: MailServer): Promise<string> {
  return `${await logTail(server, 'postfix.log')}\n${await logTail(server, 'dovecot.log')}`;
}

interface MaildirMessage {
  path: string;
  content: Buffer;
}

/** Messages in a mailbox's `new/` and `cur/` (Dovecot writes to `new/`). */
async function maildirMessages(server: MailServer, address: string): Promise<MaildirMessage[]> {
  const [user, domain] = address.split('@') as [string, string];
  const messages: MaildirMessage[] = [];
  for (const sub of ['new', 'cur']) {
    const dir = join(server.root, 'mail', domain, user, sub);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const path = join(dir, name);
      messages.push({ path, content: await readFile(path) });
    }
  }
  return messages;
}

/** Polls a mailbox until a message containing `marker` is there. */
async function waitForMaildir(server: MailServer, address: string, marker: string): Promise<MaildirMessage> {
  const needle = Buffer.from(marker);
  let found: MaildirMessage | undefined;
  try {
    await waitUntil(
      async () => {
        found = (await maildirMessages(server, address)).find((m) => m.content.includes(needle));
        return found !== undefined;
      },
      MAILDIR_TIMEOUT_MS,
      `a message with "${marker}" in ${address}'s Maildir`,
      50,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await logs(server)}`, { cause: error });
  }
  return found as MaildirMessage;
}

/** The header fields the mail server puts on top of what it was given. */
const TRACE_HEADERS = new Set(['return-path', 'delivered-to', 'received']);

/** Splits the trace header fields Postfix/Dovecot prepended off a stored message. */
function splitTrace(content: Buffer): { trace: string[]; rest: Buffer } {
  const trace: string[] = [];
  let offset = 0;
  for (;;) {
    const end = content.indexOf('\r\n', offset);
    if (end < 0) break;
    const line = content.subarray(offset, end).toString('latin1');
    const name = /^([^:\s]+):/.exec(line)?.[1]?.toLowerCase();
    if (name !== undefined && TRACE_HEADERS.has(name)) trace.push(line);
    else if (/^[ \t]/.test(line) && trace.length > 0) trace[trace.length - 1] += `\r\n${line}`;
    else break;
    offset = end + 2;
  }
  return { trace, rest: content.subarray(offset) };
}

function headerBlock(raw: Buffer): string {
  return raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('utf8');
}

function bodyOf(raw: Buffer): Buffer {
  return raw.subarray(raw.indexOf('\r\n\r\n'));
}

/** Postfix's queue id from its `Received: ... (Postfix) with ESMTP id <QID>` trace header. */
function postfixQueueId(trace: string[]): string {
  const received = trace.find((line) => /\(Postfix\) with E?SMTP id/.test(line));
  const id = received && /with E?SMTP id ([0-9A-Za-z]+)/.exec(received)?.[1];
  assert.ok(id, `a Postfix Received header in:\n${trace.join('\n')}`);
  return id;
}

/**
 * The syslog name of the Postfix listener that accepted a queued message: `smtp-<port>` for the SMTP port
 * (start.sh), `internal` for the internal port (docker/mailserver/user-patches.sh).
 */
async function acceptedBy(server: MailServer, queueId: string): Promise<string | undefined> {
  const log = await readFile(join(server.root, 'log', 'postfix.log'), 'utf8');
  return new RegExp(`postfix/([a-z]+(?:-\\d+)?)/smtpd\\[\\d+\\]: ${queueId}: client=`).exec(log)?.[1];
}

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
    let server: MailServer | undefined;
    let stack: TestStack | undefined;
    /** Queue URLs of the LMTP rig, by domain. */
    const lmtpQueues = new Map<string, string>();

    const mailServer = (): MailServer => {
      assert.ok(server, 'mail server started');
      return server;
    };
    const emulators = (): TestStack => {
      assert.ok(stack, 'emulators started');
      return stack;
    };

    before(async () => {
      if (unavailable !== undefined) {
        throw new Error(
          `CI is set, so the e2e suite must run, but the real mail server is unavailable: ${unavailable}`,
        );
      }
      const [startedServer, startedStack] = await Promise.allSettled([
        startMailServer(),
        startStack({ tables: true, domains: [DOMAIN, OTHER], queueOptions: { visibilityTimeout: 30 } }),
      ]);
      if (startedServer.status === 'fulfilled') server = startedServer.value;
      if (startedStack.status === 'fulfilled') stack = startedStack.value;
      if (startedServer.status === 'rejected') throw startedServer.reason;
      if (startedStack.status === 'rejected') throw startedStack.reason;
      for (const domain of [DOMAIN, OTHER]) {
        const queue = await createDomainQueue(emulators().sqs, domain, {
          template: LMTP_QUEUE_TEMPLATE,
          visibilityTimeout: 30,
        });
        lmtpQueues.set(domain, queue.queueUrl);
      }
      console.log(
        `mail server: smtp ${mailServer().smtpPort}, internal ${mailServer().internalPort}, lmtp ${mailServer().lmtpPort}; started in ${mailServer().startMs} ms`,
      );
    });

    after(async () => {
      await stack?.stop();
      if (server) await stopMailServer(server);
    });

    describe('DELIVERY_PROTOCOL=smtp (Postfix)', () => {
      let rig: MailServerRig | undefined;
      const smtpRig = (): MailServerRig => {
        assert.ok(rig, 'rig started');
        return rig;
      };

      before(async () => {
        rig = await startRig({ domains: [DOMAIN, OTHER], stack: emulators(), mailServer: mailServer() });
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
        assert.equal(await acceptedBy(mailServer(), postfixQueueId(trace)), `smtp-${mailServer().smtpPort}`);
        const info = await stat(stored.path);
        assert.equal(info.uid, 8, 'Dovecot writes as mail (uid 8)');
        assert.equal(info.mode & 0o777, 0o600);

        const metadata = await metadataOf(emulators(), put);
        assert.equal(metadata.processed, 'true');
        assert.equal(metadata.status, 'delivered');
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
          domains: [DOMAIN, OTHER],
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
