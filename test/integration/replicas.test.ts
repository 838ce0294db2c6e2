/**
 * Scaling out and in: three replicas of the BUILT daemon on the same queue with the idempotency ledger, as KEDA runs
 * them. One is killed (kill -9) in the middle of its batch, another is scaled in (SIGTERM) while it works; every mail
 * is delivered exactly once (counted by Message-ID at the mail server), none is lost.
 *
 * The kill lands while the victim's deliveries are waiting for the mail server's reply to DATA, with everything the
 * server had accepted already recorded in the ledger: that is the window the ledger covers. (A crash between the
 * server's 250 and the ledger write — the message's last DynamoDB write — can still deliver twice; faults.test.ts measures it,
 * ARCHITECTURE.md "Exactly-once effects and what remains" describes it.) The mail server here is a real SMTP server
 * (smtp-server) that, like Postfix, keeps a message only when the client is still there to get the reply.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { SMTPServer } from 'smtp-server';
import { effectName, messageKey } from '../../src/aws/effect-ledger.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import { assertBuilt, killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { outcomeLines, rawMail } from '../harness/faults.ts';
import { putMail } from '../harness/ses-events.ts';

const DOMAIN = 'replicas.test';
const TO = `user@${DOMAIN}`;
const MAILS = 300;

/** An SMTP server whose replies to DATA can be held back (the gate), counting what it keeps by Message-ID. */
interface GatedServer {
  readonly port: number;
  /** Message-ID of every mail kept, in order (duplicates included). */
  readonly kept: string[];
  /** Transactions waiting at the closed gate. */
  readonly waiting: number;
  /** Transactions dropped because the client had gone when the gate opened. */
  readonly abandoned: number;
  /** SMTP sessions open right now. */
  readonly openSessions: number;
  close(): void;
  open(): void;
  stop(): Promise<void>;
}

