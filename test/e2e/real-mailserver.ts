/**
 * The e2e suite's real mail server: Postfix + Dovecot (with the Sieve plugin and the project's
 * docker/mailserver/before.dovecot.sieve) from the Debian packages, started by scripts/mailserver/start.sh on free
 * loopback ports with its root under a temporary directory, plus what the tests read from it: Maildir copies counted
 * per Message-ID, trace headers, and Dovecot's log of what Sieve stored and discarded.
 *
 * Needs root and the packages of scripts/mailserver/install.sh. `unavailableReason()` says why it cannot run here;
 * the test files skip with that reason unless CI is set, in which case they fail.
 * E2E_KEEP_MAILSERVER=1 leaves the mail server's directory (configs, logs, Maildirs) in place and prints its path.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { after, before } from 'node:test';
import { startStack, waitUntil, type StackOptions, type TestStack } from '../harness/emulators.ts';
import type { MailServerTarget } from '../harness/pipeline-rig.ts';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const START_SCRIPT = join(REPO, 'scripts/mailserver/start.sh');
const STOP_SCRIPT = join(REPO, 'scripts/mailserver/stop.sh');
/** Postfix queues and delivers asynchronously; a delivery normally lands within a few hundred milliseconds. */
export const MAILDIR_TIMEOUT_MS = 20_000;

export const inCi =
  process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI.toLowerCase());

/** Why the real mail server cannot run here, or undefined when it can. */
export function unavailableReason(): string | undefined {
  const binaries = [
    '/usr/sbin/postfix',
    '/usr/sbin/postconf',
    '/usr/sbin/dovecot',
    '/usr/bin/doveadm',
    '/usr/bin/sievec',
  ];
  const missing = binaries.filter((bin) => !existsSync(bin));
  if (missing.length > 0)
    return `${missing.join(', ')} not installed (run: sudo bash scripts/mailserver/install.sh)`;
  if (process.getuid?.() !== 0) return 'Postfix and the Maildir files (uid 8, mode 0600) need root';
  return undefined;
}

