import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { createDomainQueue, queueCounts, waitUntil } from '../harness/emulators.ts';
import { startFaultProxy } from '../harness/faults.ts';
import { ledgerRecord } from '../harness/ledger-record.ts';
import { startRig, type Rig } from '../harness/pipeline-rig.ts';
import {
  buildMime,
  putMail,
  sesBounceDsn,
  sesMessageId,
  sesNotification,
  sesSetupNotification,
  snsEnvelope,
} from '../harness/ses-events.ts';
import { stripVerdicts } from '../harness/verdict-lines.ts';

const DOMAIN = 'example.com';
const OTHER = 'another.com';

let rig: Rig;

async function mail(input: Partial<Parameters<typeof buildMime>[0]> = {}): Promise<Buffer> {
  return buildMime({
    from: 'Sender <sender@external.test>',
    to: `alice@${DOMAIN}`,
    subject: 'Hello',
    text: 'Line one\r\nLine two\r\n',
    ...input,
  });
}

async function metadataOf(
  bucket: string | undefined,
  key: string | undefined,
): Promise<Record<string, string>> {
  const head = await rig.stack.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  return head.Metadata ?? {};
}

describe('pipeline against emulators and SMTP sinks', () => {
  before(async () => {
    rig = await startRig({ domains: [DOMAIN, OTHER], queueOptions: { visibilityTimeout: 30 } });
  });
  after(async () => {
    await rig?.stop();
  });

  it('delivers the S3 object byte for byte; the ledger record holds the verdict of a plain delivery, the S3 object none', async () => {
    const raw = await mail({ attachments: [{ filename: 'a.bin', content: Buffer.alloc(3000, 7) }] });
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw,
      recipients: [`alice@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'delivered');
    assert.equal(outcome.disposition, 'delete');
    const [delivered] = rig.mailbox.messages.filter(
      (m) => m.raw.includes(Buffer.from(put.messageId)) || stripVerdicts(m.raw).equals(raw),
    );
    assert.ok(delivered, 'the mail reached the mailbox port');
    assert.deepEqual(stripVerdicts(delivered.raw), raw);
    assert.deepEqual(delivered.to, [`alice@${DOMAIN}`]);
    assert.equal(delivered.from, 'sender@external.test');
    const metadata = await metadataOf(put.bucket, put.key);
    assert.deepEqual(metadata, {}, 'no CopyObject for a plain delivery');
    const record = await ledgerRecord(rig.stack, put.messageId, DOMAIN);
    assert.equal(record?.verdict, 'delivered');
    assert.ok(Number(record?.verdict_at) > Date.now() / 1000 - 600);
    assert.deepEqual(record?.effects, { [`alice@${DOMAIN}|deliver`]: 'done' });
    assert.equal(record?.owner, undefined, 'the lease was given back');
    const head = await rig.stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
    assert.equal(head.ContentLength, raw.length);
    await waitUntil(
      async () => (await queueCounts(rig.stack.sqs, put.queueUrl)).inFlight === 0,
      5000,
      'delete',
    );
  });

  it('delivers to the valid recipients, records the invalid one and deletes the message', async () => {
    rig.mailbox.setRcptReply(`ghost@${DOMAIN}`, { code: 550, message: '5.1.1 User unknown' });
    const raw = await mail({ to: [`alice@${DOMAIN}`, `bob@${DOMAIN}`, `ghost@${DOMAIN}`] });
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw,
      recipients: [`alice@${DOMAIN}`, `bob@${DOMAIN}`, `ghost@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'partial');
    assert.equal(outcome.disposition, 'delete');
    const states = Object.fromEntries((outcome.recipients ?? []).map((r) => [r.recipient, r.state]));
    assert.deepEqual(states, {
      [`alice@${DOMAIN}`]: 'delivered',
      [`bob@${DOMAIN}`]: 'delivered',
      [`ghost@${DOMAIN}`]: 'invalid',
    });
    const delivered = rig.mailbox.messages.find((m) => stripVerdicts(m.raw).equals(raw));
    assert.deepEqual(delivered?.to.sort(), [`alice@${DOMAIN}`, `bob@${DOMAIN}`]);
    const metadata = await metadataOf(put.bucket, put.key);
    assert.equal(metadata.invalid_inboxes, `ghost@${DOMAIN}`);
    assert.equal(metadata.status, 'partial');
    rig.mailbox.setRcptReply(`ghost@${DOMAIN}`, undefined);
  });

  it('marks a mail whose recipients are all invalid and deletes the message', async () => {
    rig.mailbox.setRcptReply(`nobody@${DOMAIN}`, { code: 550, message: '5.1.1 User unknown' });
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({ to: `nobody@${DOMAIN}` }),
      recipients: [`nobody@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'invalid');
    assert.equal(outcome.disposition, 'delete');
    assert.equal(outcome.recipients?.[0]?.code, 550);
    const metadata = await metadataOf(put.bucket, put.key);
    assert.equal(metadata.status, 'invalid');
    assert.equal(metadata.invalid_inboxes, `nobody@${DOMAIN}`);
  });

  it('keeps the message in the queue when one recipient gets a 4xx', async () => {
    rig.mailbox.setRcptReply(`busy@${DOMAIN}`, { code: 451, message: '4.2.1 Mailbox busy' });
    const raw = await mail({ to: [`carol@${DOMAIN}`, `busy@${DOMAIN}`] });
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw,
      recipients: [`carol@${DOMAIN}`, `busy@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'deferred');
    assert.equal(outcome.disposition, 'retry');
    const busy = outcome.recipients?.find((r) => r.recipient === `busy@${DOMAIN}`);
    assert.equal(busy?.state, 'deferred');
    assert.equal(busy?.code, 451);
    // Still in the queue, hidden for the retry delay; no final verdict written to S3.
    const counts = await queueCounts(rig.stack.sqs, put.queueUrl);
    assert.equal(counts.inFlight, 1);
    const metadata = await metadataOf(put.bucket, put.key);
    assert.equal(metadata.processed, undefined);
    rig.mailbox.setRcptReply(`busy@${DOMAIN}`, undefined);
  });

  it('does not deliver to a recipient who blocked the sender, and deletes a mail blocked for everyone', async () => {
    await rig.stack.ddb.send(
      new PutCommand({
        TableName: 'email-blocked-senders',
        Item: { email_address: `dave@${DOMAIN}`, blocked_patterns: ['*@spam.test'] },
      }),
    );
    await rig.stack.ddb.send(
      new PutCommand({
        TableName: 'email-blocked-senders',
        Item: { email_address: `erin@${DOMAIN}`, blocked_patterns: ['NEWS*@SPAM.TEST', 'other@x.test'] },
      }),
    );
    const all = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({ from: 'news@spam.test', to: `dave@${DOMAIN}` }),
      recipients: [`dave@${DOMAIN}`, `erin@${DOMAIN}`],
      source: 'news@spam.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(all.messageId);
    assert.equal(outcome.status, 'blocked');
    assert.equal(outcome.disposition, 'delete');
    await assert.rejects(
      rig.stack.s3.send(new HeadObjectCommand({ Bucket: all.bucket, Key: all.key })),
      /NotFound/,
    );

    const some = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({ from: 'other@spam.test', to: [`dave@${DOMAIN}`, `erin@${DOMAIN}`] }),
      recipients: [`dave@${DOMAIN}`, `erin@${DOMAIN}`],
      source: 'other@spam.test',
      shape: 'sns-s3',
    });
    const partial = await rig.outcome(some.messageId);
    assert.equal(partial.status, 'partial');
    const states = Object.fromEntries((partial.recipients ?? []).map((r) => [r.recipient, r.state]));
    assert.deepEqual(states, { [`dave@${DOMAIN}`]: 'blocked', [`erin@${DOMAIN}`]: 'delivered' });
    const metadata = await metadataOf(some.bucket, some.key);
    assert.equal(metadata.blocked_sender, 'other@spam.test');
    const delivered = rig.mailbox.messages.filter((m) => m.raw.includes(Buffer.from('other@spam.test')));
    assert.deepEqual(
      delivered.map((m) => m.to),
      [[`erin@${DOMAIN}`]],
    );
  });

  it('auto-replies to an external sender through SES and to an internal sender through the internal port', async () => {
    await rig.stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `frank@${DOMAIN}`, ooo_active: true, ooo_message: 'I am away until Monday.' },
      }),
    );
    rig.stack.ses.clear();
    const external = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({
        from: 'Pat <pat@external.test>',
        to: `frank@${DOMAIN}`,
        subject: 'Meeting',
        messageId: '<orig-1@external.test>',
      }),
      recipients: [`frank@${DOMAIN}`],
      source: 'pat@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(external.messageId);
    assert.equal(outcome.effects?.[0]?.status, 'sent');
    assert.equal(outcome.effects?.[0]?.route, 'ses');
    const [reply] = await rig.stack.ses.waitForSent(1);
    assert.deepEqual(reply?.destinations, ['pat@external.test']);
    const text = reply?.raw.toString('utf8') ?? '';
    assert.match(text, /^Subject: Auto: Meeting\r$/m);
    assert.match(text, /^Auto-Submitted: auto-replied\r$/m);
    assert.match(text, /^In-Reply-To: <orig-1@external\.test>\r$/m);
    assert.match(text, /^X-SES-Worker-Processed: /im);
    assert.match(text, /I am away until Monday\./);

    const internalSender = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({ from: `gina@${OTHER}`, to: `frank@${DOMAIN}`, subject: 'Lunch?' }),
      recipients: [`frank@${DOMAIN}`],
      source: `gina@${OTHER}`,
      shape: 'sns-s3',
    });
    const internalOutcome = await rig.outcome(internalSender.messageId);
    assert.equal(internalOutcome.effects?.[0]?.route, 'internal');
    const [viaInternal] = await rig.internal.waitFor(1);
    assert.deepEqual(viaInternal?.to, [`gina@${OTHER}`]);
    assert.equal(viaInternal?.from, '', 'auto-replies use the null envelope sender');
    assert.match(viaInternal?.raw.toString('utf8') ?? '', /^Subject: Auto: Lunch\?\r$/m);
    assert.equal(rig.stack.ses.sent.length, 1, 'the internal reply did not go through SES');
  });

  it('forwards to an internal target through the internal port and to an external one through SES', async () => {
    await rig.stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: {
          email_address: `hank@${DOMAIN}`,
          ooo_active: false,
          forwards: [`ivy@${OTHER}`, 'hank@gmail.test'],
        },
      }),
    );
    rig.stack.ses.clear();
    rig.internal.clear();
    const raw = await mail({
      to: `hank@${DOMAIN}`,
      subject: 'Invoice',
      attachments: [{ filename: 'i.pdf', content: Buffer.alloc(2000, 1) }],
    });
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw,
      recipients: [`hank@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.deepEqual(
      outcome.effects?.map((e) => [e.kind, e.target, e.route, e.status]),
      [
        ['forward', `ivy@${OTHER}`, 'internal', 'sent'],
        ['forward', 'hank@gmail.test', 'ses', 'sent'],
      ],
    );
    const body = raw.subarray(raw.indexOf('\r\n\r\n'));
    const [internal] = await rig.internal.waitFor(1);
    assert.deepEqual(internal?.to, [`ivy@${OTHER}`]);
    assert.ok(internal?.raw.subarray(internal.raw.indexOf('\r\n\r\n')).equals(body), 'body bytes preserved');
    const [external] = await rig.stack.ses.waitForSent(1);
    assert.deepEqual(external?.destinations, ['hank@gmail.test']);
    const headers = external?.raw.subarray(0, external.raw.indexOf('\r\n\r\n')).toString('utf8') ?? '';
    assert.match(headers, /^Subject: FWD: Invoice$/m);
    assert.match(headers, /^Reply-To: .*sender@external\.test/m);
    assert.match(headers, /^From: .*<hank@example\.com>$/m);
    assert.ok(
      external?.raw.subarray(external.raw.indexOf('\r\n\r\n')).equals(body),
      'SES copy keeps body bytes',
    );
  });

  it('rewrites an SES bounce from the outbound table', async () => {
    await rig.stack.ddb.send(
      new PutCommand({
        TableName: 'ses-outbound-messages',
        Item: {
          MessageId: '0100018cabc-out-1',
          original_source: `jane@${DOMAIN}`,
          bouncedRecipients: ['failed@remote.test'],
        },
      }),
    );
    const dsn = sesBounceDsn({
      from: `jane@${DOMAIN}`,
      outboundMessageId: '0100018cabc-out-1',
      bounceMessageId: 'bounce-1',
    });
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: dsn,
      recipients: [`jane@${DOMAIN}`],
      source: 'MAILER-DAEMON@amazonses.com',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.bounceRewritten, true);
    const delivered = rig.mailbox.messages.find((m) =>
      m.raw.includes(Buffer.from('bounce-1@email.amazonses.com')),
    );
    const head = delivered?.raw.subarray(0, delivered.raw.indexOf('\r\n\r\n')).toString('utf8') ?? '';
    assert.match(head, /^From: .*failed@remote\.test/m);
    assert.match(head, /^Reply-To: .*jane@example\.com/m);
    assert.match(head, /^X-Original-From: MAILER-DAEMON@amazonses\.com$/m);
  });

  it('delivers a mail carrying the loop marker but runs no rules on it', async () => {
    await rig.stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: {
          email_address: `kim@${DOMAIN}`,
          ooo_active: true,
          ooo_message: 'away',
          forwards: ['kim@gmail.test'],
        },
      }),
    );
    rig.stack.ses.clear();
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({
        to: `kim@${DOMAIN}`,
        headers: { 'X-SES-Worker-Processed': 'worker-another.com; id=x' },
      }),
      recipients: [`kim@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'delivered');
    assert.equal(outcome.loopMarker, true);
    assert.equal(outcome.effects, undefined);
    assert.equal(rig.stack.ses.sendAttempts, 0);
  });

  it('ignores recipients of other domains and deletes a message with none of ours', async () => {
    const before = rig.mailbox.messages.length;
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw: await mail({ to: 'x@elsewhere.test' }),
      recipients: ['x@elsewhere.test', `y@${OTHER}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'wrong-domain');
    assert.equal(outcome.disposition, 'delete');
    assert.equal(rig.mailbox.messages.length, before);
    assert.ok(
      rig.logs.some(
        (l) => l.msg === 'Security: ignored message for wrong domain' && l.sesMessageId === put.messageId,
      ),
    );
  });

  it('waits for an S3 object that appears late', async (t) => {
    // Its own domain and a rig whose S3 calls go through a counting proxy (no rule): the object is put only once
    // the worker has asked for it and been told NoSuchKey, so the retry is exercised, not a lucky first read.
    const domain = 'late.test';
    const bucket = 'late-test-emails';
    const queue = await createDomainQueue(rig.stack.sqs, domain, { visibilityTimeout: 30 });
    const s3 = await startFaultProxy(rig.stack.endpoints.s3);
    const lateRig = await startRig({
      stack: rig.stack,
      domains: [domain],
      env: { AWS_ENDPOINT_URL_S3: s3.endpoint },
    });
    t.after(async () => {
      await lateRig.stop();
      await s3.stop();
    });
    const raw = await mail({ to: `alice@${domain}`, subject: 'Late object' });
    const id = sesMessageId();
    // A second recipient the server refuses: a partial delivery, so the audit writes a verdict onto the object.
    lateRig.mailbox.setRcptReply(`nobody@${domain}`, { code: 550, message: '5.1.1 User unknown' });
    await rig.stack.s3.send(new CreateBucketCommand({ Bucket: bucket })).catch(() => undefined);
    const notification = sesNotification({
      messageId: id,
      source: 'late@external.test',
      recipients: [`alice@${domain}`, `nobody@${domain}`],
      bucket,
      key: id,
      raw,
    });
    await rig.stack.sqs.send(
      new SendMessageCommand({
        QueueUrl: queue.queueUrl,
        MessageBody: snsEnvelope(JSON.stringify(notification)),
      }),
    );
    const getsOfId = () =>
      s3.requests.filter((r) => r.operation === 'GetObject' && r.path.endsWith(`/${id}`));
    await waitUntil(() => getsOfId().some((r) => r.status !== undefined), 10_000, 'the first GetObject');
    assert.equal(getsOfId()[0]?.status, 404, 'the first GetObject found the object already there');
    await rig.stack.s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: id,
        Body: raw,
        ContentType: 'message/rfc822',
        Metadata: { 'ses-rule': 'inbound' },
      }),
    );
    const outcome = await lateRig.outcome(id);
    assert.equal(outcome.status, 'partial');
    assert.equal(outcome.receiveCount, 1, 'found within the first receive, not after a retry');
    assert.equal(getsOfId().at(-1)?.status, 200);
    const copies = lateRig.mailbox.messages.filter((m) => stripVerdicts(m.raw).equals(raw));
    assert.equal(copies.length, 1);
    // The audit update restates what was on the object: content type and earlier metadata survive.
    const head = await rig.stack.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: id }));
    assert.equal(head.ContentType, 'message/rfc822');
    assert.equal(head.ContentLength, raw.length);
    assert.equal(head.Metadata?.['ses-rule'], 'inbound');
    assert.equal(head.Metadata?.status, 'partial');
  });

  it('delivers a mail mailparser cannot make sense of, raw', async () => {
    const raw = Buffer.concat([
      Buffer.from(
        'From: broken@external.test\r\nContent-Type: multipart/mixed; boundary="\r\n\r\n--\x00\xff\xfe',
      ),
      Buffer.alloc(5000, 0xff),
      Buffer.from('\r\n--unterminated'),
    ]);
    const put = await putMail(rig.stack, {
      domain: DOMAIN,
      raw,
      recipients: [`alice@${DOMAIN}`],
      source: 'broken@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'delivered');
    // SMTP ends DATA on a line boundary, so the one thing the wire adds is the final CRLF this mail lacks.
    const expected = Buffer.concat([raw, Buffer.from('\r\n')]);
    assert.ok(
      rig.mailbox.messages.some((m) => stripVerdicts(m.raw).equals(expected)),
      'raw bytes delivered unchanged',
    );
  });

  it('handles all three body shapes, acknowledges the setup notification and leaves garbage for the DLQ', async () => {
    const queueUrl = rig.stack.queues[OTHER]?.queueUrl ?? '';
    const shapes = ['sns-s3', 'raw-s3', 'sns-inline'] as const;
    const puts = [];
    for (const shape of shapes) {
      puts.push(
        await putMail(rig.stack, {
          domain: OTHER,
          raw: await mail({ to: `lena@${OTHER}`, subject: `shape ${shape}` }),
          recipients: [`lena@${OTHER}`],
          source: 'sender@external.test',
          shape,
        }),
      );
    }
    await rig.stack.sqs.send(
      new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: sesSetupNotification() }),
    );
    await rig.stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'this is not json' }));
    await rig.stack.sqs.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: '{"Type":"Notification","Message":"{\\"foo\\":1}"}',
      }),
    );
    for (const put of puts) {
      const outcome = await rig.outcome(put.messageId);
      assert.equal(outcome.status, 'delivered', put.body.slice(0, 40));
    }
    for (const shape of shapes) {
      assert.ok(
        rig.mailbox.messages.some((m) => m.raw.includes(Buffer.from(`Subject: shape ${shape}`))),
        shape,
      );
    }
    await waitUntil(
      () => rig.logs.filter((l) => l.status === 'malformed').length >= 2,
      5000,
      'malformed logged',
    );
    await waitUntil(() => rig.logs.some((l) => l.status === 'setup'), 5000, 'setup acknowledged');
    const malformed = rig.logs.filter((l) => l.status === 'malformed');
    assert.ok(malformed.every((l) => typeof l.sqsMessageId === 'string' && l.level === 'error'));
    // The two garbage bodies are still in the queue (in flight until their visibility timeout), nothing else is.
    await waitUntil(
      async () => {
        const counts = await queueCounts(rig.stack.sqs, queueUrl);
        return counts.visible === 0 && counts.inFlight === 2;
      },
      5000,
      'only the garbage left in the queue',
    );
  });
});
