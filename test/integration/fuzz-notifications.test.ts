/**
 * The fuzz run of test/integration/fuzz.test.ts extended to notifications: seeded mutations of real-shaped SNS/SES
 * JSON (fields removed, retyped, filled with CR/LF/NUL/<> and huge values, the JSON text itself damaged), first
 * through `parseSqsBody` (10,000 cases, FUZZ_SEED / FUZZ_COUNT to replay), then a few hundred through the real
 * pipeline against the emulators and an SMTP sink. Also the optional allowlists of topics and buckets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { BUCKET_RE } from '../../src/aws/resources.ts';
import { envelopeAddressProblem } from '../../src/mail/envelope-address.ts';
import { parseSqsBody, type NotificationSources, type ParsedBody } from '../../src/pipeline/notification.ts';
import { mulberry32 } from '../fixtures/broken-mime/corpus.ts';
import {
  createDomainQueue,
  queueCounts,
  startStack,
  waitUntil,
  type DomainQueue,
  type TestStack,
} from '../harness/emulators.ts';
import { INJECTIONS } from '../harness/hostile-input.ts';
import { startRig, type LogLine, type Rig } from '../harness/pipeline-rig.ts';
import {
  DEFAULT_TOPIC_ARN,
  putMail,
  sesMessageId,
  sesNotification,
  sesSetupNotification,
  snsEnvelope,
} from '../harness/ses-events.ts';

/** Stands for 100,000 nested arrays, written into the body's text after serialisation. */
const DEEP = '__DEEP__';
const DEEP_TEXT = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Random = () => number;

const int = (random: Random, max: number): number => Math.floor(random() * max);
const pick = <T>(random: Random, list: readonly T[]): T => list[int(random, list.length)] as T;

const TOKENS = [
  ...INJECTIONS,
  '"',
  '\\',
  '@',
  '',
  '..',
  '%0d%0a',
  '\u00ff',
  '\ud800',
  '\uffff',
  'MAILER-DAEMON@amazonses.com',
  'AMAZON_SES_SETUP_NOTIFICATION',
  'Received',
  'S3',
  'SNS',
  'BASE64',
  'PASS',
  '../../etc/passwd',
];

function randomString(random: Random): string {
  const parts: string[] = [];
  for (let i = int(random, 5); i >= 0; i--) {
    parts.push(random() < 0.6 ? pick(random, TOKENS) : String.fromCharCode(int(random, 0x3000)));
  }
  if (random() < 0.03) parts.push('x'.repeat(int(random, 300_000)));
  return parts.join('');
}

function randomValue(random: Random, depth = 0): Json {
  switch (int(random, 9)) {
    case 0:
      return null;
    case 1:
      return random() < 0.5;
    case 2:
      return pick(random, [0, -1, 1e308, Number.MAX_SAFE_INTEGER, 0.5]);
    case 3:
      return depth > 3 ? [] : Array.from({ length: int(random, 4) }, () => randomValue(random, depth + 1));
    case 4:
      return depth > 3 ? {} : { [randomString(random)]: randomValue(random, depth + 1) };
    case 5:
      // Deeply nested arrays go in as text (see mutatedBody): JSON.stringify itself would overflow on them.
      return DEEP;
    default:
      return randomString(random);
  }
}

/** Every path to a value inside `node`, for picking one to mutate. */
function paths(node: Json, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (node === null || typeof node !== 'object') return [prefix];
  const children = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
  return [
    prefix,
    ...children.flatMap((key) => paths((node as Record<string, Json>)[key] as Json, [...prefix, key])),
  ];
}

function mutateAt(root: Json, path: Array<string | number>, random: Random): Json {
  if (path.length === 0) return randomValue(random);
  const parent = path
    .slice(0, -1)
    .reduce<Json>((node, key) => (node as Record<string, Json>)[key] as Json, root);
  const key = path[path.length - 1] as string | number;
  const target = parent as Record<string | number, Json>;
  const roll = random();
  if (roll < 0.25 && !Array.isArray(parent)) delete target[key];
  else if (roll < 0.5 && typeof target[key] === 'string')
    target[key] = `${target[key]}${pick(random, TOKENS)}`;
  else if (roll < 0.6 && Array.isArray(target[key])) (target[key] as Json[]).push(randomValue(random));
  else target[key] = randomValue(random);
  return root;
}

