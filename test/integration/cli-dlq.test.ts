/**
 * `unified-worker dlq show|redrive|purge` against fauxqs and the real pipeline. fauxqs has no StartMessageMoveTask, so
 * the receive → send → delete fallback runs against it as it is. The native path (StartMessageMoveTask followed
 * with ListMessageMoveTasks) exists in no emulator that runs here: it is tested against a fake of those two calls,
 * shaped after the SQS API reference (a completed task is listed without its TaskHandle), that sits in front of
 * fauxqs, performs the move on it, and passes every other call through.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { DeleteObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';

import { finalMetadata, gaveUpMetadata } from '../../src/aws/audit-metadata.ts';
import type { DlqReport, PurgedReport, RedriveReport } from '../../src/cli/dlq.ts';
import { sesMessageId, sesNotification, snsEnvelope } from '../../src/cli/ses-notification.ts';
import { assertUsageError, runCommand, type CliResult, type TerminalInput } from '../harness/cli-runner.ts';
import { createDomainQueue, queueCounts } from '../harness/emulators.ts';
import { startRig, type Rig } from '../harness/pipeline-rig.ts';

const LIVE = 'cli-dlq.test';
const PARKED = 'dlq-parked.test';
const PURGE = 'dlq-purge.test';
let rig: Rig;
let env: Record<string, string>;
const url: Record<string, string> = {};

before(async () => {
  rig = await startRig({ domains: [LIVE] });
  await createDomainQueue(rig.stack.sqs, PARKED);
  await createDomainQueue(rig.stack.sqs, PURGE);
  env = {
    ...rig.stack.env,
    DOMAINS: `${LIVE},${PARKED},${PURGE}`,
    IDEMPOTENCY_TABLE: 'email-worker-idempotency',
  };
  const setup = await runCommand(['setup'], env);
  assert.equal(setup.code, 0, setup.stdout + setup.stderr);
  for (const name of [
    'cli-dlq-test-queue',
    'cli-dlq-test-queue-dlq',
    'dlq-parked-test-queue',
    'dlq-parked-test-queue-dlq',
    'dlq-purge-test-queue-dlq',
  ]) {
    url[name] = (await rig.stack.sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl ?? '';
  }
});
after(() => rig.stop());

function cli(
  argv: string[],
  overrides: Record<string, string> = {},
  terminal?: TerminalInput,
): Promise<CliResult> {
  return runCommand(argv, { ...env, ...overrides }, terminal);
}

/** A mail in the domain's bucket and its notification on the dead-letter queue, as the redrive policy leaves it. */
async function deadLetter(
  domain: string,
  recipient: string,
  metadata: Record<string, string> = {},
): Promise<string> {
  const id = sesMessageId();
  const bucket = `${domain.replaceAll('.', '-')}-emails`;
  const raw = Buffer.from(`From: a@external.test\r\nTo: ${recipient}\r\nSubject: dead\r\n\r\nletter\r\n`);
  await rig.stack.s3.send(new PutObjectCommand({ Bucket: bucket, Key: id, Body: raw, Metadata: metadata }));
  const body = snsEnvelope(
    JSON.stringify(
      sesNotification({ messageId: id, source: 'a@external.test', recipients: [recipient], bucket, raw }),
    ),
  );
  await rig.stack.sqs.send(
    new SendMessageCommand({
      QueueUrl: url[`${domain.replaceAll('.', '-')}-queue-dlq`],
      MessageBody: body,
      MessageAttributes: { origin: { DataType: 'String', StringValue: 'test' } },
    }),
  );
  return id;
}

async function drain(sqs: SQSClient, queueUrl: string) {
  const all = [];
  for (;;) {
    const { Messages } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        MessageAttributeNames: ['All'],
      }),
    );
    if (!Messages?.length) return all;
    for (const m of Messages) {
      all.push(m);
      await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }));
    }
  }
}

