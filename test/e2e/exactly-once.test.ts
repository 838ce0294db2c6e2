/**
 * Exactly once at the mailbox, proven against the real Postfix + Dovecot (real-mailserver.ts) with the BUILT daemon
 * (`dist/`, a child process): kill -9 in the middle of 200 mails, restart, drain — once over LMTP straight into
 * Dovecot, once over SMTP through Postfix — and two daemons on one queue (through Postfix) with a kill -9 of one.
 * Every Message-ID must be in the Maildir exactly once. The worker's ledger cannot close the window between the mail
 * server's 250 and its own record of it; docker/mailserver/before.dovecot.sieve closes it where the mail lands. So
 * each run also reads Dovecot's log: Sieve handled every stored copy (the script was active), and how many copies it
 * discarded.
 *
 * `MS_DEDUP=0` starts the mail server without the Sieve script (scripts/mailserver/start.sh), to see what it saves:
 * then these tests fail on "the Sieve script was active" and report the duplicates that reached the Maildir.
 * Needs root and the packages of scripts/mailserver/install.sh; skipped with the reason otherwise, failing under CI.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it, type TestContext } from 'node:test';

import { killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { createDomainQueue, queueCounts, waitUntil } from '../harness/emulators.ts';
import { outcomeLines, rawMail } from '../harness/faults.ts';
import { putMail } from '../harness/ses-events.ts';
import {
  copiesByMessageId,
  duplicateDbPath,
  inCi,
  logs,
  sieveActions,
  unavailableReason,
  useMailServerAndStack,
  waitUntilPostfixIdle,
} from './real-mailserver.ts';

const DOMAIN = 'example.com';
const MAILS = 200;

const unavailable = unavailableReason();
const skip = unavailable !== undefined && !inCi ? `real mail server unavailable: ${unavailable}` : false;

interface Scenario {
  /** Prefix of the Message-IDs (and the queue name) of this run. */
  name: string;
  domain: string;
  mailbox: string;
  protocol: 'lmtp' | 'smtp';
}