/** A notification as SES and SNS write it, in one of the three shapes a queue receives. */
function realistic(random: Random, domain: string, bucket: string, key: string, messageId: string): Json {
  const notification = sesNotification({
    messageId,
    source: pick(random, ['sender@external.test', '', 'MAILER-DAEMON@amazonses.com']),
    recipients: [`user@${domain}`, ...(random() < 0.3 ? [`other@${domain}`] : [])],
    bucket,
    key,
    headers: [],
    headersTruncated: true,
  });
  const json = JSON.parse(JSON.stringify(notification)) as Json;
  if (random() < 0.3) return json;
  return JSON.parse(snsEnvelope(JSON.stringify(json))) as Json;
}

/** A mutated notification body: structural edits of the JSON, sometimes damage to the text itself. */
function mutatedBody(random: Random, base: Json): string {
  let root = JSON.parse(JSON.stringify(base)) as Json;
  const envelope = root as Record<string, Json>;
  // Mutate inside the SNS Message as often as outside it.
  const inner = typeof envelope.Message === 'string' && random() < 0.5;
  let target: Json = inner ? (JSON.parse(envelope.Message as string) as Json) : root;
  for (let i = 1 + int(random, 3); i > 0; i--) target = mutateAt(target, pick(random, paths(target)), random);
  if (inner) envelope.Message = random() < 0.9 ? JSON.stringify(target) : (target as Json);
  else root = target;
  let text = (JSON.stringify(root) ?? 'undefined')
    .replaceAll(`\\"${DEEP}\\"`, DEEP_TEXT)
    .replaceAll(`"${DEEP}"`, DEEP_TEXT);
  if (random() < 0.1) {
    const at = int(random, text.length + 1);
    text =
      text.slice(0, at) + pick(random, ['', '"', '{', '\u0000', ']', '\\']) + text.slice(at + int(random, 3));
  }
  return text;
}

const VERDICTS = new Set(['PASS', 'FAIL', 'GRAY', 'PROCESSING_FAILED', 'DISABLED', 'UNKNOWN']);

/** What every parse result must satisfy, whatever went in. */
function checkParsed(parsed: ParsedBody, sources?: NotificationSources): void {
  assert.ok(['receipt', 'setup', 'invalid'].includes(parsed.kind));
  if (parsed.kind === 'invalid') {
    assert.equal(typeof parsed.reason, 'string');
    assert.ok(parsed.reason.length < 2_000, `reason of ${parsed.reason.length} characters`);
    return;
  }
  if (parsed.kind === 'setup') return;
  const r = parsed.receipt;
  assert.match(r.sesMessageId, /^[A-Za-z0-9._-]{1,200}$/);
  for (const recipient of r.recipients) {
    assert.equal(
      envelopeAddressProblem(recipient),
      undefined,
      `usable recipient ${JSON.stringify(recipient)}`,
    );
    assert.equal(recipient, recipient.trim().toLowerCase());
  }
  for (const bad of r.invalidRecipients) assert.ok(bad.reason && bad.address.length <= 321);
  assert.ok(
    r.source === '' || envelopeAddressProblem(r.source) === undefined,
    `source ${JSON.stringify(r.source)}`,
  );
  for (const verdict of Object.values(r.verdicts)) assert.ok(VERDICTS.has(verdict), verdict);
  if (r.mail.kind === 's3') {
    assert.match(r.mail.bucket, BUCKET_RE);
    assert.ok(Buffer.byteLength(r.mail.key) <= 1024 && !/\p{Cc}/u.test(r.mail.key));
    if (sources?.buckets.length) assert.ok(sources.buckets.includes(r.mail.bucket));
  }
}

