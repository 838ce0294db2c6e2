/**
 * SES account states (sending paused, suspended, MAIL FROM or identity not verified, access denied, a missing
 * configuration set) are faults of
 * the deployment, not verdicts on the mail: the mailbox copy stands, the forward waits (held in the queue, retried
 * in place) while the domain shows degraded, and goes out once when SES sends again. The SES emulator cannot pause
 * an account: its recording proxy answers the sends with SES's errors (test/harness/emulators.ts, `failNext`).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { startStack, waitUntil, type TestStack } from '../harness/emulators.ts';
import { countBySeq, rawMail } from '../harness/faults.ts';
import { startRig, type Rig } from '../harness/pipeline-rig.ts';
import { putMail } from '../harness/ses-events.ts';

const DOMAIN = 'paused.test';
const FORWARDER = `fwd@${DOMAIN}`;
const TARGET = 'friend@outside.test';

async function gauge(rig: Rig, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const values = (await rig.metrics.registry.getSingleMetric(name)?.get())?.values ?? [];
  return values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value))?.value;
}

describe('SES account states are deployment faults', () => {
  let stack: TestStack;
  let rig: Rig;
  before(async () => {
    stack = await startStack({ tables: true, domains: [DOMAIN], queueOptions: { visibilityTimeout: 5 } });
    rig = await startRig({ stack, domains: [DOMAIN], env: { OUTAGE_PROBE_SECONDS: '1' } });
    await stack.ddb.send(
      new PutCommand({
        TableName: rig.config.tables.rules,
        Item: { email_address: FORWARDER, forwards: [TARGET] },
      }),
    );
  });
  after(async () => {
    await rig?.stop();
    await stack?.stop();
  });

  for (const [code, message] of [
    ['SendingPausedException', 'Sending is paused for this account.'],
    ['MailFromDomainNotVerifiedException', 'The MAIL FROM domain is not verified.'],
    [
      'MessageRejected',
      'Email address is not verified. The following identities failed the check: fwd@paused.test',
    ],
    ['AccessDeniedException', 'User is not authorized to perform ses:SendEmail'],
    ['NotFoundException', 'Configuration set <unified-worker> does not exist.'],
  ] as const) {
    it(`${code}: the mailbox copy stands, the forward waits while the domain is degraded, then goes out once`, async () => {
      stack.ses.clear();
      const seq = `paused-${code}`;
      const sends = 3;
      const status = { AccessDeniedException: 403, NotFoundException: 404 }[code as string] ?? 400;
      stack.ses.failNext(sends, { status, code, message });
      const put = await putMail(stack, {
        domain: DOMAIN,
        raw: rawMail(seq, FORWARDER),
        recipients: [FORWARDER],
        source: 'sender@external.test',
        shape: 'sns-s3',
      });
      const first = await rig.outcome(put.messageId);
      assert.equal(first.recipients?.[0]?.state, 'delivered', 'the mailbox copy does not wait for SES');
      assert.equal(first.effects?.[0]?.status, 'deferred');
      assert.equal(first.disposition, 'park');
      const poller = rig.runtimes.get(DOMAIN)?.poller;
      assert.match(poller?.getStatus().degraded ?? '', new RegExp(`^SES: ${code}`));
      assert.equal(
        await gauge(rig, 'ses_worker_deployment_check_failed', { domain: DOMAIN, check: 'ses' }),
        1,
      );

      await stack.ses.waitForSent(1, 20_000);
      await waitUntil(
        () => poller?.getStatus().degraded === undefined,
        10_000,
        'the domain no longer degraded',
      );
      await waitUntil(() => rig.outcomes(put.messageId).at(-1)?.disposition === 'delete', 10_000, 'settled');
      assert.equal(stack.ses.sent.length, 1, 'the forward went out once');
      assert.equal(stack.ses.sendAttempts, sends + 1, 'one send per attempt: no blind repeats');
      assert.equal(countBySeq(rig.mailbox.messages).get(seq), 1, 'the mailbox copy was not delivered again');
      assert.equal(
        rig.outcomes(put.messageId).at(-1)?.receiveCount,
        1,
        'retried in place, not received again',
      );
      assert.equal(
        await gauge(rig, 'ses_worker_deployment_check_failed', { domain: DOMAIN, check: 'ses' }),
        0,
      );
    });
  }

  it('a content rejection (MessageRejected) is final and recorded, not retried', async () => {
    stack.ses.clear();
    stack.ses.failNext(1, {
      status: 400,
      code: 'MessageRejected',
      message: 'Transaction failed: virus detected',
    });
    const put = await putMail(stack, {
      domain: DOMAIN,
      raw: rawMail('rejected-content', FORWARDER),
      recipients: [FORWARDER],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.disposition, 'delete');
    assert.equal(outcome.effects?.[0]?.status, 'failed');
    assert.equal(stack.ses.sendAttempts, 1);
  });
});
