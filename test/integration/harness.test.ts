/**
 * Proves the integration-test harness against real clients: every emulator speaks the protocol the daemon's SDK
 * clients and SMTP client expect, byte-exactness holds where the daemon depends on it, and fault injection produces
 * the errors the daemon will see in production.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { SendEmailCommand } from '@aws-sdk/client-sesv2';
import { SendRawEmailCommand, SESClient } from '@aws-sdk/client-ses';
import nodemailer from 'nodemailer';

import {
  clientConfig,
  createDomainQueue,
  drainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import { startSmtpSink, type SmtpSink } from '../harness/smtp-sink.ts';
import {
  buildMime,
  putMail,
  sesNotification,
  sesSetupNotification,
  snsEnvelope,
} from '../harness/ses-events.ts';

/** Narrows an unknown rejection to the fields AWS SDK errors carry. */
function sdkError(err: unknown): { name: string; message: string; status: number | undefined } {
  assert.ok(err instanceof Error, 'expected an Error');
  const metadata: unknown = (err as { $metadata?: unknown }).$metadata;
  const status =
    typeof metadata === 'object' && metadata !== null && 'httpStatusCode' in metadata
      ? Number(metadata.httpStatusCode)
      : undefined;
  return { name: err.name, message: err.message, status };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the promise to reject');
}

/** A message whose bytes an SMTP hop could easily alter: dot-stuffing, a long line, 8-bit text, CRLF. */
const TRICKY_MIME = Buffer.from(
  [
    'From: Alice <alice@sender.test>',
    'To: bob@example.com',
    'Subject: =?UTF-8?B?w6TDtsO8?=',
    'Message-ID: <tricky-1@sender.test>',
    'X-Custom:   keeps   spacing',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    '.leading dot must survive dot-stuffing',
    '..two dots',
    'Grüße ' + 'x'.repeat(900),
    '.',
    'end',
    '',
  ].join('\r\n'),
  'utf8',
);

let stack: TestStack;

// How long the stack takes to start is measured in bench/harness.bench.ts, not limited here.
before(async () => {
  stack = await startStack({ tables: true, domains: ['example.com'] });
});

after(async () => {
  await stack.stop();
});

describe('stack', () => {
  test('exposes endpoints and env for a child process', () => {
    for (const endpoint of Object.values(stack.endpoints))
      assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(stack.env.AWS_REGION, 'us-east-1');
    assert.equal(stack.env.AWS_ENDPOINT_URL_SQS, stack.endpoints.sqs);
    assert.equal(stack.env.AWS_ENDPOINT_URL_S3, stack.endpoints.s3);
    assert.equal(stack.env.AWS_ENDPOINT_URL_SES, stack.endpoints.ses);
    assert.equal(stack.env.AWS_ENDPOINT_URL_DYNAMODB, stack.endpoints.dynamodb);
    assert.equal(stack.env.S3_FORCE_PATH_STYLE, 'true');
    assert.equal(stack.env.RULES_TABLE, 'email-rules');
  });
});