describe('notifications fuzzed', () => {
  it('parseSqsBody gives every mutated notification a typed verdict and never throws (seeded)', (t) => {
    const seed = Number(process.env.FUZZ_SEED ?? 20_261_201);
    const count = Number(process.env.FUZZ_COUNT ?? 10_000);
    const random = mulberry32(seed);
    const sources: NotificationSources = { topicArns: [DEFAULT_TOPIC_ARN], buckets: ['fuzz-test-emails'] };
    const kinds: Record<string, number> = { receipt: 0, setup: 0, invalid: 0, unusableRecipients: 0 };
    for (let i = 0; i < count; i++) {
      const base = realistic(random, 'fuzz.test', 'fuzz-test-emails', 'k', sesMessageId());
      const body =
        random() < 0.02 ? sesSetupNotification({ rawDelivery: random() < 0.5 }) : mutatedBody(random, base);
      const withSources = random() < 0.5 ? sources : undefined;
      try {
        const parsed = parseSqsBody(body, withSources);
        checkParsed(parsed, withSources);
        kinds[parsed.kind] = (kinds[parsed.kind] ?? 0) + 1;
        if (parsed.kind === 'receipt' && parsed.receipt.invalidRecipients.length > 0)
          kinds.unusableRecipients! += 1;
      } catch (error) {
        throw new Error(
          `notification fuzz case ${i} (FUZZ_SEED=${seed}): ${String(error)}; body ${body.slice(0, 300)}`,
          {
            cause: error,
          },
        );
      }
    }
    t.diagnostic(`${count} mutated notifications (seed ${seed}): ${JSON.stringify(kinds)}`);
    assert.ok((kinds.receipt ?? 0) > count / 20, 'enough mutations still parse, so the deep checks ran');
    assert.ok((kinds.invalid ?? 0) > count / 20);
  });

  describe('through the pipeline', () => {
    let stack: TestStack;
    let rig: Rig;
    const DOMAIN = 'fuzz.test';
    before(async () => {
      stack = await startStack({ tables: true, domains: [DOMAIN] });
      rig = await startRig({ domains: [DOMAIN], stack, env: { S3_MAX_ATTEMPTS: '1' } });
    });
    after(async () => {
      await rig?.stop();
      await stack?.stop();
    });

    it('settles 300 mutated notifications: each gets an outcome, no SMTP command carries what they smuggled', async (t) => {
      const random = mulberry32(Number(process.env.FUZZ_SEED ?? 7));
      const queueUrl = stack.queues[DOMAIN]?.queueUrl ?? '';
      const raw = Buffer.from('From: f@external.test\r\nTo: user@fuzz.test\r\nSubject: fuzz\r\n\r\nhi\r\n');
      const stored = await putMail(stack, {
        domain: DOMAIN,
        raw,
        recipients: [`user@${DOMAIN}`],
        source: 'f@external.test',
        shape: 'sns-s3',
      });
      await rig.outcome(stored.messageId);
      const ids: string[] = [];
      for (let i = 0; i < 300; i++) {
        const base = realistic(random, DOMAIN, stored.bucket ?? '', stored.key ?? '', sesMessageId());
        const body = mutatedBody(random, base);
        // SQS itself refuses bodies it cannot carry (over 256 KB, or characters outside its set): not our input.
        const sent = await stack.sqs
          .send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }))
          .catch(() => undefined);
        if (sent?.MessageId) ids.push(sent.MessageId);
      }
      const outcomeOf = (id: string): LogLine | undefined =>
        rig.logs.find((l) => l.sqsMessageId === id && typeof l.disposition === 'string');
      await waitUntil(
        () => ids.every((id) => outcomeOf(id) !== undefined),
        120_000,
        'an outcome for every message',
        100,
      );

      const dispositions: Record<string, number> = {};
      for (const id of ids) {
        const line = outcomeOf(id) as LogLine;
        const key = `${line.disposition}:${line.status}`;
        dispositions[key] = (dispositions[key] ?? 0) + 1;
        if (line.status === 'malformed')
          assert.equal(line.disposition, 'dead-letter', 'malformed is never deleted');
      }
      t.diagnostic(
        `${ids.length} mutated notifications through the pipeline: ${JSON.stringify(dispositions)}`,
      );
      const plain = /^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9.-]+$/i;
      for (const m of [...rig.mailbox.messages, ...rig.internal.messages]) {
        assert.ok(m.from === '' || plain.test(m.from), `MAIL FROM ${JSON.stringify(m.from)}`);
        for (const to of m.to) assert.ok(plain.test(to), `RCPT TO ${JSON.stringify(to)}`);
      }
      assert.ok(
        Object.keys(dispositions).some((k) => k.startsWith('delete:')),
        'some were delivered',
      );
      assert.ok((dispositions['dead-letter:malformed'] ?? 0) > 0, 'some were malformed');
    });
  });

  describe('confined to expected topics and buckets', () => {
    let stack: TestStack;
    let rig: Rig;
    let queue: DomainQueue;
    const DOMAIN = 'confined.test';
    const EVIL_TOPIC = 'arn:aws:sns:us-east-1:999999999999:not-ours';
    before(async () => {
      stack = await startStack({ tables: true });
      queue = await createDomainQueue(stack.sqs, DOMAIN, {
        withDlq: true,
        maxReceiveCount: 1,
        visibilityTimeout: 1,
      });
      rig = await startRig({
        domains: [DOMAIN],
        stack,
        env: { ALLOWED_TOPIC_ARNS: DEFAULT_TOPIC_ARN, ALLOWED_MAIL_BUCKETS: '{domain}-emails' },
      });
    });
    after(async () => {
      await rig?.stop();
      await stack?.stop();
    });
    const mail = Buffer.from('From: a@external.test\r\nTo: user@confined.test\r\nSubject: c\r\n\r\nhi\r\n');
    const send = (
      input: Partial<Parameters<typeof putMail>[1]> & Pick<Parameters<typeof putMail>[1], 'shape'>,
    ) =>
      putMail(stack, {
        domain: DOMAIN,
        raw: mail,
        recipients: [`user@${DOMAIN}`],
        source: 'a@external.test',
        ...input,
      });
    const outcomeBySqsId = async (id: string | undefined): Promise<LogLine | undefined> => {
      const find = () => rig.logs.find((l) => l.sqsMessageId === id && typeof l.disposition === 'string');
      await waitUntil(() => find() !== undefined, 15_000, `the outcome of ${id}`);
      return find();
    };

    it('processes a notification from the allowed topic naming the allowed bucket, enveloped or raw', async () => {
      for (const shape of ['sns-s3', 'raw-s3'] as const) {
        const put = await send({ shape });
        assert.equal((await rig.outcome(put.messageId)).status, 'delivered', shape);
      }
    });

    it('leaves a notification naming another bucket for the dead-letter queue and reads nothing from it', async () => {
      const put = await send({ shape: 'sns-s3', bucket: 'someone-elses-bucket' });
      const line = await outcomeBySqsId(put.sqsMessageId);
      assert.equal(line?.status, 'malformed');
      assert.match(String(line?.reason), /someone-elses-bucket.*ALLOWED_MAIL_BUCKETS/);
      assert.equal(line?.level, 'error');
      const dlq = queue.dlqUrl ?? '';
      await waitUntil(
        async () => (await queueCounts(stack.sqs, dlq)).visible === 1,
        15_000,
        'the message in the DLQ',
      );
      assert.equal(
        rig.mailbox.messages.filter((m) => m.raw.includes('Subject: c')).length,
        2,
        'only the two allowed',
      );
    });

    it('leaves a notification from another topic, or a raw one naming none, for the dead-letter queue', async () => {
      const evil = await send({ shape: 'sns-s3', notification: { topicArn: EVIL_TOPIC } });
      const raw = await stack.sqs.send(
        new SendMessageCommand({
          QueueUrl: queue.queueUrl,
          MessageBody: JSON.stringify({
            ...sesNotification({
              messageId: sesMessageId(),
              source: 'a@external.test',
              recipients: [`user@${DOMAIN}`],
              bucket: 'confined-test-emails',
              key: 'nothing',
              headers: [],
            }),
            receipt: {
              action: { type: 'S3', bucketName: 'confined-test-emails', objectKey: 'x' },
              recipients: [],
            },
          }),
        }),
      );
      assert.match(String((await outcomeBySqsId(evil.sqsMessageId))?.reason), /not-ours.*ALLOWED_TOPIC_ARNS/);
      assert.match(String((await outcomeBySqsId(raw.MessageId))?.reason), /no SNS topic/);
    });
  });
});
