/**
 * The SQS calls an idle domain repeats, sent without the SDK (src/aws/sqs-direct.ts): against fauxqs the long poll
 * must receive what the SDK receives (bodies, receive counts, the replay attributes), the gauges' reads must read what
 * the SDK reads, and both fail as the SDK fails (a missing queue is permanent, with SQS's code); against a small HTTP server that plays SQS it must check the
 * MD5 of bodies, classify 5xx and throttling as temporary, reject an answer that is not SQS's, sign exactly as the
 * SDK's own signer signs, give up at its deadlines, and stop at once when aborted.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  ChangeMessageVisibilityCommand,
  GetQueueAttributesCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import { SignatureV4 } from '@smithy/signature-v4';
import { createAwsClients, type AwsClients } from '../../src/aws/clients.ts';
import { openDeadLetterQueue } from '../../src/aws/dead-letter-queue.ts';
import { DEFAULT_AWS_DEADLINES, type AwsDeadlines } from '../../src/aws/deadlines.ts';
import {
  REPLAY_ATTRIBUTE,
  REPLAY_GENERATION_ATTRIBUTE,
  createSqsQueue,
  type MailQueue,
} from '../../src/aws/queue.ts';
import { WorkerError } from '../../src/errors.ts';
import {
  TEST_CREDENTIALS,
  TEST_REGION,
  createDomainQueue,
  startStack,
  type TestStack,
} from '../harness/emulators.ts';

/** The daemon's own clients, pointed at `endpoint` (credentials from the environment, as in a deployment). */
function daemonClients(endpoint: string): AwsClients {
  process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
  return createAwsClients({
    region: TEST_REGION,
    endpoints: { sqs: endpoint },
    s3ForcePathStyle: true,
    deadlines: DEFAULT_AWS_DEADLINES,
  });
}

describe('the long poll against fauxqs', () => {
  let stack: TestStack;
  let clients: AwsClients;
  let queue: MailQueue;
  let queueUrl: string;

  before(async () => {
    stack = await startStack();
    clients = daemonClients(stack.endpoints.sqs);
    ({ queueUrl } = await createDomainQueue(stack.sqs, 'long-poll.test', {
      withDlq: true,
      maxReceiveCount: 5,
    }));
    queue = createSqsQueue(clients.sqs, queueUrl);
  });
  after(async () => {
    clients.destroy();
    await stack.stop();
  });

  it('receives the body, the receive count and the replay attributes, as the SDK does', async () => {
    const body = JSON.stringify({ notificationType: 'Received', text: 'ünïcödé ✓' });
    const sent = await stack.sqs.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: body,
        MessageAttributes: {
          [REPLAY_ATTRIBUTE]: { DataType: 'String', StringValue: 'true' },
          [REPLAY_GENERATION_ATTRIBUTE]: { DataType: 'Number', StringValue: '2' },
        },
      }),
    );
    const [first] = await queue.receive({ maxMessages: 10, waitTimeSeconds: 1 });
    assert.ok(first, 'the message was received');
    assert.equal(first.messageId, sent.MessageId);
    assert.equal(first.body, body);
    assert.equal(first.receiveCount, 1);
    assert.ok(first.firstReceivedAt > Date.now() - 60_000 && first.firstReceivedAt <= Date.now());
    assert.deepEqual(first.replay, { generation: 2 });

    await stack.sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: queueUrl,
        ReceiptHandle: first.receiptHandle,
        VisibilityTimeout: 0,
      }),
    );
    const [again] = await queue.receive({ maxMessages: 10, waitTimeSeconds: 1 });
    assert.equal(again?.messageId, sent.MessageId);
    assert.equal(again?.receiveCount, 2);
    await queue.deleteBatch([again!]);
  });

  it('reads the queue attributes the SDK reads, the dead-letter queue depth included', async () => {
    await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'one' }));
    await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'two' }));
    const read = await queue.attributes();
    const { Attributes: bySdk = {} } = await stack.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['All'] }),
    );
    assert.equal(read.visible, 2);
    assert.equal(read.visible, Number(bySdk.ApproximateNumberOfMessages));
    assert.equal(read.visibilityTimeoutSeconds, Number(bySdk.VisibilityTimeout));
    assert.ok(bySdk.RedrivePolicy, 'the test queue has a redrive policy');
    assert.equal(read.deadLetterTargetArn, JSON.parse(bySdk.RedrivePolicy).deadLetterTargetArn);

    const dlq = await openDeadLetterQueue(clients.sqs, read.deadLetterTargetArn!, DEFAULT_AWS_DEADLINES);
    assert.deepEqual(await dlq.depth(), { messages: 0 });
    await queue.deleteBatch(await queue.receive({ maxMessages: 10, waitTimeSeconds: 1 }));
    assert.equal((await queue.attributes()).visible, 0);
  });

  it('waits for mail that arrives during the poll', async () => {
    const polling = queue.receive({ maxMessages: 10, waitTimeSeconds: 5 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await stack.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'late' }));
    const received = await polling;
    assert.deepEqual(
      received.map((m) => m.body),
      ['late'],
    );
    await queue.deleteBatch(received);
  });

  it('fails permanently, with SQS code, on a queue that does not exist', async () => {
    const missing = createSqsQueue(clients.sqs, queueUrl.replace(/[^/]+$/, 'no-such-queue'));
    const error = await missing.receive({ maxMessages: 1, waitTimeSeconds: 0 }).then(
      () => assert.fail('the receive succeeded'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof WorkerError);
    assert.equal(error.temporary, false);
    assert.match(error.awsCode ?? '', /NonExistentQueue|QueueDoesNotExist/);
  });
});