describe('SQS (fauxqs)', () => {
  test('queue URLs point at 127.0.0.1, not at an unresolvable sqs.<region>.localhost', () => {
    const queue = stack.queues['example.com'];
    assert.ok(queue);
    assert.equal(queue.queueName, 'example-com-queue');
    assert.equal(queue.queueUrl, `${stack.endpoints.sqs}/000000000000/example-com-queue`);
  });

  test('send, receive, count, delete round trip', async () => {
    const { queueUrl } = await createDomainQueue(stack.sqs, 'roundtrip.test', { visibilityTimeout: 30 });
    const sent = await stack.sqs.send(
      new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: '{"hello":1}' }),
    );
    assert.ok(sent.MessageId);
    assert.deepEqual(await queueCounts(stack.sqs, queueUrl), { visible: 1, inFlight: 0 });

    const received = await stack.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        WaitTimeSeconds: 1,
        MessageSystemAttributeNames: ['All'],
      }),
    );
    const message = received.Messages?.[0];
    assert.ok(message?.ReceiptHandle);
    assert.equal(message.Body, '{"hello":1}');
    assert.equal(message.Attributes?.ApproximateReceiveCount, '1');
    assert.deepEqual(await queueCounts(stack.sqs, queueUrl), { visible: 0, inFlight: 1 });

    await stack.sqs.send(
      new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }),
    );
    assert.deepEqual(await queueCounts(stack.sqs, queueUrl), { visible: 0, inFlight: 0 });
    const attributes = await stack.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: queueUrl,
        AttributeNames: ['VisibilityTimeout', 'QueueArn'],
      }),
    );
    assert.equal(attributes.Attributes?.VisibilityTimeout, '30');
    assert.equal(attributes.Attributes?.QueueArn, 'arn:aws:sqs:us-east-1:000000000000:roundtrip-test-queue');
  });

  test('a client configured only through AWS_ENDPOINT_URL_SQS can use the queue URLs', async () => {
    // Without an explicit `endpoint` the SDK routes by the QueueUrl host; that is what the queue-URL fix is for.
    const saved = process.env.AWS_ENDPOINT_URL_SQS;
    process.env.AWS_ENDPOINT_URL_SQS = stack.endpoints.sqs;
    const agent = new http.Agent({ keepAlive: true });
    const { endpoint: _unused, ...config } = clientConfig(stack.endpoints.sqs, agent);
    const client = new SQSClient(config);
    try {
      const queueUrl = stack.queues['example.com']?.queueUrl ?? '';
      await client.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'via env' }));
      assert.deepEqual(await drainQueue(stack.sqs, queueUrl), ['via env']);
    } finally {
      client.destroy();
      agent.destroy();
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_SQS;
      else process.env.AWS_ENDPOINT_URL_SQS = saved;
    }
  });

  test('redrive moves a message to the DLQ after maxReceiveCount receives', async () => {
    const { queueUrl, dlqUrl } = await createDomainQueue(stack.sqs, 'dlq.test', {
      withDlq: true,
      maxReceiveCount: 2,
    });
    assert.ok(dlqUrl);
    assert.match(dlqUrl, /dlq-test-queue-dlq$/);
    await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'poison' }));
    for (let i = 0; i < 2; i++) {
      const { Messages } = await stack.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 1 }),
      );
      const handle = Messages?.[0]?.ReceiptHandle;
      assert.ok(handle, `receive #${i + 1}`);
      // Simulate a failed attempt that gives the message back right away.
      await stack.sqs.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: queueUrl,
          ReceiptHandle: handle,
          VisibilityTimeout: 0,
        }),
      );
    }
    const { Messages } = await stack.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0 }),
    );
    assert.equal(Messages?.length ?? 0, 0, 'third receive finds nothing: the message went to the DLQ');
    assert.deepEqual(await drainQueue(stack.sqs, dlqUrl), ['poison']);
  });
});

describe('S3 (fauxqs)', () => {
  test('put, get, copy-in-place with REPLACE metadata, head, delete', async () => {
    const Bucket = 'harness-s3-test';
    const Key = 'inbox/abc123';
    await stack.s3.send(new CreateBucketCommand({ Bucket }));
    await stack.s3.send(
      new PutObjectCommand({
        Bucket,
        Key,
        Body: TRICKY_MIME,
        ContentType: 'message/rfc822',
        Metadata: { a: '1' },
      }),
    );
    const got = await stack.s3.send(new GetObjectCommand({ Bucket, Key }));
    assert.ok(got.Body);
    assert.deepEqual(Buffer.from(await got.Body.transformToByteArray()), TRICKY_MIME);

    // The daemon marks processed mail by copying an object onto itself with new metadata.
    await stack.s3.send(
      new CopyObjectCommand({
        Bucket,
        Key,
        CopySource: `${Bucket}/${Key}`,
        MetadataDirective: 'REPLACE',
        ContentType: 'message/rfc822',
        Metadata: { processed: 'true', 'processed-by': 'harness' },
      }),
    );
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket, Key }));
    assert.equal(head.ContentType, 'message/rfc822');
    assert.deepEqual(head.Metadata, { processed: 'true', 'processed-by': 'harness' });
    assert.equal(head.ContentLength, TRICKY_MIME.length);
    const again = await stack.s3.send(new GetObjectCommand({ Bucket, Key }));
    assert.ok(again.Body);
    assert.deepEqual(Buffer.from(await again.Body.transformToByteArray()), TRICKY_MIME);

    await stack.s3.send(new DeleteObjectCommand({ Bucket, Key }));
    const err = sdkError(await rejection(stack.s3.send(new HeadObjectCommand({ Bucket, Key }))));
    assert.equal(err.status, 404);
    assert.equal(err.name, 'NotFound');
  });
});

