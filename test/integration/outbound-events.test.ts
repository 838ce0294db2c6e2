/**
 * The bounce loop, closed: mail sent out through SES with the configuration set (as docker-mailserver's relay and
 * the worker's own forwards do) produces SES sending events on SNS → the events queue; the built daemon's one
 * consumer records each in the outbound table; SES's bounce DSN for that mail then arrives in the sender's domain
 * queue and is delivered with From the failed recipient and Reply-To the original sender.
 *
 * aws-ses-v2-local publishes no events: test/harness/ses-outbound.ts publishes what SES would, for each send the
 * emulator accepts, to a topic on fauxqs's SNS whose SQS subscription feeds the events queue. The one fault no
 * emulator produces — SES's NotFoundException for a configuration set that does not exist (aws-ses-v2-local accepts
 * any name) — is answered by the harness's SES proxy (`failNext`). Needs `npm run build` first.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';

import {
  CreateQueueCommand,
  DeleteQueueCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import { SendEmailCommand } from '@aws-sdk/client-sesv2';
import { PublishCommand } from '@aws-sdk/client-sns';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';

import { systemClock } from '../../src/clock.ts';
import { createLogger, type Logger } from '../../src/log/logger.ts';
import { OutboundEventsConsumer } from '../../src/outbound/outbound-consumer.ts';
import { createOutboundMetrics } from '../../src/outbound/outbound-metrics.ts';
import { createOutboundWriter } from '../../src/outbound/outbound-writer.ts';
import { Registry } from 'prom-client';
import {
  assertBuilt,
  killAllDaemons,
  spawnDaemon,
  waitReady,
  type DaemonProcess,
} from '../harness/daemon-process.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type TestStack,
} from '../harness/emulators.ts';
import {
  buildMime,
  putMail,
  sesBounceDsn,
  sesMessageId,
  sesSendingEvent,
  snsEnvelope,
  type SesSendingEventInput,
} from '../harness/ses-events.ts';
import {
  SIMULATOR_BOUNCE,
  createOutboundEventsRoute,
  publishSendingEvents,
  type OutboundEventsRoute,
  type SendingEventsPublisher,
} from '../harness/ses-outbound.ts';
import { startSmtpSink, type ReceivedMail, type SmtpSink } from '../harness/smtp-sink.ts';

const DOMAIN = 'example.com';
const CONFIG_SET = 'unified-worker';
const TABLE = 'ses-outbound-messages';
const DAY = 86_400;

let stack: TestStack;
let sink: SmtpSink;
let route: OutboundEventsRoute;
let events: SendingEventsPublisher;
let daemon: DaemonProcess;

function daemonEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...stack.env,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(sink.port),
    INTERNAL_SMTP_PORT: String(sink.port),
    SMTP_TIMEOUT_MS: '5000',
    RULES_CACHE_SECONDS: '0',
    SES_CONFIGURATION_SET: CONFIG_SET,
    OUTBOUND_EVENTS_QUEUE: route.queueName,
    OUTBOUND_RETENTION_DAYS: '30',
    ...extra,
  };
}

async function outboundItem(messageId: string): Promise<Record<string, unknown> | undefined> {
  const { Item } = await stack.ddb.send(
    new GetCommand({ TableName: TABLE, Key: { MessageId: messageId }, ConsistentRead: true }),
  );
  return Item;
}

async function waitForItem(
  messageId: string,
  ready: (item: Record<string, unknown>) => boolean = () => true,
): Promise<Record<string, unknown>> {
  let item: Record<string, unknown> | undefined;
  await waitUntil(
    async () => (item = await outboundItem(messageId)) !== undefined && ready(item),
    10_000,
    `outbound record ${messageId}`,
    50,
  );
  return item as Record<string, unknown>;
}

async function eventsQueueDrained(): Promise<void> {
  await waitUntil(
    async () => {
      const counts = await queueCounts(stack.sqs, route.queueUrl);
      return counts.visible === 0 && counts.inFlight === 0;
    },
    10_000,
    'the events queue to be empty',
    50,
  );
}

async function publish(input: SesSendingEventInput): Promise<void> {
  await stack.sns.send(
    new PublishCommand({ TopicArn: route.topicArn, Message: JSON.stringify(sesSendingEvent(input)) }),
  );
}

async function sendThroughSes(
  from: string,
  to: string,
  subject: string,
): Promise<{ id: string; raw: Buffer }> {
  const raw = await buildMime({ from: `Jane Doe <${from}>`, to, subject, text: 'Shall we?\r\n' });
  // What docker-mailserver's relay does, through the SES API: the configuration set names where events go.
  const { MessageId } = await stack.sesv2.send(
    new SendEmailCommand({
      FromEmailAddress: from,
      Destination: { ToAddresses: [to] },
      Content: { Raw: { Data: raw } },
      ConfigurationSetName: CONFIG_SET,
    }),
  );
  assert.ok(MessageId, 'SES answered with a message id');
  return { id: MessageId, raw };
}

async function deliveredContaining(text: string, timeoutMs = 15_000): Promise<ReceivedMail> {
  let found: ReceivedMail | undefined;
  await waitUntil(
    () => (found = sink.messages.find((m) => m.raw.includes(text))) !== undefined,
    timeoutMs,
    `a delivered mail containing ${text}`,
    50,
  );
  return found as ReceivedMail;
}

function headerBlock(raw: Buffer): string {
  return raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('utf8');
}

function body(raw: Buffer): Buffer {
  return raw.subarray(raw.indexOf('\r\n\r\n'));
}

/** The sum of the samples of `name` whose labels include `labels`. */
async function metric(name: string, labels: Record<string, string> = {}, target = daemon): Promise<number> {
  const text = (await target.request('GET', '/metrics', 'metrics')).body;
  let total = 0;
  for (const line of text.split('\n')) {
    const match = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) total += Number(match[3]);
  }
  return total;
}

