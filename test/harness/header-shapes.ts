/**
 * The worst header shapes we could build, and the work the pipeline does on a mail's header block, shared by
 * bench/header-parsing.bench.ts (which times it) and the hostile test suite (which counts what the parsers are given).
 * Every shape stays within the bounds of the header block (1 MiB, 10,000 fields), so every stage runs on all of it.
 */
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log/logger.ts';
import { composeAutoReply } from '../../src/mail/autoreply-compose.ts';
import { autoReplyDecision } from '../../src/mail/autoreply-policy.ts';
import { checkBlocked } from '../../src/mail/blocklist.ts';
import { rewriteSplitForForward } from '../../src/mail/forward.ts';
import { splitMessage } from '../../src/mail/header-block.ts';
import { createLoopMarker } from '../../src/mail/loop-marker.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';
import { applyBounceRewrite } from '../../src/pipeline/bounce.ts';
import type { SesVerdicts } from '../../src/pipeline/notification.ts';
import { headerView, withBodies } from '../../src/pipeline/parse.ts';
import type { PipelinePorts } from '../../src/pipeline/ports.ts';

export const MiB = 1024 * 1024;
const RECIPIENT = 'alice@example.com';
export const SOURCE = 'sender@external.test';
const PASS: SesVerdicts = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
const b = (s: string): Buffer => Buffer.from(s, 'latin1');

export interface HeaderShape {
  name: string;
  /** A whole mail whose header block is about `bytes` long. */
  build: (bytes: number) => Buffer;
  /** The envelope sender SES reports for it ('' for a bounce). */
  source?: string;
}

/** `name:` fields of about `perField` bytes each, `unit` repeated, as many as fit in `bytes` (and 9,900 fields). */
function fields(name: string, unit: (i: number) => string, perField: number, bytes: number): string {
  const out: string[] = [];
  let total = 0;
  let i = 0;
  for (;;) {
    let value = '';
    while (value.length < perField) value += unit(i++);
    const line = `${name}: ${value}\r\n`;
    // Within both bounds of the header block (1 MiB, 10,000 fields), so every stage runs on the whole of it.
    if (total + line.length > bytes || out.length === 9_900) break;
    out.push(line);
    total += line.length;
  }
  return out.join('');
}

const BOUNCE_TOP =
  'From: MAILER-DAEMON@amazonses.com\r\nTo: alice@example.com\r\nSubject: Delivery Status Notification (Failure)\r\n';
const BOUNCE_BODY =
  'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n' +
  '--r\r\nContent-Type: text/plain\r\n\r\nAn error occurred.\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\n' +
  'Reporting-MTA: dns; a1-2.smtp-out.amazonses.com\r\n\r\nFinal-Recipient: rfc822; gone@elsewhere.test\r\n' +
  'Action: failed\r\nStatus: 5.1.1\r\n\r\n--r--\r\n';
export const MAIL_TOP = `From: "Pat Q." <pat@external.test>\r\nTo: ${RECIPIENT}\r\nSubject: hello\r\nMessage-ID: <m@external.test>\r\n`;
const MAIL_BODY = 'Content-Type: text/plain\r\n\r\nHello.\r\n';

export const mail = (top: string, block: string, body = MAIL_BODY): Buffer => b(`${top}${block}${body}`);