interface FakeAnswer {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

/** An HTTP server that plays SQS: answers every request with `answer()` and keeps what it was sent. */
type FakeReply = FakeAnswer | 'never' | 'reset' | 'stall' | 'late-stall' | 'cut';

async function fakeSqs(answer: () => FakeReply) {
  const requests: { method: string; path: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      const reply = answer();
      if (reply === 'never') return;
      const beginAnswer = () => {
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0', 'content-length': '100' });
        res.write('{"Messages":[');
      };
      if (reply === 'stall') return beginAnswer();
      if (reply === 'late-stall') return void setTimeout(beginAnswer, 1_200);
      if (reply === 'cut') {
        beginAnswer();
        setTimeout(() => req.socket.resetAndDestroy(), 100);
        return;
      }
      if (reply === 'reset') {
        req.socket.resetAndDestroy();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/x-amz-json-1.0', ...reply.headers });
      res.end(reply.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    requests,
    queueUrl: `${endpoint}/000000000000/fake-queue`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve()).closeAllConnections()),
  };
}

const md5 = (text: string) => createHash('md5').update(text).digest('hex');

describe('the long poll against a server that plays SQS', () => {
  let answer: () => FakeReply = () => ({ status: 200, body: '{}' });
  let fake: Awaited<ReturnType<typeof fakeSqs>>;
  let clients: AwsClients;
  let queue: MailQueue;

  before(async () => {
    fake = await fakeSqs(() => answer());
    clients = daemonClients(fake.endpoint);
    queue = createSqsQueue(clients.sqs, fake.queueUrl);
  });
  after(async () => {
    clients.destroy();
    await fake.stop();
  });

  const receiveError = () =>
    queue.receive({ maxMessages: 10, waitTimeSeconds: 0 }).then(
      () => assert.fail('the receive succeeded'),
      (e: unknown) => e,
    );

  it('sends AWS JSON 1.0, signed with SigV4 for sqs in the client region', async () => {
    answer = () => ({ status: 200, body: '{}' });
    assert.deepEqual(await queue.receive({ maxMessages: 7, waitTimeSeconds: 0 }), []);
    const request = fake.requests.at(-1)!;
    assert.equal(request.headers['x-amz-target'], 'AmazonSQS.ReceiveMessage');
    assert.equal(request.headers['content-type'], 'application/x-amz-json-1.0');
    assert.match(
      String(request.headers.authorization),
      /^AWS4-HMAC-SHA256 Credential=test\/\d{8}\/us-east-1\/sqs\/aws4_request, SignedHeaders=[^,]*x-amz-target[^,]*, Signature=[0-9a-f]{64}$/,
    );
    const sent = JSON.parse(request.body) as Record<string, unknown>;
    assert.equal(sent.QueueUrl, fake.queueUrl);
    assert.equal(sent.MaxNumberOfMessages, 7);
    assert.equal(sent.WaitTimeSeconds, 0);
  });

  /** The Authorization header the SDK's own signer gives the request the server received, at its x-amz-date. */
  async function signedBySdk(sent: (typeof fake.requests)[number], sessionToken?: string): Promise<string> {
    const authorization = String(sent.headers.authorization);
    const signedNames = /SignedHeaders=([^,]+)/.exec(authorization)![1]!.split(';');
    const sdkSigner = new SignatureV4({
      service: 'sqs',
      region: TEST_REGION,
      credentials: { ...TEST_CREDENTIALS, ...(sessionToken && { sessionToken }) },
      sha256: clients.sqs.config.sha256,
    });
    const stamp = String(sent.headers['x-amz-date']);
    const signingDate = new Date(
      stamp.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'),
    );
    const url = new URL(fake.endpoint);
    const bySdk = await sdkSigner.sign(
      {
        method: sent.method,
        protocol: url.protocol,
        hostname: url.hostname,
        port: Number(url.port),
        path: sent.path,
        query: {},
        headers: Object.fromEntries(signedNames.map((name) => [name, String(sent.headers[name])])),
        body: sent.body,
      },
      { signingDate },
    );
    return String(bySdk.headers.authorization);
  }

  it('signs as the SDK signer signs the same request, session token included', async () => {
    process.env.AWS_SESSION_TOKEN = 'session-token-for-the-test';
    const withToken = daemonClients(fake.endpoint);
    try {
      answer = () => ({ status: 200, body: '{}' });
      // The client reads its credentials from the environment at its first call.
      await createSqsQueue(withToken.sqs, fake.queueUrl).receive({ maxMessages: 10, waitTimeSeconds: 0 });
      delete process.env.AWS_SESSION_TOKEN;
      const sent = fake.requests.at(-1)!;
      assert.match(String(sent.headers.authorization), /SignedHeaders=[^,]*x-amz-security-token/);
      assert.equal(sent.headers['x-amz-security-token'], 'session-token-for-the-test');
      assert.equal(
        sent.headers['x-amz-content-sha256'],
        createHash('sha256').update(sent.body).digest('hex'),
      );
      assert.equal(sent.headers.authorization, await signedBySdk(sent, 'session-token-for-the-test'));
    } finally {
      delete process.env.AWS_SESSION_TOKEN;
      withToken.destroy();
    }
  });

  it('signs as the SDK signer for an endpoint with a path, and for both calls', async () => {
    const behindPath = daemonClients(`${fake.endpoint}/proxy/sqs!(1)`);
    try {
      answer = () => ({ status: 200, body: '{}' });
      const proxied = createSqsQueue(behindPath.sqs, fake.queueUrl);
      await proxied.receive({ maxMessages: 10, waitTimeSeconds: 0 });
      const receive = fake.requests.at(-1)!;
      assert.equal(receive.path, '/proxy/sqs!(1)/');
      assert.equal(receive.headers.authorization, await signedBySdk(receive));
      answer = () => ({ status: 200, body: '{"Attributes":{}}' });
      await proxied.attributes();
      const read = fake.requests.at(-1)!;
      assert.equal(read.headers['x-amz-target'], 'AmazonSQS.GetQueueAttributes');
      assert.equal(read.headers.authorization, await signedBySdk(read));
    } finally {
      behindPath.destroy();
    }
  });

  /** A receive with these deadlines that must fail: its error, and how long it took. */
  async function failedReceive(deadlines: AwsDeadlines): Promise<{ error: unknown; waited: number }> {
    const startedAt = Date.now();
    const error = await createSqsQueue(clients.sqs, fake.queueUrl, deadlines)
      .receive({ maxMessages: 10, waitTimeSeconds: 0 })
      .then(
        () => assert.fail('the receive succeeded'),
        (e: unknown) => e,
      );
    return { error, waited: Date.now() - startedAt };
  }

  it('gives up an answer that never comes at the wait plus the call deadline', async () => {
    answer = () => 'never';
    const { error, waited } = await failedReceive({ connectMs: 1_000, callMs: 300, idleMs: 1_000 });
    assert.ok(error instanceof WorkerError, String(error));
    assert.equal(error.temporary, true);
    assert.equal(error.awsCode, 'TimeoutError');
    assert.ok(waited >= 300 && waited < 5_000, `gave up after ${waited} ms`);
  });

  it('gives up an answer whose body goes silent at the silence deadline', async () => {
    answer = () => 'stall';
    const { error, waited } = await failedReceive({ connectMs: 1_000, callMs: 300, idleMs: 800 });
    assert.ok(error instanceof WorkerError, String(error));
    assert.equal(error.temporary, true);
    assert.match(error.message, /silent during the answer/);
    assert.ok(waited >= 800 && waited < 5_000, `gave up after ${waited} ms`);
  });

  it('reads queue attributes as GetQueueAttributes and rejects an answer whose Attributes is not a map', async () => {
    answer = () => ({
      status: 200,
      body: JSON.stringify({ Attributes: { ApproximateNumberOfMessages: '4' } }),
    });
    assert.equal((await queue.attributes()).visible, 4);
    const sent = fake.requests.at(-1)!;
    assert.equal(sent.headers['x-amz-target'], 'AmazonSQS.GetQueueAttributes');
    assert.ok(
      (JSON.parse(sent.body) as { AttributeNames: string[] }).AttributeNames.includes('RedrivePolicy'),
    );
    answer = () => ({ status: 200, body: JSON.stringify({ Attributes: ['4'] }) });
    const error = await queue.attributes().then(
      () => assert.fail('the read succeeded'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof WorkerError, String(error));
    assert.match(error.message, /not a map/);
  });

  // A hang is this test's failure: the timeout turns it into one.
  it(
    'gives up a body that goes silent after a wait longer than the silence deadline',
    { timeout: 15_000 },
    async () => {
      answer = () => 'late-stall';
      const { error, waited } = await failedReceive({ connectMs: 1_000, callMs: 3_000, idleMs: 800 });
      assert.ok(error instanceof WorkerError, String(error));
      assert.match(error.message, /silent during the answer/);
      assert.ok(waited >= 1_200 && waited < 6_000, `gave up after ${waited} ms`);
    },
  );

  it('does not send again when the connection is reset after the answer began', async () => {
    let calls = 0;
    answer = () => (++calls, 'cut');
    const { error } = await failedReceive(DEFAULT_AWS_DEADLINES);
    assert.ok(error instanceof WorkerError, String(error));
    assert.match(error.message, /before the whole answer/);
    assert.equal(calls, 1);
  });

  it('reads queue attributes again after a temporary failure, as the SDK client would', async () => {
    let calls = 0;
    answer = () =>
      ++calls < 3
        ? { status: 503, body: 'Service Unavailable' }
        : { status: 200, body: JSON.stringify({ Attributes: { ApproximateNumberOfMessages: '2' } }) };
    assert.equal((await queue.attributes()).visible, 2);
    assert.equal(calls, 3);
    calls = 0;
    answer = () => (
      ++calls,
      { status: 400, body: JSON.stringify({ __type: 'com.amazonaws.sqs#AccessDenied' }) }
    );
    await queue.attributes().then(
      () => assert.fail('the read succeeded'),
      (e: unknown) => assert.ok(e instanceof WorkerError && !e.temporary, String(e)),
    );
    assert.equal(calls, 1, 'a permanent refusal is not read again');
  });

  it('accepts bodies whose MD5 matches and fails the receive when one does not', async () => {
    const good = { MessageId: 'm1', ReceiptHandle: 'r1', Body: 'hello', MD5OfBody: md5('hello') };
    answer = () => ({ status: 200, body: JSON.stringify({ Messages: [good] }) });
    const [message] = await queue.receive({ maxMessages: 10, waitTimeSeconds: 0 });
    assert.equal(message?.body, 'hello');

    const bad = { MessageId: 'm2', ReceiptHandle: 'r2', Body: 'hello', MD5OfBody: md5('other') };
    answer = () => ({ status: 200, body: JSON.stringify({ Messages: [good, bad] }) });
    const error = await receiveError();
    assert.ok(error instanceof WorkerError);
    assert.match(error.message, /Invalid MD5 checksum on messages: m2/);
    assert.equal(error.temporary, true);
  });

  it('names errors by their query-compatible code and keeps the HTTP status', async () => {
    answer = () => ({
      status: 400,
      headers: { 'x-amzn-query-error': 'AWS.SimpleQueueService.NonExistentQueue;Sender' },
      body: JSON.stringify({ __type: 'com.amazonaws.sqs#QueueDoesNotExist', message: 'gone' }),
    });
    const error = await receiveError();
    assert.ok(error instanceof WorkerError);
    assert.equal(error.awsCode, 'QueueDoesNotExist', 'the shape name, as the SDK names it');
    assert.equal((error.cause as { Code?: string }).Code, 'AWS.SimpleQueueService.NonExistentQueue');
    assert.equal(error.temporary, false);
    assert.match(error.message, /gone/);
  });

  it('reads an empty answer as no message, as the SDK does', async () => {
    answer = () => ({ status: 200, body: '' });
    assert.deepEqual(await queue.receive({ maxMessages: 10, waitTimeSeconds: 0 }), []);
  });

  it('sends again, once, when the connection is reset before any answer', async () => {
    let calls = 0;
    answer = () => (++calls === 1 ? 'reset' : { status: 200, body: '{}' });
    assert.deepEqual(await queue.receive({ maxMessages: 10, waitTimeSeconds: 0 }), []);
    assert.equal(calls, 2);
    calls = 0;
    answer = () => (++calls, 'reset');
    const error = await receiveError();
    assert.ok(error instanceof WorkerError);
    assert.equal(error.temporary, true);
    assert.equal(calls, 2, 'one retry, no more');
  });

  it('corrects its clock from a skewed answer and signs again with it', async () => {
    const serverTime = Date.now() + 3_600_000;
    const signedAt: string[] = [];
    answer = () => {
      signedAt.push(String(fake.requests.at(-1)?.headers['x-amz-date']));
      return signedAt.length === 1
        ? {
            status: 403,
            headers: { date: new Date(serverTime).toUTCString() },
            body: JSON.stringify({
              __type: 'com.amazon.coral.service#SignatureDoesNotMatch',
              message: 'expired',
            }),
          }
        : { status: 200, headers: { date: new Date(serverTime).toUTCString() }, body: '{}' };
    };
    try {
      assert.deepEqual(await queue.receive({ maxMessages: 10, waitTimeSeconds: 0 }), []);
      assert.equal(signedAt.length, 2);
      const hour = (stamp: string) =>
        Date.parse(stamp.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'));
      assert.ok(Math.abs(hour(signedAt[1]!) - serverTime) < 60_000, `signed again at ${signedAt[1]}`);
    } finally {
      clients.sqs.config.systemClockOffset = 0;
    }
  });

  it('treats throttling and 5xx as temporary', async () => {
    for (const reply of [
      {
        status: 400,
        body: JSON.stringify({ __type: 'com.amazonaws.sqs#RequestThrottled', message: 'slow' }),
      },
      { status: 503, body: 'Service Unavailable' },
    ]) {
      answer = () => reply;
      const error = await receiveError();
      assert.ok(error instanceof WorkerError, String(error));
      assert.equal(error.temporary, true, `${reply.status} ${reply.body}`);
    }
  });

  it('rejects a 200 answer that is not JSON, or whose Messages is not a list', async () => {
    for (const body of ['<html>proxy login</html>', '{"Messages":{"a":1}}']) {
      answer = () => ({ status: 200, body });
      const error = await receiveError();
      assert.ok(error instanceof WorkerError, body);
      assert.match(error.message, /without JSON|not a list/);
    }
  });

  it('returns nothing at once when the poll is aborted while the server is silent', async () => {
    answer = () => 'never';
    const stop = new AbortController();
    const polling = queue.receive({ maxMessages: 10, waitTimeSeconds: 20, signal: stop.signal });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const abortedAt = Date.now();
    stop.abort();
    assert.deepEqual(await polling, []);
    assert.ok(Date.now() - abortedAt < 2_000, 'the aborted poll returned promptly');
  });
});