function expiresNear(item: Record<string, unknown>, days: number): void {
  const expected = Math.floor(Date.now() / 1000) + days * DAY;
  const expires = Number(item.expires_at);
  assert.ok(
    Math.abs(expires - expected) < 120,
    `expires_at ${expires} is about now + ${days} days (${expected})`,
  );
}

before(async () => {
  assertBuilt();
  stack = await startStack({ tables: true, domains: [DOMAIN], queueOptions: { withDlq: true } });
  sink = await startSmtpSink();
  route = await createOutboundEventsRoute(stack, { maxReceiveCount: 2, visibilityTimeout: 1 });
  events = publishSendingEvents(stack, {
    topicArn: route.topicArn,
    configurationSet: CONFIG_SET,
    bounceDelayMs: 300,
    deliverBounce: async ({ dsn, sender }) => {
      await putMail(stack, {
        domain: DOMAIN,
        raw: dsn,
        recipients: [sender],
        source: 'MAILER-DAEMON@amazonses.com',
        shape: 'sns-s3',
      });
    },
  });
  daemon = await spawnDaemon({ domains: [DOMAIN], env: daemonEnv() });
  await waitReady(daemon);
});

after(async () => {
  events?.stop();
  await killAllDaemons();
  await sink?.stop();
  await stack?.stop();
});