export const SHAPES: HeaderShape[] = [
  {
    name: 'forged SES bounce: References, 60 KB of ids per field',
    build: (n) =>
      mail(
        BOUNCE_TOP,
        fields('References', (i) => `<forged-${i}@email.amazonses.com> `, 60_000, n),
        BOUNCE_BODY,
      ),
    source: '',
  },
  {
    name: 'forged SES bounce: References, 1,000 ids per field',
    build: (n) =>
      mail(
        BOUNCE_TOP,
        fields('References', (i) => `<f-${i}@email.amazonses.com> `, 30_000, n),
        BOUNCE_BODY,
      ),
    source: '',
  },
  {
    name: 'forged SES bounce: In-Reply-To, 60 KB of ids per field',
    build: (n) =>
      mail(
        BOUNCE_TOP,
        fields('In-Reply-To', (i) => `<r-${i}@x.test>`, 60_000, n),
        BOUNCE_BODY,
      ),
    source: '',
  },
  {
    name: 'Message-ID fields, 60 KB of ids each',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('Message-ID', (i) => `<id-${i}@x.test>`, 60_000, n),
      ),
  },
  {
    name: 'References, one id per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('References', (i) => `<one-${i}@x.test>`, 1, n),
      ),
  },
  {
    name: 'To: 30 KB of addresses per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('To', (i) => `"User ${i}" <u${i}@x.test>, `, 30_000, n),
      ),
  },
  {
    name: 'To: 30 KB of display names without address per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('To', () => '"a" ', 30_000, n),
      ),
  },
  {
    name: 'Cc: 30 KB of empty groups per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('Cc', () => 'g:;', 30_000, n),
      ),
  },
  {
    name: 'Cc: 30 KB of angle pairs per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('Cc', () => '<a@b>', 30_000, n),
      ),
  },
  {
    name: 'To: 30 KB of nested comments per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('To', (i) => (i % 2000 < 1000 ? '(' : ')'), 30_000, n),
      ),
  },
  {
    name: 'Cc: 30 KB of encoded-word names per field',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('Cc', (i) => `=?utf-8?B?w6k=?= <e${i}@x.test>, `, 30_000, n),
      ),
  },
  {
    name: 'From, Sender, Reply-To: 30 KB of quoted names each, then 100-byte fields',
    build: (n) =>
      mail(
        `From: ${'"a" '.repeat(7_500)}<pat@external.test>\r\nSender: ${'"b" '.repeat(7_500)}\r\n` +
          `Reply-To: ${'"c" '.repeat(7_500)}\r\nTo: ${RECIPIENT}\r\nSubject: s\r\n`,
        fields('X-A', () => 'b'.repeat(90), 1, n - 92_000),
      ),
  },
  {
    name: 'Subject: encoded words, one charset',
    build: (n) =>
      mail(
        `From: pat@external.test\r\nTo: ${RECIPIENT}\r\n`,
        `Subject: ${'=?utf-8?Q?a?= '.repeat(n / 14)}\r\n`,
      ),
  },
  {
    name: 'Subject: encoded words, alternating charsets',
    build: (n) =>
      mail(
        `From: pat@external.test\r\nTo: ${RECIPIENT}\r\n`,
        `Subject: ${Array.from({ length: n / 18 }, (_, i) => `=?${i % 2 ? 'utf-8' : 'latin1'}?Q?a?=`).join(' ')}\r\n`,
      ),
  },
  {
    name: 'Subject: one field folded into 1-byte lines',
    build: (n) =>
      mail(`From: pat@external.test\r\nTo: ${RECIPIENT}\r\n`, `Subject: a${'\r\n b'.repeat(n / 4)}\r\n`),
  },
  {
    name: '10,000 short fields',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields('X-A', () => 'b'.repeat(Math.max(1, Math.floor(n / 10_000) - 7)), 1, n),
      ),
  },
  {
    name: 'loop markers with a wrong signature',
    build: (n) =>
      mail(
        MAIL_TOP,
        fields(
          'X-SES-Worker-Processed',
          (i) =>
            `worker-example.com; v=2; k=forward; id=m${i}; o=AAAAAAAAAAAAAAAA; t=AAAAAAAAAAAAAAAA; exp=9999999999; sig=${'A'.repeat(32)}`,
          1,
          n,
        ),
      ),
  },
];

function quietPorts(): PipelinePorts {
  const logger = createLogger({
    level: 'silent',
    redactAddresses: false,
    destination: new Writable({ write: (_c, _e, cb) => cb() }),
  });
  return {
    domain: 'example.com',
    logger,
    metrics: createPipelineMetrics(),
    outbound: { find: async () => undefined },
    options: { bounceRequireAuthenticated: true },
  } as unknown as PipelinePorts;
}

const ports = quietPorts();
const marker = createLoopMarker('example.com', 'bench-secret');
const patterns = new Map([[RECIPIENT, ['*@spam.test', 'blocked@*', '*bad*@*.test']]]);

/** What the pipeline does with the header block of one mail to a recipient with an out-of-office and a forward. */
export async function headerWork(raw: Buffer, source: string): Promise<void> {
  const split = splitMessage(raw);
  const view = headerView(split);
  const markers = view.headers.get(marker.name.toLowerCase()) ?? [];
  const loop = marker.isTrusted(markers, [RECIPIENT]);
  const bounce = await applyBounceRewrite(
    raw,
    { view, split, loopMarker: loop },
    { sesMessageId: 'bench', source, verdicts: PASS },
    ports,
  );
  checkBlocked(view.from?.address ?? '', [RECIPIENT], patterns);
  checkBlocked(source, [RECIPIENT], patterns);
  const decision = autoReplyDecision({
    view,
    envelopeSender: source,
    recipient: RECIPIENT,
    isSesBounce: bounce.isSesBounce,
    hasLoopMarker: loop,
    requireAddressed: false,
  });
  const full = await withBodies(raw, view, { timeoutMs: 60_000 });
  await composeAutoReply({
    recipient: RECIPIENT,
    to: decision.reply ? decision.to : { address: 'pat@external.test', name: 'Pat' },
    original: full,
    message: 'I am away.',
    contentType: 'text',
    subjectPrefix: 'Auto: ',
    loopMarker: { name: marker.name, value: 'worker-example.com; id=bench' },
    messageIdDomain: 'example.com',
    now: new Date(0),
  });
  rewriteSplitForForward(split, {
    forwardingAddress: RECIPIENT,
    originalRecipient: RECIPIENT,
    domain: 'example.com',
    subjectPrefix: 'FWD: ',
    loopMarker: {
      name: marker.name,
      value: 'worker-example.com; id=bench',
      carried: marker.carried(markers),
    },
    messageIdDomain: 'example.com',
    now: new Date(0),
  });
}

/** The header block's length: up to the empty line. */
export function headerBytes(raw: Buffer): number {
  const end = raw.indexOf('\r\n\r\n');
  return end < 0 ? raw.length : end + 2;
}