if (skip) it('e2e: exactly once at the mailbox across kill -9', { skip }, () => {});
else
  describe('e2e: exactly once at the mailbox across kill -9', () => {
    const { mailServer, emulators } = useMailServerAndStack({ tables: true }, { beforeStop: killAllDaemons });

    /** A queue of its own (3 s visibility: the restarted daemon sees the killed one's messages soon) and 200 mails. */
    async function enqueue(scenario: Scenario): Promise<string> {
      const template = `{domain}-${scenario.name}`;
      const { queueUrl } = await createDomainQueue(emulators().sqs, scenario.domain, {
        template,
        visibilityTimeout: 3,
      });
      for (let i = 0; i < MAILS; i += 25) {
        await Promise.all(
          Array.from({ length: Math.min(25, MAILS - i) }, (_, j) =>
            putMail(emulators(), {
              domain: scenario.domain,
              raw: rawMail(`${scenario.name}-${i + j}`, scenario.mailbox),
              recipients: [scenario.mailbox],
              source: 'sender@external.test',
              shape: 'sns-s3',
              queueUrl,
            }),
          ),
        );
      }
      return queueUrl;
    }

    function daemonEnv(scenario: Scenario): Record<string, string> {
      const ms = mailServer();
      return {
        ...emulators().env,
        QUEUE_NAME_TEMPLATE: `{domain}-${scenario.name}`,
        SMTP_HOST: ms.host,
        SMTP_PORT: String(ms.smtpPort),
        INTERNAL_SMTP_PORT: String(ms.internalPort),
        LMTP_PORT: String(ms.lmtpPort),
        DELIVERY_PROTOCOL: scenario.protocol,
        RULES_CACHE_SECONDS: '0',
        // The default concurrency: up to 10 mails between "250 OK" and the ledger's record at the kill.
        MESSAGE_CONCURRENCY: '10',
        SHUTDOWN_GRACE_SECONDS: '5',
        LOG_LEVEL: 'info',
      };
    }

    /** Copies of this scenario's mails in its mailbox, per Message-ID. */
    async function copies(scenario: Scenario): Promise<Map<string, number>> {
      const all = await copiesByMessageId(mailServer(), scenario.mailbox);
      return new Map([...all].filter(([id]) => id.startsWith(`${scenario.name}-`)));
    }

    /** The same, once Postfix passed on all it accepted. */
    async function settledCopies(scenario: Scenario): Promise<Map<string, number>> {
      await waitUntilPostfixIdle(mailServer());
      return copies(scenario);
    }

    async function waitForDelivered(scenario: Scenario, count: number, timeoutMs: number): Promise<void> {
      try {
        await waitUntil(
          async () => (await copies(scenario)).size >= count,
          timeoutMs,
          `${count} of ${scenario.name}'s mails in ${scenario.mailbox}'s Maildir`,
          50,
        );
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${await logs(mailServer())}`, { cause: error });
      }
    }

    /** Every Message-ID exactly once; the Sieve script active for every copy stored; the counts reported. */
    async function assertExactlyOnce(
      t: TestContext,
      scenario: Scenario,
      queueUrl: string,
      deliveredAtKill: number,
      extra: string,
    ): Promise<void> {
      await waitForDelivered(scenario, MAILS, 90_000);
      await waitUntil(
        async () => {
          const c = await queueCounts(emulators().sqs, queueUrl);
          return c.visible === 0 && c.inFlight === 0;
        },
        60_000,
        'the queue drained',
        100,
      );
      const copies = await settledCopies(scenario);
      const expected = Array.from({ length: MAILS }, (_, i) => `${scenario.name}-${i}@external.test`);
      const missing = expected.filter((id) => !copies.has(id));
      const duplicated = [...copies].filter(([, n]) => n > 1);
      const sieve = await sieveActions(mailServer(), scenario.mailbox, new RegExp(`^${scenario.name}-`));
      t.diagnostic(
        `${scenario.protocol.toUpperCase()}: killed after ${deliveredAtKill} of ${MAILS} delivered; after the restart: ` +
          `${copies.size} distinct, missing ${missing.length}, duplicated ${duplicated.length}; Sieve stored ` +
          `${sieve.stored}, discarded ${sieve.discarded} second cop${sieve.discarded === 1 ? 'y' : 'ies'}${extra}`,
      );
      assert.ok(
        deliveredAtKill > 0 && deliveredAtKill < MAILS,
        `the kill must land mid-run (${deliveredAtKill} delivered at the kill)`,
      );
      assert.deepEqual(missing, [], 'missing Message-IDs');
      assert.deepEqual(duplicated, [], 'Message-IDs in the Maildir more than once');
      // Sieve logs every copy it stores: a stored count of MAILS says the script ran for each of them (and the
      // duplicate test was there to catch a second copy); without it, Dovecot stores without these lines.
      assert.equal(sieve.stored, MAILS, 'the Sieve script was active for every stored copy');
      assert.ok(
        existsSync(duplicateDbPath(mailServer(), scenario.mailbox)),
        "Dovecot's duplicate database exists",
      );
    }

    /** Kills `daemon` once the daemons in `watched` report a quarter of the batch done; returns how many were. */
    async function killMidRun(
      scenario: Scenario,
      daemon: DaemonProcess,
      watched: readonly DaemonProcess[] = [daemon],
    ): Promise<number> {
      // Counted from the daemons' outcome lines, not the Maildir: through Postfix the Maildir lags behind what the
      // daemons handed over, and two daemons would be nearly done before a quarter of it arrived there.
      const done = () =>
        watched.reduce((n, d) => n + outcomeLines(d.logs).filter((l) => l.status === 'delivered').length, 0);
      await waitUntil(() => done() >= MAILS / 4, 60_000, `${MAILS / 4} of ${scenario.name}'s mails done`, 20);
      await daemon.kill9();
      return done();
    }

    for (const scenario of [
      { name: 'kill-lmtp', domain: DOMAIN, mailbox: `alice@${DOMAIN}`, protocol: 'lmtp' },
      { name: 'kill-smtp', domain: DOMAIN, mailbox: `bob@${DOMAIN}`, protocol: 'smtp' },
    ] satisfies Scenario[]) {
      it(`kill -9 mid-batch of ${MAILS} over ${scenario.protocol.toUpperCase()}, restart, drain: every Message-ID exactly once`, async (t) => {
        const queueUrl = await enqueue(scenario);
        const env = daemonEnv(scenario);
        const first = await spawnDaemon({ domains: [scenario.domain], env });
        const deliveredAtKill = await killMidRun(scenario, first);
        const killedAt = Date.now();
        const second = await spawnDaemon({ domains: [scenario.domain], env });
        t.after(() => second.stop());
        await assertExactlyOnce(t, scenario, queueUrl, deliveredAtKill, '');
        t.diagnostic(`kill to drained ${Date.now() - killedAt} ms`);
        assert.ok(!second.logs.some((l) => l.msg === 'poller thread died; restarting'));
      });
    }

    it(`two daemons on one queue, kill -9 of one mid-batch of ${MAILS}: every Message-ID exactly once`, async (t) => {
      // Through Postfix, as the README asks for more than one replica: Dovecot's per-user LMTP limit does not keep
      // two workers' connections from delivering to one mailbox at once, and then Dovecot can lose a delivery-id
      // mark (over LMTP, one CI run stored a Message-ID twice).
      const scenario: Scenario = {
        name: 'pair-smtp',
        domain: 'another.com',
        mailbox: 'carol@another.com',
        protocol: 'smtp',
      };
      const queueUrl = await enqueue(scenario);
      const env = daemonEnv(scenario);
      const [a, b] = await Promise.all([
        spawnDaemon({ domains: [scenario.domain], env }),
        spawnDaemon({ domains: [scenario.domain], env }),
      ]);
      t.after(() => b.stop());
      const deliveredAtKill = await killMidRun(scenario, a, [a, b]);
      const byA = outcomeLines(a.logs).filter((l) => l.status === 'delivered').length;
      await assertExactlyOnce(t, scenario, queueUrl, deliveredAtKill, '');
      const byB = outcomeLines(b.logs).filter((l) => l.status === 'delivered').length;
      t.diagnostic(`delivered outcomes: daemon A ${byA} (before its kill), daemon B ${byB}`);
      assert.ok(byA > 0 && byB > 0, 'both daemons consumed from the queue');
    });
  });
