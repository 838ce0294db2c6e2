/**
 * What the mailbox duplicate check costs: the worker's pooled LMTP delivery (src/smtp/transport.ts, one transaction
 * per mailbox at a time) into the real Dovecot of scripts/mailserver/start.sh, with docker/mailserver/before.dovecot
 * .sieve (MS_DEDUP=1) and without it (MS_DEDUP=0), alternating per round so machine noise hits both. Each round
 * starts a fresh mail server, warms it up, sends N mails of 2 KB spread over 3 mailboxes, and reports msgs/s and
 * the size of the duplicate database Dovecot keeps per user. Then every mail is sent again: with the script all of
 * them must be discarded (checks that no id was lost), without it all are stored twice.
 *
 * Run as root (Postfix, Dovecot): node --import tsx bench/mailbox-dedup.bench.ts [mails=800] [rounds=3]
 */
import { statSync } from 'node:fs';
import { Writable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { createLogger } from '../src/log/logger.ts';
import { createPooledDelivery } from '../src/smtp/transport.ts';
import {
  copiesByMessageId,
  duplicateDbPath,
  startMailServer,
  stopMailServer,
} from '../test/e2e/real-mailserver.ts';

const MAILS = Number(process.argv[2] ?? 800);
const ROUNDS = Number(process.argv[3] ?? 3);
const MAILBOXES = ['alice@example.com', 'bob@example.com', 'carol@another.com'];

const logger = createLogger({
  level: 'silent',
  redactAddresses: false,
  destination: new Writable({ write: (_c, _e, callback) => callback() }),
});

function mail(i: number, to: string): Buffer {
  return Buffer.from(
    `X-SES-Worker-Delivery-Id: deliver.${String(i).padStart(32, '0')}\r\nFrom: sender@external.test\r\n` +
      `To: ${to}\r\nSubject: bench ${i}\r\nMessage-ID: <bench-${i}@external.test>\r\n\r\n${'x'.repeat(2000)}\r\n`,
  );
}

async function round(dedup: boolean): Promise<{ perSecond: number; dbBytes: number; secondCopies: number }> {
  process.env.MS_DEDUP = dedup ? '1' : '0';
  const server = await startMailServer();
  try {
    const pool = createPooledDelivery({
      host: server.host,
      port: server.smtpPort,
      internalPort: server.internalPort,
      lmtpPort: server.lmtpPort,
      protocol: 'lmtp',
      maxConnections: 5,
      timeoutMs: 10_000,
      logger,
    });
    const send = (i: number) => {
      const to = MAILBOXES[i % MAILBOXES.length] as string;
      return pool.deliver({ route: 'mailbox', from: 'sender@external.test', to: [to], raw: mail(i, to) });
    };
    // Warm-up on another mailbox: Dovecot starts its LMTP processes and auth on the first connections.
    await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        pool.deliver({
          route: 'mailbox',
          from: 'sender@external.test',
          to: ['tiny@example.com'],
          raw: mail(-i - 1, 'tiny@example.com').subarray(0, 200),
        }),
      ),
    );
    const started = performance.now();
    await Promise.all(Array.from({ length: MAILS }, (_, i) => send(i)));
    const perSecond = MAILS / ((performance.now() - started) / 1000);
    await Promise.all(Array.from({ length: MAILS }, (_, i) => send(i)));
    await pool.close();
    let stored = 0;
    for (const mailbox of MAILBOXES)
      stored += [...(await copiesByMessageId(server, mailbox)).values()].reduce((a, b) => a + b, 0);
    let dbBytes = 0;
    for (const mailbox of MAILBOXES) {
      try {
        dbBytes += statSync(duplicateDbPath(server, mailbox)).size;
      } catch {
        // no database without the script
      }
    }
    return { perSecond, dbBytes, secondCopies: stored - MAILS };
  } finally {
    await stopMailServer(server);
  }
}

const results: Record<'with' | 'without', number[]> = { with: [], without: [] };
for (let r = 1; r <= ROUNDS; r++) {
  for (const dedup of r % 2 ? [true, false] : [false, true]) {
    const result = await round(dedup);
    results[dedup ? 'with' : 'without'].push(result.perSecond);
    console.log(
      `round ${r} ${dedup ? 'with   ' : 'without'} the Sieve script: ${result.perSecond.toFixed(0)} msgs/s; ` +
        `second copies stored ${result.secondCopies}/${MAILS}; duplicate db ${result.dbBytes} bytes for ${MAILS} mails`,
    );
  }
}
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}
console.log(
  `median: with ${median(results.with).toFixed(0)} msgs/s, without ${median(results.without).toFixed(0)} msgs/s`,
);