export function run(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<string> {
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

export interface MailServer extends MailServerTarget {
  root: string;
  startMs: number;
  /** Stands in for docker-mailserver's port 25: mail from anyone but the worker (`smtpPort` is the worker's 2526). */
  publicPort: number;
  /** Stands in for submission (587): docker-mailserver's sender-cleanup, without authentication or TLS. */
  submissionPort: number;
}

export async function startMailServer(): Promise<MailServer> {
  // The free ports could be taken by another process before Postfix binds them: try again with new ones then.
  for (let attempt = 1; ; attempt++) {
    const root = await mkdtemp(join(tmpdir(), 'uew-e2e-mailserver-'));
    const [smtpPort, internalPort, lmtpPort, publicPort, submissionPort] = (await freePorts(5)) as [
      number,
      number,
      number,
      number,
      number,
    ];
    const started = Date.now();
    try {
      const stdout = await run(
        'bash',
        [START_SCRIPT, root],
        {
          ...process.env,
          MS_WORKER_PORT: String(smtpPort),
          MS_SMTP_PORT: String(publicPort),
          MS_SUBMISSION_PORT: String(submissionPort),
          MS_INTERNAL_PORT: String(internalPort),
          MS_LMTP_PORT: String(lmtpPort),
        },
        60_000,
      );
      const startMs = Date.now() - started;
      assert.match(stdout, new RegExp(`^MS_WORKER_PORT=${smtpPort}$`, 'm'), stdout);
      return {
        root,
        host: '127.0.0.1',
        smtpPort,
        internalPort,
        lmtpPort,
        publicPort,
        submissionPort,
        startMs,
      };
    } catch (error) {
      // Whatever did start (Dovecot before a Postfix failure) must not outlive the test.
      await run('bash', [STOP_SCRIPT, root], process.env, 60_000).catch(() => undefined);
      await rm(root, { recursive: true, force: true });
      if (attempt >= 3 || !/already in use/.test((error as Error).message)) throw error;
    }
  }
}

export async function stopMailServer(server: MailServer): Promise<void> {
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

/** The last lines of Postfix's and Dovecot's logs, for assertion messages. */
export async function logs(server: MailServer): Promise<string> {
  return `${await logTail(server, 'postfix.log')}\n${await logTail(server, 'dovecot.log')}`;
}

export interface MaildirMessage {
  path: string;
  content: Buffer;
}

/** Messages in a mailbox's `new/` and `cur/` (Dovecot writes to `new/`). */
export async function maildirMessages(server: MailServer, address: string): Promise<MaildirMessage[]> {
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

/** The Message-ID header value of a stored message (first occurrence), without angle brackets. */
export function messageIdOf(content: Buffer): string | undefined {
  const head = content.subarray(0, Math.max(0, content.indexOf('\r\n\r\n'))).toString('latin1');
  return /^Message-ID:\s*<([^>]+)>/im.exec(head)?.[1];
}

/** Copies in a mailbox per Message-ID: a second copy of a mail shows up as a count of 2. */
export async function copiesByMessageId(server: MailServer, address: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const message of await maildirMessages(server, address)) {
    const id = messageIdOf(message.content) ?? '(no Message-ID)';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/**
 * Polls a mailbox until a message containing `marker` is there, then checks it is there exactly once (a second copy
 * of the same mail would also contain the marker) and returns it.
 */
export async function waitForMaildir(
  server: MailServer,
  address: string,
  marker: string,
): Promise<MaildirMessage> {
  const needle = Buffer.from(marker);
  let found: MaildirMessage[] = [];
  try {
    await waitUntil(
      async () => {
        found = (await maildirMessages(server, address)).filter((m) => m.content.includes(needle));
        return found.length > 0;
      },
      MAILDIR_TIMEOUT_MS,
      `a message with "${marker}" in ${address}'s Maildir`,
      50,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await logs(server)}`, { cause: error });
  }
  await waitUntilPostfixIdle(server);
  found = (await maildirMessages(server, address)).filter((m) => m.content.includes(needle));
  assert.equal(found.length, 1, `copies of the message with "${marker}" in ${address}'s Maildir`);
  return found[0] as MaildirMessage;
}

/** Waits until Postfix's queue is empty: everything it accepted was handed to Dovecot (or bounced). */
export async function waitUntilPostfixIdle(
  server: MailServer,
  timeoutMs = MAILDIR_TIMEOUT_MS,
): Promise<void> {
  const conf = join(server.root, 'etc/postfix');
  await waitUntil(
    async () => /Mail queue is empty/.test(await run('postqueue', ['-c', conf, '-p'], process.env, 10_000)),
    timeoutMs,
    "Postfix's queue to be empty",
    100,
  );
}

/** What Dovecot's Sieve did for a user, counted from its log: copies stored and duplicate copies discarded. */
export interface SieveActions {
  stored: number;
  discarded: number;
}

/** Sieve's log lines for `address` whose Message-ID matches `messageIds` (a filter, e.g. /^kill-lmtp-/). */
export async function sieveActions(
  server: MailServer,
  address: string,
  messageIds: RegExp,
): Promise<SieveActions> {
  const log = await readFile(join(server.root, 'log', 'dovecot.log'), 'utf8');
  const actions: SieveActions = { stored: 0, discarded: 0 };
  const pattern = /lmtp\(([^)]+)\)<[^>]*><[^>]*>: Info: sieve: msgid=<([^>]*)>: (.*)$/;
  for (const line of log.split('\n')) {
    const match = pattern.exec(line);
    if (!match || match[1] !== address || !messageIds.test(match[2] ?? '')) continue;
    if (/^stored mail into mailbox/.test(match[3] ?? '')) actions.stored += 1;
    else if (/^discard action/.test(match[3] ?? '')) actions.discarded += 1;
  }
  return actions;
}

/** Dovecot's duplicate database of a user (where `duplicate` remembers delivery ids), or undefined. */
export function duplicateDbPath(server: MailServer, address: string): string {
  const [user, domain] = address.split('@') as [string, string];
  return join(server.root, 'mail', domain, user, 'home', '.dovecot.lda-dupes');
}

/** The header fields the mail server puts on top of what it was given. */
const TRACE_HEADERS = new Set(['return-path', 'delivered-to', 'received']);

/** Splits the trace header fields Postfix/Dovecot prepended off a stored message. */
export function splitTrace(content: Buffer): { trace: string[]; rest: Buffer } {
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

export function headerBlock(raw: Buffer): string {
  return raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('utf8');
}

export function bodyOf(raw: Buffer): Buffer {
  return raw.subarray(raw.indexOf('\r\n\r\n'));
}

/** Postfix's queue id from its `Received: ... (Postfix) with ESMTP id <QID>` trace header. */
export function postfixQueueId(trace: string[]): string {
  const received = trace.find((line) => /\(Postfix\) with E?SMTP id/.test(line));
  const id = received && /with E?SMTP id ([0-9A-Za-z]+)/.exec(received)?.[1];
  assert.ok(id, `a Postfix Received header in:\n${trace.join('\n')}`);
  return id;
}

/**
 * The syslog name of the Postfix listener that accepted a queued message: `worker` and `internal` for the worker's
 * ports (docker/mailserver/user-patches.sh), `smtp-<port>` and `submission` for the stand-ins of port 25 and 587.
 */
export async function acceptedBy(server: MailServer, queueId: string): Promise<string | undefined> {
  const log = await readFile(join(server.root, 'log', 'postfix.log'), 'utf8');
  return new RegExp(`postfix/([a-z]+(?:-\\d+)?)/smtpd\\[\\d+\\]: ${queueId}: client=`).exec(log)?.[1];
}

/** Hands a mail to Postfix's sendmail (pickup), as a local program or Dovecot's redirect and vacation do. */
export async function sendmail(server: MailServer, from: string, to: string, raw: Buffer): Promise<void> {
  const conf = join(server.root, 'etc/postfix');
  await new Promise<void>((resolvePromise, reject) => {
    const child = execFile(
      '/usr/sbin/sendmail',
      ['-C', conf, '-f', from, '--', to],
      { timeout: 10_000 },
      (error, _o, e) =>
        error ? reject(new Error(`sendmail failed: ${error.message}\n${e}`)) : resolvePromise(),
    );
    child.stdin?.end(raw);
  });
}

/** The real mail server and the emulators of one e2e file, each asserted to have started when asked for. */
export interface MailServerAndStack {
  mailServer(): MailServer;
  emulators(): TestStack;
}

/**
 * Registers the hooks that start the real mail server and the emulators together (under CI a missing mail server
 * fails the suite) and stop both at the end, after `beforeStop` (e.g. killing the daemons that use them).
 */
export function useMailServerAndStack(
  stackOptions: StackOptions,
  hooks: { afterStart?: (env: MailServerAndStack) => Promise<void>; beforeStop?: () => Promise<void> } = {},
): MailServerAndStack {
  let server: MailServer | undefined;
  let stack: TestStack | undefined;
  const env: MailServerAndStack = {
    mailServer() {
      assert.ok(server, 'mail server started');
      return server;
    },
    emulators() {
      assert.ok(stack, 'emulators started');
      return stack;
    },
  };
  before(async () => {
    const unavailable = unavailableReason();
    if (unavailable !== undefined) {
      throw new Error(
        `CI is set, so the e2e suite must run, but the real mail server is unavailable: ${unavailable}`,
      );
    }
    const [startedServer, startedStack] = await Promise.allSettled([
      startMailServer(),
      startStack(stackOptions),
    ]);
    if (startedServer.status === 'fulfilled') server = startedServer.value;
    if (startedStack.status === 'fulfilled') stack = startedStack.value;
    if (startedServer.status === 'rejected') throw startedServer.reason;
    if (startedStack.status === 'rejected') throw startedStack.reason;
    await hooks.afterStart?.(env);
  });
  after(async () => {
    await hooks.beforeStop?.();
    await stack?.stop();
    if (server) await stopMailServer(server);
  });
  return env;
}
