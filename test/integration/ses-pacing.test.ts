/**
 * Forwards at SES's pace: the built daemon against an SES endpoint with a sending quota (test/harness/ses-quota.ts,
 * 5 sends a second, read by the daemon through GetAccount). A burst of forwards beyond that rate goes out paced:
 * every one is sent once, none fails for throttling, and the local copies are not held up behind them — a message
 * waiting for SES gives up its processing slot.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { assertBuilt, killAllDaemons, spawnDaemon, type DaemonProcess } from '../harness/daemon-process.ts';
import { startStack, waitUntil, type TestStack } from '../harness/emulators.ts';
import { outcomeLines, rawMail } from '../harness/faults.ts';
import { startSesQuota, type SesQuotaProxy } from '../harness/ses-quota.ts';
import { putMail } from '../harness/ses-events.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';

const DOMAIN = 'pacing.test';
const FAN = `fan@${DOMAIN}`;
const RATE = 5;
const MAILS = 20;

describe('SES sends paced to the account quota', () => {
  let stack: TestStack;
  let sink: SmtpSink;
  let quota: SesQuotaProxy;
  let daemon: DaemonProcess;

  before(async () => {
    assertBuilt();
    stack = await startStack({ tables: true, domains: [DOMAIN] });
    sink = await startSmtpSink();
    quota = await startSesQuota(stack.ses.endpoint, RATE);
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: FAN, ooo_active: false, forwards: ['friend@elsewhere.test'] },
      }),
    );
    daemon = await spawnDaemon({
      domains: [DOMAIN],
      env: {
        ...stack.env,
        AWS_ENDPOINT_URL_SES: quota.endpoint,
        SMTP_HOST: '127.0.0.1',
        SMTP_PORT: String(sink.port),
        INTERNAL_SMTP_PORT: String(sink.port),
        // Few slots, so that forwards holding them would visibly hold up the local copies.
        MESSAGE_CONCURRENCY: '4',
      },
    });
  });
  after(async () => {
    await killAllDaemons();
    await quota.stop();
    await sink.stop();
    await stack.stop();
  });

  it('sends a burst of forwards at the quota, none failed, local copies first', async () => {
    // The pacer learns the quota from GetAccount at start; give that call its moment.
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (let i = 0; i < MAILS; i++) {
      await putMail(stack, {
        domain: DOMAIN,
        raw: rawMail(`burst-${i}`, FAN),
        recipients: [FAN],
        source: 'list@external.test',
        shape: 'sns-s3',
      });
    }
    await waitUntil(() => quota.accepted.length >= MAILS, 60_000, `${MAILS} forwards through SES`);
    await waitUntil(() => outcomeLines(daemon.logs).length >= MAILS, 30_000, 'every message finished', 50);

    const outcomes = outcomeLines(daemon.logs);
    const effects = outcomes.flatMap((line) => line.effects ?? []);
    assert.equal(effects.length, MAILS, daemon.describe());
    assert.deepEqual(
      effects.filter((e) => e.status !== 'sent'),
      [],
      'no forward failed or was deferred for throttling',
    );
    assert.ok(
      outcomes.every((line) => line.status === 'delivered' && line.disposition === 'delete'),
      'every message finished delivered on its first receive',
    );
    assert.equal(stack.ses.sent.length, MAILS, 'each forward sent exactly once');

    const sendTimes = [...quota.accepted].sort((a, b) => a - b);
    for (let i = RATE; i < sendTimes.length; i++) {
      assert.ok(
        sendTimes[i]! - sendTimes[i - RATE]! >= 900,
        `more than ${RATE} sends within a second around send ${i}`,
      );
    }
    const localTimes = sink.messages.filter((m) => m.to.includes(FAN)).map((m) => m.receivedAt);
    assert.equal(localTimes.length, MAILS);
    const lastLocal = Math.max(...localTimes);
    assert.ok(
      lastLocal < sendTimes[MAILS / 2]!,
      `the local copies (last at +${lastLocal - sendTimes[0]!} ms) waited for the forwards (half sent at +${
        sendTimes[MAILS / 2]! - sendTimes[0]!
      } ms)`,
    );

    const metrics = await daemon.metrics();
    const throttledMetric = Number(/^ses_worker_ses_throttled_total (\d+)/m.exec(metrics)?.[1] ?? NaN);
    assert.equal(throttledMetric, quota.throttled, 'every throttle SES answered is counted');
    const rate = Number(/^ses_worker_ses_send_rate_per_second (\S+)$/m.exec(metrics)?.[1] ?? NaN);
    assert.ok(rate > 0 && rate <= RATE, `the pacer follows the quota read from GetAccount: ${rate}/s`);
    process.stdout.write(
      `# ${MAILS} forwards at ${RATE}/s: sent over ${sendTimes.at(-1)! - sendTimes[0]!} ms, ` +
        `${quota.throttled} throttled by SES; last local copy ${lastLocal - sendTimes[0]!} ms after the first send\n`,
    );
  });
});