describe('DynamoDB (dynalite)', () => {
  test('tables exist and a conditional put on an existing key fails with ConditionalCheckFailedException', async () => {
    const TableName = stack.tables?.idempotency ?? '';
    await stack.ddb.send(
      new PutCommand({ TableName, Item: { pk: 'msg-1', state: 'delivered', skipped: undefined } }),
    );
    const conditional = new PutCommand({
      TableName,
      Item: { pk: 'msg-1', state: 'again' },
      ConditionExpression: 'attribute_not_exists(pk)',
    });
    const err = sdkError(await rejection(stack.ddb.send(conditional)));
    assert.equal(err.name, 'ConditionalCheckFailedException');
    assert.equal(err.status, 400);
    const { Item } = await stack.ddb.send(new GetCommand({ TableName, Key: { pk: 'msg-1' } }));
    assert.deepEqual(Item, { pk: 'msg-1', state: 'delivered' });
  });

  test('the other tables use the expected hash keys', async () => {
    const tables = stack.tables;
    assert.ok(tables);
    await stack.ddb.send(
      new PutCommand({ TableName: tables.rules, Item: { email_address: 'a@example.com' } }),
    );
    await stack.ddb.send(
      new PutCommand({ TableName: tables.blocklist, Item: { email_address: 'a@example.com' } }),
    );
    await stack.ddb.send(new PutCommand({ TableName: tables.outbound, Item: { MessageId: 'x' } }));
    await stack.ddb.send(new PutCommand({ TableName: tables.oooState, Item: { pk: 'a@example.com#b@x' } }));
  });
});

describe('SES (aws-ses-v2-local behind the recording proxy)', () => {
  test('v2 raw send is recorded with the exact bytes, destinations and from', async () => {
    stack.ses.clear();
    const out = await stack.sesv2.send(
      new SendEmailCommand({
        FromEmailAddress: 'forwarder@example.com',
        Destination: { ToAddresses: ['dest@elsewhere.test'], BccAddresses: ['hidden@elsewhere.test'] },
        Content: { Raw: { Data: new Uint8Array(TRICKY_MIME) } },
      }),
    );
    assert.ok(out.MessageId);
    const [mail] = await stack.ses.waitForSent(1);
    assert.ok(mail);
    assert.equal(mail.api, 'v2');
    assert.deepEqual(mail.raw, TRICKY_MIME);
    assert.deepEqual(mail.destinations, ['dest@elsewhere.test', 'hidden@elsewhere.test']);
    assert.equal(mail.from, 'forwarder@example.com');
    assert.equal(mail.messageId, out.MessageId);
  });

  test('v1 SendRawEmail is recorded too', async () => {
    stack.ses.clear();
    const agent = new http.Agent({ keepAlive: true });
    const v1 = new SESClient(clientConfig(stack.endpoints.ses, agent));
    try {
      const out = await v1.send(
        new SendRawEmailCommand({
          RawMessage: { Data: new Uint8Array(TRICKY_MIME) },
          Destinations: ['one@elsewhere.test', 'two@elsewhere.test'],
          Source: 'bounce@example.com',
        }),
      );
      assert.ok(out.MessageId);
      assert.equal(stack.ses.sent.length, 1);
      const mail = stack.ses.sent[0];
      assert.ok(mail);
      assert.equal(mail.api, 'v1');
      assert.deepEqual(mail.raw, TRICKY_MIME);
      assert.deepEqual(mail.destinations, ['one@elsewhere.test', 'two@elsewhere.test']);
      assert.equal(mail.from, 'bounce@example.com');
      assert.equal(mail.messageId, out.MessageId);

      stack.ses.failNext(1, { status: 400, code: 'Throttling', message: 'Maximum sending rate exceeded.' });
      const err = sdkError(
        await rejection(
          v1.send(
            new SendRawEmailCommand({
              RawMessage: { Data: new Uint8Array(TRICKY_MIME) },
              Destinations: ['x@y.test'],
            }),
          ),
        ),
      );
      assert.equal(err.name, 'Throttling');
      assert.equal(err.status, 400);
      assert.equal(err.message, 'Maximum sending rate exceeded.');
      assert.equal(stack.ses.sent.length, 1, 'a failed send is not recorded');
    } finally {
      v1.destroy();
      agent.destroy();
    }
  });

  test('v2 fault injection yields the SDK error name and HTTP status, then recovers', async () => {
    stack.ses.clear();
    stack.ses.failNext(2, {
      status: 429,
      code: 'TooManyRequestsException',
      message: 'Maximum sending rate exceeded.',
    });
    const send = (): Promise<unknown> =>
      stack.sesv2.send(
        new SendEmailCommand({
          FromEmailAddress: 'forwarder@example.com',
          Destination: { ToAddresses: ['dest@elsewhere.test'] },
          Content: { Raw: { Data: new Uint8Array(TRICKY_MIME) } },
        }),
      );
    for (let i = 0; i < 2; i++) {
      const err = sdkError(await rejection(send()));
      assert.equal(err.name, 'TooManyRequestsException');
      assert.equal(err.status, 429);
      assert.equal(err.message, 'Maximum sending rate exceeded.');
    }
    stack.ses.failNext(1, {
      status: 400,
      code: 'MessageRejected',
      message: 'Email address is not verified.',
    });
    const rejected = sdkError(await rejection(send()));
    assert.equal(rejected.name, 'MessageRejected');
    assert.equal(rejected.status, 400);
    assert.equal(stack.ses.sent.length, 0);

    await send();
    assert.equal(stack.ses.sent.length, 1);
    assert.equal(stack.ses.sendAttempts, 4);
  });
});

