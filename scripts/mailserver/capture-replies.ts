/**
 * Captures what nodemailer hands the worker for each kind of answer of the real Postfix + Dovecot of
 * scripts/mailserver/start.sh (the e2e suite's mail server), and writes it to test/fixtures/smtp-replies/real.json,
 * which the classifier's unit tests (test/unit/smtp-classify.test.ts) read. Run it again after upgrading nodemailer,
 * Postfix or Dovecot:
 *
 *   bash scripts/mailserver/start.sh /tmp/ms      # as root; prints the ports
 *   MS_ROOT=/tmp/ms node --import tsx scripts/mailserver/capture-replies.ts
 *   bash scripts/mailserver/stop.sh /tmp/ms
 *
 * Every case sends through a pooled transport configured like src/smtp/transport.ts and records either the error
 * sendMail rejected with or the info it resolved with (own fields only: code, command, response, responseCode,
 * rejected, rejectedErrors, ...). Two cases change the Postfix configuration for a moment (mynetworks, the size
 * limit) and restore it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import nodemailer from 'nodemailer';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = join(REPO, 'test/fixtures/smtp-replies/real.json');

const root = process.env.MS_ROOT;
if (!root) throw new Error('MS_ROOT=<root-dir of scripts/mailserver/start.sh> is required');
const ports = Object.fromEntries(
  readFileSync(join(root, 'ports.env'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('='))
    .map((l) => l.split('=') as [string, string]),
);
const host = ports.MS_HOST ?? '127.0.0.1';
const postfixConf = join(root, 'etc/postfix');

type Transport = ReturnType<typeof nodemailer.createTransport>;

function transport(port: number, lmtp = false): Transport {
  return nodemailer.createTransport({
    pool: true,
    host,
    port,
    lmtp,
    maxConnections: 1,
    maxMessages: Infinity,
    tls: { rejectUnauthorized: false },
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    socketTimeout: 10_000,
    logger: false,
  });
}

const FIELDS = [
  'name',
  'message',
  'code',
  'originalCode',
  'command',
  'response',
  'responseCode',
  'timeoutType',
  'recipient',
  'accepted',
  'rejected',
  'pending',
] as const;

function plain(value: unknown): Record<string, unknown> {
  const source = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const field of FIELDS) if (source[field] !== undefined) out[field] = source[field];
  if (Array.isArray(source.rejectedErrors)) out.rejectedErrors = source.rejectedErrors.map(plain);
  return out;
}

function mail(subject: string, extraHeaders = '', bodyBytes = 100): Buffer {
  return Buffer.from(
    `From: sender@external.test\r\nTo: someone@example.com\r\nSubject: ${subject}\r\n` +
      `Message-ID: <${subject.replaceAll(' ', '-')}@capture.test>\r\n${extraHeaders}\r\n${'x'.repeat(bodyBytes)}\r\n`,
  );
}

interface Case {
  name: string;
  what: string;
  port: 'smtp' | 'internal' | 'lmtp';
  to: string[];
  raw: Buffer;
  before?: () => void;
  after?: () => void;
}

function postconf(setting: string): void {
  execFileSync('postconf', ['-c', postfixConf, '-e', setting]);
  execFileSync('postfix', ['-c', postfixConf, 'reload'], { stdio: 'ignore' });
  // Postfix's smtpd processes pick the change up when they start; give the reload a moment.
  execFileSync('sleep', ['1.5']);
}

const cases: Case[] = [
  {
    name: 'smtp-unknown-mailbox',
    what: 'Postfix, a mailbox the hosted domain does not have',
    port: 'smtp',
    to: ['nobody@example.com'],
    raw: mail('unknown mailbox'),
  },
  {
    name: 'smtp-unknown-mailbox-and-valid',
    what: 'Postfix, one valid and one unknown mailbox in one transaction',
    port: 'smtp',
    to: ['alice@example.com', 'nobody@example.com'],
    raw: mail('mixed'),
  },
  {
    name: 'smtp-unconfigured-domain',
    what: 'Postfix, a domain it is not configured for',
    port: 'smtp',
    to: ['someone@unconfigured.test'],
    raw: mail('unconfigured domain'),
  },
  {
    name: 'smtp-unconfigured-domain-two-recipients',
    what: 'Postfix, two recipients of a domain it is not configured for',
    port: 'smtp',
    to: ['one@unconfigured.test', 'two@unconfigured.test'],
    raw: mail('unconfigured domain two'),
  },
  {
    name: 'smtp-temporary-rcpt',
    what: 'Postfix, 451 at RCPT (busy@example.com hook)',
    port: 'smtp',
    to: ['busy@example.com'],
    raw: mail('busy'),
  },
  {
    name: 'smtp-content-rejected',
    what: 'Postfix header_checks REJECT after DATA',
    port: 'smtp',
    to: ['alice@example.com', 'bob@example.com'],
    raw: mail('content rejected', 'X-E2E-Reject: yes\r\n'),
  },
  {
    name: 'internal-client-host-rejected',
    what: 'Postfix internal port, the client is not in mynetworks',
    port: 'internal',
    to: ['alice@example.com'],
    raw: mail('client host rejected'),
    before: () => postconf('mynetworks=10.99.0.0/16'),
    after: () => postconf('mynetworks=127.0.0.0/8'),
  },
  {
    name: 'smtp-size-limit',
    what: 'Postfix message_size_limit below the mail (SIZE advertised in EHLO)',
    port: 'smtp',
    to: ['alice@example.com'],
    raw: mail('too big', '', 20_000),
    before: () => postconf('message_size_limit=10240'),
    after: () => postconf('message_size_limit=52428800'),
  },
  {
    name: 'lmtp-unknown-mailbox',
    what: 'Dovecot LMTP, a user it does not know',
    port: 'lmtp',
    to: ['nobody@example.com'],
    raw: mail('lmtp unknown'),
  },
  {
    name: 'lmtp-unconfigured-domain',
    what: 'Dovecot LMTP, a domain it does not serve (same answer as an unknown user)',
    port: 'lmtp',
    to: ['someone@unconfigured.test'],
    raw: mail('lmtp unconfigured'),
  },
  {
    name: 'lmtp-quota-one-of-two',
    what: 'Dovecot LMTP, per-recipient 552 after DATA (tiny@example.com over quota) next to a delivery',
    port: 'lmtp',
    to: ['alice@example.com', 'tiny@example.com'],
    raw: mail('lmtp quota', '', 5000),
  },
  {
    name: 'lmtp-quota-only',
    what: 'Dovecot LMTP, the only recipient refused after DATA',
    port: 'lmtp',
    to: ['tiny@example.com'],
    raw: mail('lmtp quota only', '', 5000),
  },
  {
    name: 'lmtp-delivered',
    what: 'Dovecot LMTP, two recipients delivered',
    port: 'lmtp',
    to: ['alice@example.com', 'bob@example.com'],
    raw: mail('lmtp ok'),
  },
];

async function send(t: Transport, c: Case): Promise<Record<string, unknown>> {
  try {
    const info = await t.sendMail({ envelope: { from: 'sender@external.test', to: c.to }, raw: c.raw });
    return { resolved: plain(info) };
  } catch (error) {
    return { rejected: plain(error) };
  }
}

const captured: Record<string, unknown> = {};
for (const c of cases) {
  c.before?.();
  const port = Number(
    c.port === 'smtp'
      ? ports.MS_WORKER_PORT
      : c.port === 'internal'
        ? ports.MS_INTERNAL_PORT
        : ports.MS_LMTP_PORT,
  );
  const t = transport(port, c.port === 'lmtp');
  try {
    captured[c.name] = { what: c.what, to: c.to, ...(await send(t, c)) };
  } finally {
    t.close();
    c.after?.();
  }
}
// Nothing listens on port 1 of the loopback: what a mail server that is down looks like.
{
  const t = transport(1);
  captured['connection-refused'] = {
    what: 'nothing listens on the port',
    to: ['alice@example.com'],
    ...(await send(t, { name: '', what: '', port: 'smtp', to: ['alice@example.com'], raw: mail('refused') })),
  };
  t.close();
}

const versions = {
  nodemailer: (
    JSON.parse(readFileSync(join(REPO, 'node_modules/nodemailer/package.json'), 'utf8')) as {
      version: string;
    }
  ).version,
  postfix: execFileSync('postconf', ['-c', postfixConf, '-h', 'mail_version']).toString().trim(),
  dovecot: execFileSync('dovecot', ['--version']).toString().trim(),
};
writeFileSync(OUT, `${JSON.stringify({ capturedWith: versions, cases: captured }, null, 2)}\n`);
console.log(`wrote ${Object.keys(captured).length} cases to ${OUT}`);