async function startGatedServer(dataDelayMs: number): Promise<GatedServer> {
  const kept: string[] = [];
  const closedSessions = new Set<string>();
  let opened = 0;
  let held: Array<() => void> = [];
  let gateOpen = true;
  let abandoned = 0;
  const server = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    onConnect(_session, callback) {
      opened++;
      callback();
    },
    onClose(session) {
      closedSessions.add(session.id);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.once('end', () => {
        const commit = () => {
          // Nothing is kept while the gate is closed, also not a reply already on its DATA delay.
          if (!gateOpen) {
            held.push(commit);
            return;
          }
          // The client is gone (killed): it never learns of a 250, so the message is not taken — Postfix, too,
          // commits a queue file only while the session lives.
          if (closedSessions.has(session.id)) {
            abandoned++;
            callback(new Error('client gone'));
            return;
          }
          const raw = Buffer.concat(chunks).toString('latin1');
          kept.push(/^Message-ID: <([^>]+)>/im.exec(raw)?.[1] ?? 'no-message-id');
          callback(null, 'OK: queued');
        };
        setTimeout(commit, dataDelayMs);
      });
    },
  });
  server.on('error', () => {});
  const sockets = new Set<Socket>();
  server.server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const port = await new Promise<number>((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
  return {
    port,
    kept,
    get waiting() {
      return held.length;
    },
    get abandoned() {
      return abandoned;
    },
    get openSessions() {
      return opened - closedSessions.size;
    },
    close() {
      gateOpen = false;
    },
    open() {
      gateOpen = true;
      const release = held;
      held = [];
      for (const go of release) go();
    },
    stop: () =>
      new Promise((resolve) => {
        // The net.Server itself, not SMTPServer.close(): that one gives open sessions 30 s to finish.
        server.server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

function copiesByMessageId(kept: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of kept) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

async function inFlight(daemon: DaemonProcess): Promise<number> {
  const text = await daemon.metrics();
  return Number(
    new RegExp(`^ses_worker_in_flight_messages\\{domain="${DOMAIN}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0,
  );
}

describe('three replicas on one queue with the ledger', () => {
  let stack: TestStack;
  let server: GatedServer;
  let queueUrl: string;

  before(async () => {
    assertBuilt();
    stack = await startStack({ tables: true });
    // A short visibility timeout: the killed replica's messages come back after 3 s (the ledger lease, 5 s, is
    // derived from it), not after the default 30 s.
    ({ queueUrl } = await createDomainQueue(stack.sqs, DOMAIN, { visibilityTimeout: 3 }));
    server = await startGatedServer(15);
  });
  after(async () => {
    await killAllDaemons();
    await server?.stop();
    await stack?.stop();
  });

  it('kill -9 one mid-batch, scale another in: every mail delivered exactly once, none lost', async (t: TestContext) => {
    assert.ok(stack.env.IDEMPOTENCY_TABLE, 'the ledger is on');
    const env = {
      ...stack.env,
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(server.port),
      INTERNAL_SMTP_PORT: String(server.port),
      SMTP_MAX_CONNECTIONS: '3',
      MESSAGE_CONCURRENCY: '4',
      SHUTDOWN_GRACE_SECONDS: '5',
    };
    const [victim, scaledIn, survivor] = await Promise.all(
      [1, 2, 3].map(() => spawnDaemon({ domains: [DOMAIN], env })),
    );
    assert.ok(victim && scaledIn && survivor);

    const sesIds = new Map<string, string>();
    for (let i = 0; i < MAILS; i += 25) {
      await Promise.all(
        Array.from({ length: Math.min(25, MAILS - i) }, async (_, j) => {
          const seq = `replica-${i + j}`;
          const put = await putMail(stack, {
            domain: DOMAIN,
            raw: rawMail(seq, TO),
            recipients: [TO],
            source: 'sender@external.test',
            shape: 'sns-s3',
          });
          sesIds.set(`${seq}@external.test`, put.messageId);
        }),
      );
    }

    // Mid-batch: the victim has delivered some and holds more.
    await waitUntil(
      () =>
        outcomeLines(victim.logs).filter((l) => l.status === 'delivered').length >= 10 &&
        server.kept.length >= 60,
      60_000,
      'the victim to be under way',
      20,
    );
    server.close();
    // Everything the server kept so far is recorded in the ledger, and the victim's deliveries wait at the gate.
    const keptBeforeKill = [...server.kept];
    await waitUntil(
      async () => {
        const records = await Promise.all(
          keptBeforeKill.map((messageId) =>
            stack.ddb.send(
              new GetCommand({
                TableName: stack.env.IDEMPOTENCY_TABLE,
                Key: { pk: messageKey(sesIds.get(messageId) ?? '', DOMAIN) },
                ConsistentRead: true,
              }),
            ),
          ),
        );
        return records.every((r) => r.Item?.effects?.[effectName(TO, 'deliver')] === 'done');
      },
      20_000,
      'the ledger to record every kept mail',
      50,
    );
    await waitUntil(
      async () => (await inFlight(victim)) > 0 && server.waiting > 0,
      20_000,
      'the victim to hold mail',
      50,
    );
    const victimInFlight = await inFlight(victim);
    const sessionsBefore = server.openSessions;
    const exit = await victim.kill9();
    assert.equal(exit.signal, 'SIGKILL');
    // The child's exit can be reported before the server has seen all of its connections close; a session the
    // server still thinks alive would get its 250 into the void. So wait for the closes, then a moment more.
    await waitUntil(() => server.openSessions < sessionsBefore, 5_000, 'the victim’s connections to close');
    await new Promise((resolve) => setTimeout(resolve, 500));
    server.open();
    await waitUntil(() => server.abandoned > 0, 5_000, 'the victim’s transactions to be dropped');
    const abandonedAtKill = server.abandoned;

    // Scale in: SIGTERM another while it works; it finishes what it holds and exits 0.
    await waitUntil(
      async () => server.kept.length >= keptBeforeKill.length + 40 && (await inFlight(scaledIn)) > 0,
      60_000,
      'the second replica to be busy',
      20,
    );
    scaledIn.kill('SIGTERM');
    const drained = await scaledIn.exited;
    assert.equal(drained.code, 0, scaledIn.describe());

    await waitUntil(() => copiesByMessageId(server.kept).size === MAILS, 90_000, `all ${MAILS} mails`, 50);
    await waitUntil(
      async () => {
        const counts = await queueCounts(stack.sqs, queueUrl);
        return counts.visible === 0 && counts.inFlight === 0;
      },
      60_000,
      'the queue drained',
      200,
    );

    const counts = copiesByMessageId(server.kept);
    const duplicated = [...counts].filter(([, n]) => n > 1);
    const missing = [...sesIds.keys()].filter((id) => !counts.has(id));
    const by = (d: DaemonProcess) => outcomeLines(d.logs).filter((l) => l.status === 'delivered').length;
    // How the killed replica's claims were met: deferred while their lease ran, then taken over.
    const waitedForLease = [scaledIn, survivor]
      .flatMap((d) => outcomeLines(d.logs))
      .filter((l) =>
        (l.recipients ?? []).some((r) => r.detail === 'being delivered by another worker'),
      ).length;
    t.diagnostic(
      `delivered by: killed ${by(victim)} (held ${victimInFlight} at the kill, ${abandonedAtKill} transactions dropped), ` +
        `scaled in ${by(scaledIn)}, survivor ${by(survivor)}; deferred on a live claim ${waitedForLease}; ` +
        `copies kept ${server.kept.length} for ${MAILS} mails`,
    );
    assert.deepEqual(missing, [], 'no mail lost');
    assert.deepEqual(duplicated, [], 'no mail delivered twice');
    assert.equal(server.kept.length, MAILS);
    assert.ok(by(victim) > 0 && by(scaledIn) > 0 && by(survivor) > 0, 'all three replicas did work');
    assert.equal(survivor.exit, undefined, 'the survivor is still running');
  });
});