describe('SMTP/LMTP sink', () => {
  let smtp: SmtpSink;
  let lmtp: SmtpSink;
  before(async () => {
    [smtp, lmtp] = await Promise.all([startSmtpSink(), startSmtpSink({ lmtp: true })]);
  });
  after(async () => {
    await Promise.all([smtp.stop(), lmtp.stop()]);
  });

  test('receives the raw bytes exactly through a pooled nodemailer transport', async () => {
    smtp.clear();
    const transport = nodemailer.createTransport({
      pool: true,
      host: '127.0.0.1',
      port: smtp.port,
      ignoreTLS: true,
    });
    try {
      for (let i = 0; i < 2; i++) {
        const info = await transport.sendMail({
          envelope: { from: 'alice@sender.test', to: ['bob@example.com', 'carol@example.com'] },
          raw: TRICKY_MIME,
        });
        assert.deepEqual(info.accepted, ['bob@example.com', 'carol@example.com']);
      }
    } finally {
      transport.close();
    }
    const messages = await smtp.waitFor(2);
    assert.equal(messages.length, 2);
    for (const m of messages) {
      assert.deepEqual(m.raw, TRICKY_MIME);
      assert.equal(m.from, 'alice@sender.test');
      assert.deepEqual(m.to, ['bob@example.com', 'carol@example.com']);
    }
    assert.equal(smtp.connections, 1, 'the pool reused its connection');
    assert.equal(smtp.maxConcurrentConnections, 1);
  });

  test('SMTP: scripted RCPT and DATA replies', async () => {
    smtp.clear();
    smtp.setRcptReply('full@example.com', { code: 452, message: '4.2.2 Mailbox full' });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtp.port, ignoreTLS: true });
    try {
      const info = await transport.sendMail({
        envelope: { from: 'alice@sender.test', to: ['bob@example.com', 'full@example.com'] },
        raw: TRICKY_MIME,
      });
      assert.deepEqual(info.accepted, ['bob@example.com']);
      assert.deepEqual(info.rejected, ['full@example.com']);
      assert.deepEqual(smtp.messages[0]?.to, ['bob@example.com']);

      smtp.setDataReply('bob@example.com', { code: 554, message: '5.6.0 Content rejected' });
      const err: unknown = await rejection(
        transport.sendMail({
          envelope: { from: 'a@sender.test', to: ['bob@example.com'] },
          raw: TRICKY_MIME,
        }),
      );
      assert.ok(err instanceof Error);
      assert.equal((err as Error & { responseCode?: number }).responseCode, 554);
      assert.equal(smtp.messages.length, 1, 'the rejected message is not recorded');
    } finally {
      smtp.setRcptReply('full@example.com', undefined);
      smtp.setDataReply('bob@example.com', undefined);
      transport.close();
    }
  });

  test('LMTP: per-recipient rejections surface in info.rejected', async () => {
    lmtp.clear();
    lmtp.setRcptReply('unknown@example.com', { code: 550, message: '5.1.1 User unknown' });
    lmtp.setDataReply('quota@example.com', { code: 452, message: '4.2.2 Quota exceeded' });
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: lmtp.port,
      lmtp: true,
      ignoreTLS: true,
    });
    try {
      const info = await transport.sendMail({
        envelope: {
          from: 'alice@sender.test',
          to: ['bob@example.com', 'unknown@example.com', 'quota@example.com'],
        },
        raw: TRICKY_MIME,
      });
      assert.deepEqual(info.accepted, ['bob@example.com']);
      assert.deepEqual([...info.rejected].sort(), ['quota@example.com', 'unknown@example.com']);
      const codes = new Map(
        (info.rejectedErrors ?? []).map((e) => [
          e.recipient,
          (e as Error & { responseCode?: number }).responseCode,
        ]),
      );
      assert.equal(codes.get('unknown@example.com'), 550);
      assert.equal(codes.get('quota@example.com'), 452);
    } finally {
      transport.close();
    }
    const [message] = await lmtp.waitFor(1);
    assert.ok(message);
    assert.deepEqual(message.to, ['bob@example.com']);
    assert.deepEqual(message.raw, TRICKY_MIME);
  });

  test('down() refuses connections and up() serves again on the same port', async () => {
    smtp.clear();
    const port = smtp.port;
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
    const mail = { envelope: { from: 'a@sender.test', to: ['bob@example.com'] }, raw: TRICKY_MIME };
    try {
      await smtp.down();
      assert.equal(smtp.isUp, false);
      const err: unknown = await rejection(transport.sendMail(mail));
      assert.ok(err instanceof Error);
      assert.equal((err as Error & { code?: string }).code, 'ESOCKET');
      assert.match(err.message, /ECONNREFUSED/);

      await smtp.up();
      assert.equal(smtp.port, port);
      await transport.sendMail(mail);
      assert.equal((await smtp.waitFor(1)).length, 1);
    } finally {
      transport.close();
    }
  });

  test('down() also drops pooled connections', async () => {
    smtp.clear();
    const transport = nodemailer.createTransport({
      pool: true,
      host: '127.0.0.1',
      port: smtp.port,
      ignoreTLS: true,
    });
    const mail = { envelope: { from: 'a@sender.test', to: ['bob@example.com'] }, raw: TRICKY_MIME };
    try {
      await transport.sendMail(mail);
      assert.equal(smtp.openConnections, 1);
      await smtp.down();
      await waitUntil(() => smtp.openConnections === 0, 1000, 'pooled connection to close');
      await rejection(transport.sendMail(mail));
      await smtp.up();
      await transport.sendMail(mail);
      assert.equal(smtp.messages.length, 2);
    } finally {
      transport.close();
    }
  });
});

