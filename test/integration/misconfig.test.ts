import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { queueCounts, startStack, type TestStack } from '../harness/emulators.ts';
import { startRig, type Rig } from '../harness/pipeline-rig.ts';
import { buildMime, putMail } from '../harness/ses-events.ts';

/** What ends a mail undelivered, and what must not: a deployment fault is retried, never a reason to delete. */
describe('mail is never dropped for a fault of the deployment', () => {
  const BROKEN = 'broken.test';
  const SMALL = 'small.test';
  const OK = 'ok.test';
  let stack: TestStack;
  let broken: Rig;
  let small: Rig;
  let ok: Rig;

  before(async () => {
    stack = await startStack({ tables: true, domains: [BROKEN, SMALL, OK] });
    broken = await startRig({ domains: [BROKEN], stack, env: { RULES_TABLE: 'no-such-table' } });
    small = await startRig({
      domains: [SMALL],
      stack,
      env: { MAX_MAIL_BYTES: '2048', IN_FLIGHT_BYTES: '4096' },
    });
    ok = await startRig({ domains: [OK], stack });
  });
  after(async () => {
    await Promise.all([broken?.stop(), small?.stop(), ok?.stop()]);
    await stack?.stop();
  });

  it('keeps the message when the rules table does not exist: the domain waits in state error, naming the table', async () => {
    const put = await putMail(stack, {
      domain: BROKEN,
      raw: await buildMime({ from: 'a@external.test', to: `x@${BROKEN}`, subject: 's', text: 'x' }),
      recipients: [`x@${BROKEN}`],
      source: 'a@external.test',
      shape: 'sns-s3',
    });
    const poller = broken.runtimes.get(BROKEN)?.poller;
    assert.ok(poller);
    // The start-up table check found it: the domain does not receive at all (src/daemon/table-guard.ts).
    assert.equal(poller.getStatus().state, 'held');
    assert.match(poller.getStatus().lastError ?? '', /table no-such-table \(rules\): table does not exist/);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(broken.outcomes(put.messageId), [], 'never received');
    assert.equal(broken.mailbox.messages.length, 0);
    const counts = await queueCounts(stack.sqs, put.queueUrl);
    assert.equal(counts.visible, 1, 'still in the queue, visible');
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
    assert.equal(head.Metadata?.status, undefined, 'no verdict written');
  });

  it('records a mail over MAX_MAIL_BYTES as failed in S3 and lets it go', async () => {
    const put = await putMail(stack, {
      domain: SMALL,
      raw: await buildMime({
        from: 'a@external.test',
        to: `x@${SMALL}`,
        subject: 'big',
        text: 'y'.repeat(5000),
      }),
      recipients: [`x@${SMALL}`],
      source: 'a@external.test',
      shape: 'sns-s3',
    });
    const outcome = await small.outcome(put.messageId);
    assert.equal(outcome.status, 'failed');
    assert.equal(outcome.disposition, 'delete');
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
    assert.equal(head.Metadata?.status, 'failed');
    assert.match(head.Metadata?.failure_reason ?? '', /^MAIL_TOO_LARGE: .*MAX_MAIL_BYTES=2048/);
    assert.equal(small.mailbox.messages.length, 0);
  });

  it('delivers an SES bounce unchanged when its outbound record holds an unusable address', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'ses-outbound-messages',
        Item: {
          MessageId: 'bad-record-1',
          original_source: `u@${OK}`,
          bouncedRecipients: ['not an address\r\nBcc: x@y'],
        },
      }),
    );
    const dsn = Buffer.from(
      [
        'From: MAILER-DAEMON@amazonses.com',
        `To: u@${OK}`,
        'Subject: Delivery Status Notification (Failure)',
        'In-Reply-To: <bad-record-1@email.amazonses.com>',
        '',
        'The mail could not be delivered.',
        '',
      ].join('\r\n'),
    );
    const put = await putMail(stack, {
      domain: OK,
      raw: dsn,
      recipients: [`u@${OK}`],
      source: 'MAILER-DAEMON@amazonses.com',
      shape: 'sns-s3',
    });
    const outcome = await ok.outcome(put.messageId);
    assert.equal(outcome.status, 'delivered');
    assert.equal(outcome.bounceRewritten, undefined);
    const delivered = ok.mailbox.messages.find((m) => m.raw.subarray(m.raw.length - dsn.length).equals(dsn));
    assert.ok(delivered, 'the bounce arrived byte for byte');
    assert.doesNotMatch(delivered.raw.toString('latin1'), /^Bcc:/m);
  });
});