describe('dlq show', () => {
  it('counts, dates and explains what waits, from the notification and the S3 metadata, and leaves it there', async () => {
    const dlq = url['dlq-parked-test-queue-dlq'] ?? '';
    await rig.stack.sqs.send(new SendMessageCommand({ QueueUrl: dlq, MessageBody: 'not json' }));
    const failed = await deadLetter(PARKED, `x@${PARKED}`, {
      processed: 'false',
      status: 'failed',
      failure_reason: 'SMTP_CONNECTION: connection refused',
    });
    const unrecorded = await deadLetter(PARKED, `y@${PARKED}`);
    const run = await cli(['dlq', 'show', '--domains', PARKED, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const [report] = run.json<{ deadLetterQueues: DlqReport[] }>().deadLetterQueues;
    assert.equal(report?.deadLetterQueue, 'dlq-parked-test-queue-dlq');
    assert.equal(report?.waiting, 3);
    assert.equal(report?.oldestExact, true, 'the sample is the whole queue');
    assert.ok(report?.oldest && Date.parse(report.oldest) <= Date.now());
    const judged = new Map(
      report?.samples.map((s) => [s.sesMessageId ?? 'malformed', [s.redrivable, s.reason] as const]),
    );
    assert.equal(judged.get('malformed')?.[0], 'no');
    assert.match(
      judged.get('malformed')?.[1] ?? '',
      /^malformed notification \(body is not JSON.*it can never succeed$/,
    );
    assert.deepEqual(judged.get(failed), [
      'yes',
      'deferred until MAX_RECEIVES (SMTP_CONNECTION: connection refused): redrive once that is fixed',
    ]);
    assert.equal(judged.get(unrecorded)?.[0], 'yes');
    assert.match(judged.get(unrecorded)?.[1] ?? '', /^no outcome recorded/);
    assert.deepEqual(
      await queueCounts(rig.stack.sqs, dlq),
      { visible: 3, inFlight: 0 },
      'released after reading',
    );

    const human = await cli(['dlq', 'show', '--domains', PARKED]);
    assert.match(
      human.stdout,
      /^dlq-parked\.test: 3 messages waiting in dlq-parked-test-queue-dlq, oldest /m,
    );
    assert.match(human.stdout, /^ {2}of the 3 messages looked at: 2 redrivable, 1 never redrivable$/m);
    assert.match(
      human.stdout,
      new RegExp(`^  \\S+  ${failed} to x@dlq-parked\\.test  redrivable: deferred until`, 'm'),
    );
    assert.match(human.stdout, /^ {2}\S+ {2}SQS \S+ {2}never redrivable: malformed notification/m);
    assert.match(
      human.stdout,
      /^ {2}remove what can never succeed: unified-worker dlq purge --domains dlq-parked\.test --never-redrivable$/m,
    );
    assert.match(
      human.stdout,
      /unified-worker dlq redrive --domains dlq-parked\.test \(it moves every message: purge the never redrivable first\)/,
    );
  });
});

describe('dlq redrive', () => {
  it('without StartMessageMoveTask (fauxqs): receive → send → delete, bodies and attributes unchanged', async () => {
    const before = await peekBodies(url['dlq-parked-test-queue-dlq'] ?? '');
    const run = await cli(['dlq', 'redrive', '--domains', PARKED, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const [report] = run.json<{ redrives: RedriveReport[] }>().redrives;
    assert.equal(report?.path, 'receive-send-delete');
    assert.deepEqual([report?.moved, report?.toMove, report?.failed, report?.status], [3, 3, 0, 'completed']);
    assert.deepEqual(await queueCounts(rig.stack.sqs, url['dlq-parked-test-queue-dlq'] ?? ''), {
      visible: 0,
      inFlight: 0,
    });
    const moved = await drain(rig.stack.sqs, url['dlq-parked-test-queue'] ?? '');
    assert.deepEqual(moved.map((m) => m.Body).sort(), before.sort());
    assert.equal(moved.filter((m) => m.MessageAttributes?.origin?.StringValue === 'test').length, 2);
    const human = await cli(['dlq', 'redrive', '--domains', PARKED]);
    assert.match(
      human.stdout,
      /moved 0 of 0 messages .*\(receive → send → delete: this endpoint has no StartMessageMoveTask\)/,
    );
  });

  it('puts the mail back in the queue, and the daemon delivers it', async () => {
    const id = await deadLetter(LIVE, `back@${LIVE}`);
    rig.mailbox.clear();
    const run = await cli(['dlq', 'redrive', '--domains', LIVE]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stdout,
      /cli-dlq\.test: moved 1 of 1 message from cli-dlq-test-queue-dlq to cli-dlq-test-queue/,
    );
    assert.equal((await rig.outcome(id)).status, 'delivered');
    assert.deepEqual(
      rig.mailbox.messages.map((m) => m.to),
      [[`back@${LIVE}`]],
    );
  });

  it('with StartMessageMoveTask (recorded fake in front of fauxqs): follows the task to the end', async () => {
    const fake = await startMoveTaskFake(rig.stack.endpoints.sqs, rig.stack.sqs);
    try {
      const id = await deadLetter(LIVE, `native@${LIVE}`);
      const run = await cli(['dlq', 'redrive', '--domains', LIVE, '--json'], {
        AWS_ENDPOINT_URL_SQS: fake.endpoint,
      });
      assert.equal(run.code, 0, run.stderr);
      const [report] = run.json<{ redrives: RedriveReport[] }>().redrives;
      assert.equal(report?.path, 'message-move-task');
      assert.equal(report?.taskHandle, fake.started[0]?.handle);
      assert.deepEqual([report?.moved, report?.toMove, report?.status], [1, 1, 'completed']);
      assert.deepEqual(
        fake.started.map((s) => [s.source, s.destination]),
        [
          [
            'arn:aws:sqs:us-east-1:000000000000:cli-dlq-test-queue-dlq',
            'arn:aws:sqs:us-east-1:000000000000:cli-dlq-test-queue',
          ],
        ],
      );
      assert.ok(fake.listCalls >= 2, 'the task was followed until it completed');
      assert.equal((await rig.outcome(id)).status, 'delivered');
    } finally {
      await fake.stop();
    }
  });

  it('reports a failed move task with exit 1', async () => {
    const fake = await startMoveTaskFake(
      rig.stack.endpoints.sqs,
      rig.stack.sqs,
      'AWS.SimpleQueueService.NonExistentQueue',
    );
    try {
      const run = await cli(['dlq', 'redrive', '--domains', LIVE, '--json'], {
        AWS_ENDPOINT_URL_SQS: fake.endpoint,
      });
      assert.equal(run.code, 1);
      const [report] = run.json<{ redrives: RedriveReport[] }>().redrives;
      assert.equal(report?.status, 'failed');
      assert.equal(report?.failure, 'AWS.SimpleQueueService.NonExistentQueue');
    } finally {
      await fake.stop();
    }
  });
});

describe('dlq purge', () => {
  const dlqOf = () => url['dlq-purge-test-queue-dlq'] ?? '';
  let deferred = '';

  it('refuses without --yes when no terminal can answer, and without a choice; removes nothing', async () => {
    await rig.stack.sqs.send(new SendMessageCommand({ QueueUrl: dlqOf(), MessageBody: 'not json' }));
    assertUsageError(
      await cli(['dlq', 'purge', '--domains', PURGE, '--never-redrivable']),
      /^unified-worker dlq purge: dlq purge asks for confirmation on a terminal: give --yes/,
    );
    assertUsageError(
      await cli(['dlq', 'purge', '--domains', PURGE, '--yes']),
      /say which: --id .* or --never-redrivable/,
    );
    assert.deepEqual(await queueCounts(rig.stack.sqs, dlqOf()), { visible: 1, inFlight: 0 });
  });

  it('--never-redrivable --yes removes what can never succeed, keeps the rest, and leaves an audit trail', async () => {
    const gone = await deadLetter(PURGE, `gone@${PURGE}`);
    await rig.stack.s3.send(new DeleteObjectCommand({ Bucket: 'dlq-purge-test-emails', Key: gone }));
    const decided = await deadLetter(
      PURGE,
      `done@${PURGE}`,
      finalMetadata({
        status: 'delivered',
        at: Date.now(),
        domain: PURGE,
        envelopeRecipients: [`done@${PURGE}`],
        invalid: [],
        contentRejected: [],
        failedEffects: [],
      }),
    );
    deferred = await deadLetter(
      PURGE,
      `later@${PURGE}`,
      gaveUpMetadata(Date.now(), PURGE, 'SMTP_CONNECTION: refused'),
    );
    const run = await cli(['dlq', 'purge', '--domains', PURGE, '--never-redrivable', '--yes', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const { purged } = run.json<{ purged: PurgedReport[] }>();
    assert.deepEqual(
      purged.map((p) => [p.sesMessageId ?? 'malformed', p.redrivable, p.removed, p.audit]).sort(),
      [
        [decided, 'no', true, 'written'],
        [gone, 'no', true, 'no object'],
        ['malformed', 'no', true, 'no object'],
      ].sort(),
    );
    const audit = run.stderr.split('\n').filter((l) => l.startsWith('unified-worker dlq purge: removed '));
    assert.equal(audit.length, 3, run.stderr);
    assert.ok(
      audit.some((l) => l.includes(`SES ${gone} to gone@${PURGE}`) && l.includes('is gone (deleted')),
    );
    const head = await rig.stack.s3.send(
      new HeadObjectCommand({ Bucket: 'dlq-purge-test-emails', Key: decided }),
    );
    assert.match(head.Metadata?.dlq_purged_at ?? '', /^\d+$/);
    assert.match(head.Metadata?.dlq_purge_reason ?? '', /^already decided \(status delivered\)/);
    assert.equal(head.Metadata?.status, 'delivered', 'the verdict stays');
    const show = await cli(['dlq', 'show', '--domains', PURGE, '--json']);
    const [report] = show.json<{ deadLetterQueues: DlqReport[] }>().deadLetterQueues;
    assert.deepEqual(
      report?.samples.map((s) => [s.sesMessageId, s.redrivable]),
      [[deferred, 'yes']],
      'the redrivable one stays, visible',
    );
  });

  it('--id asks on the terminal: no keeps the message (exit 1), yes removes it; an unknown id is said', async () => {
    const declined = await cli(
      ['dlq', 'purge', '--domains', PURGE, '--id', deferred],
      {},
      { answers: ['n'] },
    );
    assert.equal(declined.code, 1, declined.stderr);
    assert.match(declined.stderr, /Remove 1 message from the dead-letter queue for good\? \[y\/N\] $/);
    assert.match(
      declined.stdout,
      new RegExp(`SES ${deferred} to later@dlq-purge\\.test\\), redrivable: deferred`),
    );
    assert.match(declined.stdout, /^nothing removed$/m);
    assert.deepEqual(await queueCounts(rig.stack.sqs, dlqOf()), { visible: 1, inFlight: 0 }, 'released');

    const unanswered = await cli(['dlq', 'purge', '--domains', PURGE, '--id', deferred], {}, { answers: [] });
    assert.equal(unanswered.code, 1);
    assert.match(unanswered.stderr, /no answer \(end of input\): taken as no/);

    const show = await cli(['dlq', 'show', '--domains', PURGE, '--json']);
    const sqsId =
      show.json<{ deadLetterQueues: DlqReport[] }>().deadLetterQueues[0]?.samples[0]?.sqsMessageId ?? '';
    const accepted = await cli(['dlq', 'purge', '--domains', PURGE, '--id', sqsId], {}, { answers: ['y'] });
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, /^removed 1 message$/m);
    assert.deepEqual(await queueCounts(rig.stack.sqs, dlqOf()), { visible: 0, inFlight: 0 });

    const unknown = await cli(['dlq', 'purge', '--domains', PURGE, '--id', 'no-such-id', '--yes']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /--id no-such-id: not in the dead-letter queues looked at/);
    assert.match(unknown.stdout, /^nothing to remove$/m);
  });
});

/** The bodies waiting in a queue, made visible again right after reading. */
async function peekBodies(queueUrl: string): Promise<string[]> {
  const { Messages = [] } = await rig.stack.sqs.send(
    new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 30 }),
  );
  for (const m of Messages) {
    await rig.stack.sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: queueUrl,
        ReceiptHandle: m.ReceiptHandle,
        VisibilityTimeout: 0,
      }),
    );
  }
  return Messages.map((m) => m.Body ?? '');
}

interface MoveTaskFake {
  endpoint: string;
  started: Array<{ source: string; destination: string; handle: string }>;
  listCalls: number;
  stop(): Promise<void>;
}

/**
 * StartMessageMoveTask and ListMessageMoveTasks as SQS answers them (JSON protocol), everything else proxied to
 * fauxqs. The move itself is done on fauxqs; the first list after the start says RUNNING, the next COMPLETED (or
 * FAILED with `failure`).
 */
async function startMoveTaskFake(upstream: string, sqs: SQSClient, failure?: string): Promise<MoveTaskFake> {
  const fake: MoveTaskFake = { endpoint: '', started: [], listCalls: 0, stop: async () => undefined };
  let task:
    | { source: string; destination: string; handle: string; moved: number; toMove: number; listed: number }
    | undefined;
  const target = new URL(upstream);
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      const action = String(request.headers['x-amz-target'] ?? '').replace('AmazonSQS.', '');
      const answer = (status: number, json: unknown) => {
        response.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
        response.end(JSON.stringify(json));
      };
      if (action === 'StartMessageMoveTask') {
        const input = JSON.parse(body.toString('utf8')) as { SourceArn: string; DestinationArn: string };
        const handle = Buffer.from(
          JSON.stringify({ taskId: fake.started.length + 1, sourceArn: input.SourceArn }),
        ).toString('base64');
        fake.started.push({ source: input.SourceArn, destination: input.DestinationArn, handle });
        void moveAll(sqs, input.SourceArn, input.DestinationArn).then((moved) => {
          task = {
            source: input.SourceArn,
            destination: input.DestinationArn,
            handle,
            moved,
            toMove: moved,
            listed: 0,
          };
          answer(200, { TaskHandle: handle });
        });
        return;
      }
      if (action === 'ListMessageMoveTasks') {
        fake.listCalls += 1;
        if (!task) return answer(200, { Results: [] });
        task.listed += 1;
        const running = task.listed === 1;
        const status = running ? 'RUNNING' : failure ? 'FAILED' : 'COMPLETED';
        return answer(200, {
          Results: [
            {
              ...(running && { TaskHandle: task.handle }),
              Status: status,
              SourceArn: task.source,
              DestinationArn: task.destination,
              ApproximateNumberOfMessagesMoved: running ? 0 : task.moved,
              ApproximateNumberOfMessagesToMove: task.toMove,
              StartedTimestamp: Date.now() - 1000,
              ...(status === 'FAILED' && { FailureReason: failure }),
            },
          ],
        });
      }
      const forward = http.request(
        {
          host: target.hostname,
          port: target.port,
          path: request.url,
          method: request.method,
          headers: { ...request.headers, host: target.host },
        },
        (upstreamResponse) => {
          response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
          upstreamResponse.pipe(response);
        },
      );
      forward.on('error', () => response.destroy());
      forward.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.stop = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return fake;
}

async function moveAll(sqs: SQSClient, sourceArn: string, destinationArn: string): Promise<number> {
  const urlOf = async (arn: string) =>
    (await sqs.send(new GetQueueUrlCommand({ QueueName: arn.slice(arn.lastIndexOf(':') + 1) }))).QueueUrl ??
    '';
  const [from, to] = [await urlOf(sourceArn), await urlOf(destinationArn)];
  let moved = 0;
  for (;;) {
    const { Messages } = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: from, MaxNumberOfMessages: 10 }),
    );
    if (!Messages?.length) return moved;
    for (const m of Messages) {
      await sqs.send(new SendMessageCommand({ QueueUrl: to, MessageBody: m.Body }));
      await sqs.send(new DeleteMessageCommand({ QueueUrl: from, ReceiptHandle: m.ReceiptHandle }));
      moved += 1;
    }
  }
}