describe('SES event builders', () => {
  test('buildMime produces CRLF-only MIME', async () => {
    const raw = await buildMime({
      from: 'Alice <alice@sender.test>',
      to: ['bob@example.com'],
      subject: 'Hi',
      text: 'line 1\nline 2',
      headers: { 'X-Test': 'yes' },
      messageId: '<fixed@sender.test>',
      attachments: [{ filename: 'a.txt', content: 'attached' }],
    });
    const text = raw.toString('utf8');
    assert.equal(/(?<!\r)\n/.test(text), false, 'no bare LF');
    assert.match(text, /^X-Test: yes\r$/m);
    assert.match(text, /^Message-ID: <fixed@sender\.test>\r$/m);
  });

  test('putMail sns-s3: SNS envelope → notification → S3 object with the exact bytes', async () => {
    const queueUrl = stack.queues['example.com']?.queueUrl ?? '';
    const raw = await buildMime({
      from: 'alice@sender.test',
      to: 'bob@example.com',
      subject: 'S3',
      text: 'hello',
    });
    const put = await putMail(stack, {
      domain: 'example.com',
      raw,
      recipients: ['bob@example.com'],
      source: 'alice@sender.test',
      shape: 'sns-s3',
    });
    assert.equal(put.bucket, 'example-com-emails');
    assert.equal(put.key, put.messageId);
    const [body] = await drainQueue(stack.sqs, queueUrl);
    assert.ok(body);
    const envelope = JSON.parse(body) as Record<string, unknown>;
    assert.equal(envelope.Type, 'Notification');
    assert.equal(envelope.Subject, 'Amazon SES Email Receipt Notification');
    assert.equal(typeof envelope.Message, 'string');
    const notification = JSON.parse(String(envelope.Message)) as ReturnType<typeof sesNotification>;
    assert.equal(notification.notificationType, 'Received');
    assert.equal(notification.mail.messageId, put.messageId);
    assert.deepEqual(notification.receipt.recipients, ['bob@example.com']);
    assert.deepEqual(notification.mail.commonHeaders.to, ['bob@example.com']);
    assert.equal(notification.mail.commonHeaders.subject, 'S3');
    assert.equal(notification.receipt.action.type, 'S3');
    if (notification.receipt.action.type !== 'S3') return;
    const object = await stack.s3.send(
      new GetObjectCommand({
        Bucket: notification.receipt.action.bucketName,
        Key: notification.receipt.action.objectKey,
      }),
    );
    assert.ok(object.Body);
    assert.deepEqual(Buffer.from(await object.Body.transformToByteArray()), raw);
  });

  test('putMail raw-s3 and sns-inline', async () => {
    const queueUrl = stack.queues['example.com']?.queueUrl ?? '';
    await putMail(stack, {
      domain: 'example.com',
      raw: TRICKY_MIME,
      recipients: ['bob@example.com'],
      source: 'alice@sender.test',
      shape: 'raw-s3',
    });
    await putMail(stack, {
      domain: 'example.com',
      raw: TRICKY_MIME,
      recipients: ['bob@example.com'],
      source: 'alice@sender.test',
      shape: 'sns-inline',
    });
    const bodies = await drainQueue(stack.sqs, queueUrl);
    assert.equal(bodies.length, 2);
    const rawDelivery = JSON.parse(bodies[0] ?? '') as ReturnType<typeof sesNotification>;
    assert.equal(rawDelivery.notificationType, 'Received');
    assert.equal(rawDelivery.receipt.action.type, 'S3');
    const inlineEnvelope = JSON.parse(bodies[1] ?? '') as { Message: string };
    const inline = JSON.parse(inlineEnvelope.Message) as ReturnType<typeof sesNotification>;
    assert.deepEqual(inline.receipt.action, {
      type: 'SNS',
      topicArn: 'arn:aws:sns:us-east-1:123456789012:ses-inbound',
      encoding: 'BASE64',
    });
    assert.deepEqual(Buffer.from(inline.content ?? '', 'base64'), TRICKY_MIME);
    assert.equal(inline.mail.headers.find((h) => h.name === 'X-Custom')?.value, 'keeps   spacing');
  });

  test('setup notification and SNS envelope format', () => {
    const setup = JSON.parse(sesSetupNotification()) as { Type: string; Message: string };
    assert.equal(setup.Type, 'Notification');
    assert.equal(
      (JSON.parse(setup.Message) as { notificationType: string }).notificationType,
      'AMAZON_SES_SETUP_NOTIFICATION',
    );
    const envelope = snsEnvelope('{"a":1}');
    assert.match(envelope, /^\{\n {2}"Type" : "Notification",\n/);
    assert.deepEqual(Object.keys(JSON.parse(envelope) as object), [
      'Type',
      'MessageId',
      'TopicArn',
      'Subject',
      'Message',
      'Timestamp',
      'SignatureVersion',
      'Signature',
      'SigningCertURL',
      'UnsubscribeURL',
    ]);
    const failing = sesNotification({
      messageId: 'm',
      source: 's@x.test',
      recipients: ['r@example.com'],
      bucket: 'b',
      verdicts: { dmarc: 'FAIL', spam: 'FAIL' },
      dmarcPolicy: 'reject',
    });
    assert.equal(failing.receipt.dmarcPolicy, 'reject');
    assert.equal(failing.receipt.spamVerdict.status, 'FAIL');
  });
});