describe('the bounce loop through the built daemon', () => {
  it('records a mail a local user sent through SES, and delivers its bounce rewritten for the failed recipient', async () => {
    const sendsBefore = await metric('ses_worker_outbound_events_total', {
      type: 'send',
      outcome: 'recorded',
    });
    const rewrittenBefore = await metric('ses_worker_bounces_rewritten_total', { domain: DOMAIN });
    const { id } = await sendThroughSes(`jane@${DOMAIN}`, 'ghost@remote.test', 'Lunch?');

    const item = await waitForItem(id);
    assert.deepEqual(
      { MessageId: item.MessageId, original_source: item.original_source, destinations: item.destinations },
      { MessageId: id, original_source: `jane@${DOMAIN}`, destinations: ['ghost@remote.test'] },
    );
    assert.equal(item.bouncedRecipients, undefined, 'a send has no bounced recipients');
    assert.equal(typeof item.sent_at, 'string');
    expiresNear(item, 30);
    await eventsQueueDrained();
    assert.equal(
      await metric('ses_worker_outbound_events_total', { type: 'send', outcome: 'recorded' }),
      sendsBefore + 1,
    );

    // SES reports the bounce: the event adds the failed recipient, the DSN goes to jane's domain.
    await publish({
      type: 'Bounce',
      messageId: id,
      source: `jane@${DOMAIN}`,
      destinations: ['ghost@remote.test'],
    });
    const bounced = await waitForItem(id, (i) => i.bouncedRecipients instanceof Set);
    assert.deepEqual([...(bounced.bouncedRecipients as Set<string>)], ['ghost@remote.test']);
    assert.equal(bounced.original_source, `jane@${DOMAIN}`);
    const bounceId = `bounce-${sesMessageId()}`;
    const dsn = sesBounceDsn({
      from: `jane@${DOMAIN}`,
      outboundMessageId: id,
      bounceMessageId: bounceId,
      failed: 'ghost@remote.test',
    });
    await putMail(stack, {
      domain: DOMAIN,
      raw: dsn,
      recipients: [`jane@${DOMAIN}`],
      source: 'MAILER-DAEMON@amazonses.com',
      shape: 'sns-s3',
    });

    const delivered = await deliveredContaining(bounceId);
    assert.deepEqual(delivered.to, [`jane@${DOMAIN}`]);
    const head = headerBlock(delivered.raw);
    assert.match(head, /^From: "Delivery failure" <ghost@remote\.test>$/m);
    assert.match(head, /^Reply-To: jane@example\.com$/m);
    assert.match(head, /^X-Original-From: MAILER-DAEMON@amazonses\.com$/m);
    assert.doesNotMatch(head, /^From: MAILER-DAEMON/m);
    assert.ok(body(delivered.raw).equals(body(dsn)), 'the report itself is delivered byte for byte');
    await waitUntil(
      async () => (await queueCounts(stack.sqs, stack.queues[DOMAIN]!.queueUrl)).visible === 0,
      5_000,
    );
    assert.equal(await metric('ses_worker_bounces_rewritten_total', { domain: DOMAIN }), rewrittenBefore + 1);
  });

  it("SES's mailbox simulator: a send to bounce@simulator.amazonses.com comes back rewritten (what npm run local shows)", async () => {
    const { id } = await sendThroughSes(`kate@${DOMAIN}`, SIMULATOR_BOUNCE, 'Simulated');
    await events.settled();
    const item = await waitForItem(id, (i) => i.bouncedRecipients instanceof Set);
    assert.deepEqual([...(item.bouncedRecipients as Set<string>)], [SIMULATOR_BOUNCE]);
    const delivered = await deliveredContaining(`<${id}@email.amazonses.com>`);
    assert.deepEqual(delivered.to, [`kate@${DOMAIN}`]);
    assert.match(
      headerBlock(delivered.raw),
      /^From: "Delivery failure" <bounce@simulator\.amazonses\.com>$/m,
    );
    assert.match(headerBlock(delivered.raw), /^Reply-To: kate@example\.com$/m);
    assert.deepEqual(
      events.published.filter((p) => p.messageId === id).map((p) => p.type),
      ['Send', 'Bounce'],
    );
  });

  it("names the configuration set on the worker's own forwards, so they are recorded too", async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `fwd@${DOMAIN}`, forwards: ['hank@gmail.test'] },
      }),
    );
    const sentBefore = stack.ses.sent.length;
    const raw = await buildMime({
      from: 'Sender <sender@external.test>',
      to: `fwd@${DOMAIN}`,
      subject: 'Invoice',
      text: 'pay\r\n',
    });
    await putMail(stack, {
      domain: DOMAIN,
      raw,
      recipients: [`fwd@${DOMAIN}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    const forward = (await stack.ses.waitForSent(sentBefore + 1, 15_000))[sentBefore];
    assert.ok(forward?.messageId);
    assert.equal(forward.configurationSet, CONFIG_SET, 'SendEmail named SES_CONFIGURATION_SET');
    assert.deepEqual(forward.destinations, ['hank@gmail.test']);
    const item = await waitForItem(forward.messageId);
    assert.equal(item.original_source, `fwd@${DOMAIN}`);
    assert.deepEqual(item.destinations, ['hank@gmail.test']);
    expiresNear(item, 30);
  });

  it('leaves what is not a sending event for the dead-letter queue, and goes on recording', async () => {
    const malformedBefore = await metric('ses_worker_outbound_events_total', { outcome: 'malformed' });
    const notJson = 'this is not JSON';
    const received = snsEnvelope(
      JSON.stringify({ notificationType: 'Received', mail: { messageId: 'x' }, receipt: {} }),
    );
    const bad = [];
    for (const body of [notJson, received]) {
      const sent = await stack.sqs.send(
        new SendMessageCommand({ QueueUrl: route.queueUrl, MessageBody: body }),
      );
      bad.push(sent.MessageId);
    }
    const goodId = sesMessageId();
    await publish({
      type: 'Send',
      messageId: goodId,
      source: `lee@${DOMAIN}`,
      destinations: ['x@remote.test'],
    });
    assert.equal(
      (await waitForItem(goodId)).original_source,
      `lee@${DOMAIN}`,
      'the good event next to them is recorded',
    );

    // maxReceiveCount 2, visibility 1 s: received twice, then moved by the redrive.
    await waitUntil(
      async () => (await queueCounts(stack.sqs, route.dlqUrl)).visible === 2,
      15_000,
      'two events in the DLQ',
      100,
    );
    await eventsQueueDrained();
    const { Messages } = await stack.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: route.dlqUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 60 }),
    );
    assert.deepEqual(
      (Messages ?? []).map((m) => m.Body).sort(),
      [notJson, received].sort(),
      'moved unchanged',
    );
    for (const sqsMessageId of bad) {
      const line = await daemon.waitForLog(
        (l) => l.sqsMessageId === sqsMessageId && /malformed SES sending event/.test(l.msg),
      );
      assert.equal(line.level, 'error');
      assert.equal(typeof line.reason, 'string');
    }
    assert.equal(
      await metric('ses_worker_outbound_events_total', { outcome: 'malformed' }),
      malformedBefore + 4,
    );
    assert.equal((await daemon.request('GET', '/health')).status, 200);
  });

  it('deletes other event types unrecorded; a bounce before its send makes a whole record; a complaint adds its recipient', async () => {
    const ignoredBefore = await metric('ses_worker_outbound_events_total', {
      type: 'delivery',
      outcome: 'ignored',
    });
    const delivered = sesMessageId();
    await publish({
      type: 'Delivery',
      messageId: delivered,
      source: `a@${DOMAIN}`,
      destinations: ['b@remote.test'],
    });
    await waitUntil(
      async () =>
        (await metric('ses_worker_outbound_events_total', { type: 'delivery', outcome: 'ignored' })) ===
        ignoredBefore + 1,
      10_000,
    );
    await eventsQueueDrained();
    assert.equal(await outboundItem(delivered), undefined);

    const id = sesMessageId();
    const mail = {
      messageId: id,
      source: `Max <max@${DOMAIN}>`,
      destinations: ['p@remote.test', 'q@remote.test'],
    };
    await publish({ ...mail, type: 'Bounce', bounced: ['q@remote.test'] });
    const item = await waitForItem(id);
    assert.equal(item.original_source, `Max <max@${DOMAIN}>`);
    assert.deepEqual(item.destinations, ['p@remote.test', 'q@remote.test']);
    assert.deepEqual([...(item.bouncedRecipients as Set<string>)], ['q@remote.test']);
    expiresNear(item, 30);
    await publish({ ...mail, type: 'Complaint', complained: ['p@remote.test'] });
    const complained = await waitForItem(id, (i) => i.complainedRecipients instanceof Set);
    assert.deepEqual([...(complained.complainedRecipients as Set<string>)], ['p@remote.test']);
    assert.deepEqual(
      [...(complained.bouncedRecipients as Set<string>)],
      ['q@remote.test'],
      'the bounce stays',
    );
  });
});

describe('a deployment without the events queue', () => {
  it('warns, shows it in /health and the metrics, and delivers and is ready as before', async () => {
    const other = 'other.test';
    const queue = await createDomainQueue(stack.sqs, other);
    const lone = await spawnDaemon({
      domains: [other],
      env: daemonEnv({ OUTBOUND_EVENTS_QUEUE: 'no-such-events-queue' }),
    });
    await waitReady(lone);
    const warning = await lone.waitForLog((l) =>
      /OUTBOUND_EVENTS_QUEUE no-such-events-queue does not exist/.test(l.msg),
    );
    assert.equal(warning.level, 'warn');
    const health = JSON.parse((await lone.request('GET', '/health')).body) as { outboundEvents?: unknown };
    assert.deepEqual(
      { ...(health.outboundEvents as object), lastError: undefined },
      { state: 'queue-missing', queue: 'no-such-events-queue', lastError: undefined },
    );
    assert.equal(await metric('ses_worker_outbound_events_consumer', { state: 'queue-missing' }, lone), 1);
    assert.equal(await metric('ses_worker_outbound_events_consumer', { state: 'consuming' }, lone), 0);

    const raw = await buildMime({
      from: 'sender@external.test',
      to: `amy@${other}`,
      subject: 'still here',
      text: 'hi\r\n',
    });
    const put = await putMail(stack, {
      domain: other,
      queueUrl: queue.queueUrl,
      raw,
      recipients: [`amy@${other}`],
      source: 'sender@external.test',
      shape: 'sns-s3',
    });
    assert.ok(put.messageId);
    await deliveredContaining('Subject: still here');
    lone.kill('SIGTERM');
    assert.equal((await lone.exited).code, 0, lone.describe());
  });
});

/** A logger whose JSON lines land in `lines`. */
function captureLogger(): { logger: Logger; lines: Array<{ level: string; msg: string }> } {
  const lines: Array<{ level: string; msg: string }> = [];
  const logger = createLogger({
    level: 'info',
    redactAddresses: false,
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) lines.push(JSON.parse(line));
        callback();
      },
    }),
  });
  return { logger, lines };
}

describe('the consumer on its own (in-process, against fauxqs and dynalite)', () => {
  it('finds a queue created after it started, records from it, and stops within its grace period', async () => {
    const { logger, lines } = captureLogger();
    const registry = new Registry();
    const name = `late-events-${Date.now()}`;
    const consumer = new OutboundEventsConsumer({
      sqs: stack.sqs,
      records: createOutboundWriter(stack.ddb, { table: TABLE, retentionDays: 7, clock: systemClock }),
      queueName: name,
      waitTimeSeconds: 1,
      clock: systemClock,
      logger,
      metrics: createOutboundMetrics(registry),
      recheckMs: 100,
    });
    consumer.start();
    await waitUntil(() => consumer.status().state === 'queue-missing', 5_000, 'queue-missing');
    const { QueueUrl } = await stack.sqs.send(new CreateQueueCommand({ QueueName: name }));
    await waitUntil(() => consumer.status().state === 'consuming', 5_000, 'consuming');
    const id = sesMessageId();
    const event = sesSendingEvent({
      type: 'Send',
      messageId: id,
      source: `zoe@${DOMAIN}`,
      destinations: ['z@remote.test'],
    });
    await stack.sqs.send(
      new SendMessageCommand({ QueueUrl, MessageBody: snsEnvelope(JSON.stringify(event)) }),
    );
    const item = await waitForItem(id);
    expiresNear(item, 7);
    assert.ok(lines.some((l) => l.level === 'warn' && /does not exist/.test(l.msg)));
    assert.ok(lines.some((l) => l.level === 'warn' && /no redrive policy/.test(l.msg)));
    assert.ok(lines.some((l) => l.msg === 'receiving SES sending events again'));

    const stopping = Date.now();
    await consumer.stop(5_000);
    assert.ok(Date.now() - stopping < 3_000, 'the last long poll (1 s) ends, then it stops');
    assert.equal(consumer.status().state, 'stopped');
    const states =
      (await registry.getSingleMetric('ses_worker_outbound_events_consumer')?.get())?.values ?? [];
    assert.deepEqual(
      states.filter((v) => v.value === 1).map((v) => v.labels.state),
      ['stopped'],
    );
    await stack.sqs.send(new DeleteQueueCommand({ QueueUrl }));
  });
});

describe('a write that fails', () => {
  it('leaves the event in the queue, hidden for the first retry delay, counted and logged', async () => {
    const { logger, lines } = captureLogger();
    const registry = new Registry();
    const name = `events-${Date.now()}`;
    const { QueueUrl } = await stack.sqs.send(new CreateQueueCommand({ QueueName: name }));
    const consumer = new OutboundEventsConsumer({
      sqs: stack.sqs,
      // A table that does not exist: dynalite answers ResourceNotFoundException, as DynamoDB does.
      records: createOutboundWriter(stack.ddb, {
        table: 'no-such-table',
        retentionDays: 30,
        clock: systemClock,
      }),
      queueName: name,
      waitTimeSeconds: 1,
      clock: systemClock,
      logger,
      metrics: createOutboundMetrics(registry),
    });
    consumer.start();
    const event = sesSendingEvent({
      type: 'Send',
      messageId: sesMessageId(),
      source: `a@${DOMAIN}`,
      destinations: [],
    });
    await stack.sqs.send(
      new SendMessageCommand({ QueueUrl, MessageBody: snsEnvelope(JSON.stringify(event)) }),
    );
    const failed = async () =>
      (await registry.getSingleMetric('ses_worker_outbound_events_total')?.get())?.values.find(
        (v) => v.labels.type === 'send' && v.labels.outcome === 'failed',
      )?.value ?? 0;
    await waitUntil(async () => (await failed()) === 1, 10_000, 'a failed write');
    await waitUntil(
      () => (stack.fauxqs.server.inspectQueue(name)?.messages.inflight.length ?? 0) === 1,
      5_000,
    );
    const [held] = stack.fauxqs.server.inspectQueue(name)?.messages.inflight ?? [];
    const hiddenFor = Number(held?.visibilityDeadline) - Date.now();
    assert.ok(
      hiddenFor > 25_000 && hiddenFor <= 30_000,
      `hidden for the first retry delay (30 s): ${hiddenFor} ms`,
    );
    const warning = lines.find((l) => /could not record SES sending events/.test(l.msg)) as
      { err?: { awsCode?: string } } | undefined;
    assert.equal(warning?.err?.awsCode, 'ResourceNotFoundException');
    await consumer.stop(5_000);
    assert.equal(await failed(), 1, 'tried once, not in a loop');
    await stack.sqs.send(new DeleteQueueCommand({ QueueUrl }));
  });
});
