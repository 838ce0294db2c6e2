/**
 * `unified-worker inject` and `replay` against the emulators and the real pipeline (pipeline rig, smtp-server
 * sinks). One domain has a running pipeline; the other's queue is left alone, so what the commands enqueue can be
 * read back exactly as the daemon would receive it.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, ReceiveMessageCommand, type Message } from '@aws-sdk/client-sqs';

import { finalMetadata } from '../../src/aws/audit-metadata.ts';
import { createS3MailStore, type MailStore } from '../../src/aws/mail-store.ts';
import { systemClock } from '../../src/clock.ts';
import { parseSqsBody } from '../../src/pipeline/notification.ts';
import { assertUsageError, runCommand, type CliResult } from '../harness/cli-runner.ts';
import { createDomainQueue, waitUntil } from '../harness/emulators.ts';
import { ledgerRecord } from '../harness/ledger-record.ts';
import { startRig, type Rig } from '../harness/pipeline-rig.ts';
import { stripVerdicts } from '../harness/verdict-lines.ts';

const LIVE = 'cli-replay.test';
const PARKED = 'parked.test';
let rig: Rig;
let env: Record<string, string>;
let parkedQueue: string;
let store: MailStore;

interface Injected {
  domain: string;
  sesMessageId: string;
  bucket: string;
  key: string;
  recipients: string[];
}
interface ReplayReport {
  selected: number;
  replayed: Array<{ key: string; recipients: string[]; generation?: number; status: string }>;
  notReplayed: Array<{ key: string; reason: string }>;
}

const MIME = Buffer.from(
  'From: Sender <sender@external.test>\r\nTo: someone@cli-replay.test\r\nSubject: replay me\r\nMessage-ID: <r1@external.test>\r\n\r\nBody line one.\r\n',
);

before(async () => {
  rig = await startRig({ domains: [LIVE] });
  await createDomainQueue(rig.stack.sqs, PARKED);
  env = { ...rig.stack.env, DOMAINS: `${LIVE},${PARKED}`, IDEMPOTENCY_TABLE: 'email-worker-idempotency' };
  const setup = await runCommand(['setup'], env);
  assert.equal(setup.code, 0, setup.stdout + setup.stderr);
  parkedQueue =
    (await rig.stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'parked-test-queue' }))).QueueUrl ?? '';
  store = createS3MailStore(rig.stack.s3, { maxAttempts: 1, clock: systemClock });
});
after(() => rig.stop());

function cli(...argv: string[]): Promise<CliResult> {
  return runCommand(argv, env);
}

async function inject(...argv: string[]): Promise<Injected> {
  const run = await cli('inject', ...argv, '--json');
  assert.equal(run.code, 0, run.stderr);
  const [first] = run.json<{ injected: Injected[] }>().injected;
  assert.ok(first);
  return first;
}

async function mailFile(bytes: Buffer = MIME): Promise<string> {
  const file = path.join(tmpdir(), `inject-${process.pid}-${Math.random().toString(36).slice(2)}.eml`);
  await writeFile(file, bytes);
  return file;
}

/** Everything waiting on the parked queue, with message attributes. */
async function parkedMessages(): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const { Messages } = await rig.stack.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: parkedQueue,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        VisibilityTimeout: 60,
        MessageAttributeNames: ['All'],
      }),
    );
    if (!Messages?.length) return all;
    all.push(...Messages);
  }
}

async function object(
  bucket: string,
  key: string,
): Promise<{ bytes: Buffer; metadata: Record<string, string> }> {
  const result = await rig.stack.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return {
    bytes: Buffer.from((await result.Body?.transformToByteArray()) ?? []),
    metadata: result.Metadata ?? {},
  };
}

/** Waits until a notification is on the parked queue, and takes everything there. */
async function waitForParked(): Promise<Message[]> {
  let found: Message[] = [];
  await waitUntil(
    async () => (found = await parkedMessages()).length > 0,
    10_000,
    'the injected notification',
  );
  return found;
}

function copiesFor(recipient: string): number {
  return rig.mailbox.messages.filter((m) => m.to.includes(recipient)).length;
}

describe('inject', () => {
  it('stores the mail under SES trace headers and enqueues the notification SES would send', async () => {
    const file = await mailFile();
    const injected = await inject(
      file,
      '--to',
      `x@${PARKED}`,
      '--verdict',
      'spam=FAIL',
      '--verdict',
      'dkim=GRAY',
    );
    const stored = await object(injected.bucket, injected.key);
    assert.equal(injected.bucket, 'parked-test-emails');
    assert.equal(injected.key, injected.sesMessageId);
    assert.ok(
      stored.bytes.subarray(-MIME.length).equals(MIME),
      'the original bytes follow the trace unchanged',
    );
    const trace = stored.bytes.subarray(0, stored.bytes.length - MIME.length).toString('latin1');
    assert.match(
      trace,
      /^Return-Path: <sender@external\.test>\r\nReceived: from .* by inbound-smtp\.us-east-1\.amazonaws\.com with SMTP id /,
    );
    assert.match(
      trace,
      /\r\nX-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\nAuthentication-Results: amazonses\.com;\r\n spf=pass;\r\n dkim=none;\r\n dmarc=pass;\r\n$/,
    );

    const [message] = await parkedMessages();
    const envelope = JSON.parse(message?.Body ?? '{}') as { Type: string; Message: string; TopicArn: string };
    assert.equal(envelope.Type, 'Notification');
    const notification = JSON.parse(envelope.Message) as {
      notificationType: string;
      mail: { messageId: string; source: string; destination: string[]; commonHeaders: { subject?: string } };
      receipt: {
        recipients: string[];
        spamVerdict: { status: string };
        dkimVerdict: { status: string };
        action: Record<string, string>;
      };
    };
    assert.equal(notification.notificationType, 'Received');
    assert.equal(notification.mail.messageId, injected.sesMessageId);
    assert.equal(
      notification.mail.source,
      'sender@external.test',
      'the From address is the default envelope sender',
    );
    assert.equal(notification.mail.commonHeaders.subject, 'replay me');
    assert.deepEqual(notification.receipt.recipients, [`x@${PARKED}`]);
    assert.equal(notification.receipt.spamVerdict.status, 'FAIL');
    assert.equal(notification.receipt.dkimVerdict.status, 'GRAY');
    assert.deepEqual(
      [
        notification.receipt.action.type,
        notification.receipt.action.bucketName,
        notification.receipt.action.objectKey,
      ],
      ['S3', 'parked-test-emails', injected.sesMessageId],
    );
    // The daemon's own parser takes it.
    const parsed = parseSqsBody(message?.Body);
    assert.equal(parsed.kind, 'receipt');
  });

  it('--shape raw-s3 and sns-inline give the bare notification and the mail inline', async () => {
    await inject('--to', `x@${PARKED}`, '--shape', 'raw-s3');
    await inject('--to', `x@${PARKED}`, '--shape', 'sns-inline');
    const [raw, inline] = await parkedMessages();
    assert.equal(
      (JSON.parse(raw?.Body ?? '{}') as { notificationType?: string }).notificationType,
      'Received',
    );
    const parsed = parseSqsBody(inline?.Body);
    assert.ok(parsed.kind === 'receipt' && parsed.receipt.mail.kind === 'inline');
    assert.match(
      parsed.receipt.mail.data.toString('latin1'),
      /Subject: Test mail from unified-worker inject/,
    );
  });

  it('is delivered by the daemon, byte for byte after the headers it adds', async () => {
    const file = await mailFile();
    rig.mailbox.clear();
    const run = await cli('inject', file, '--to', `someone@${LIVE}`, '--wait', '20', '--json');
    assert.equal(run.code, 0, run.stderr);
    const report = run.json<{ injected: Injected[]; outcomes: Array<{ status: string }> }>();
    assert.equal(report.outcomes[0]?.status, 'delivered');
    const [delivered] = await rig.mailbox.waitFor(1);
    const stored = await object(report.injected[0]?.bucket ?? '', report.injected[0]?.key ?? '');
    assert.ok(
      stripVerdicts(delivered?.raw ?? Buffer.alloc(0)).equals(stored.bytes),
      'delivered = stored mail + verdict headers',
    );
    // A plain delivery: the verdict (the one --wait reported) is in the ledger, the object as SES stored it.
    assert.equal(stored.metadata.status, undefined);
  });

  it('refuses bad usage with exit 2: no --to, a foreign domain, a missing file, a bad verdict', async () => {
    for (const argv of [
      ['inject'],
      ['inject', '--to', 'a@elsewhere.test'],
      ['inject', '/nonexistent.eml', '--to', `a@${LIVE}`],
      ['inject', '--to', `a@${LIVE}`, '--verdict', 'spam=MAYBE'],
      ['inject', '--to', `a@${LIVE}`, '--shape', 'carrier-pigeon'],
      ['inject', '--to', `a@${LIVE}`, '--wait', 'soon'],
    ]) {
      assertUsageError(await cli(...argv), /^unified-worker inject: /, argv.join(' '));
    }
    assertUsageError(
      await cli('inject', '/nonexistent.eml', '--to', `a@${LIVE}`),
      /^unified-worker inject: \/nonexistent\.eml: no such file$/,
    );
    assertUsageError(
      await cli('inject', '--to', `a@${LIVE}`, '--shape', 'sns-inline', '--wait', '5'),
      /--wait reads the verdict from the S3 object/,
    );
  });

  it('takes the domain from --to: no DOMAINS or --domains needed', async () => {
    const run = await runCommand(['inject', '--to', `Someone <x@${PARKED}>`, '--json'], {
      ...env,
      DOMAINS: '',
    });
    assert.equal(run.code, 0, run.stderr);
    const [injected] = run.json<{ injected: Injected[] }>().injected;
    assert.deepEqual([injected?.domain, injected?.recipients], [PARKED, [`x@${PARKED}`]]);
    assert.equal((await parkedMessages()).length, 1);
  });

  it('--wait says every effect the verdict records, and exits 0 only when it is final', async () => {
    // The parked domain has no daemon: this test writes the verdict the way the daemon does.
    const pending = cli('inject', '--to', `a@${PARKED},b@${PARKED}`, '--wait', '20');
    const [message] = await waitForParked();
    const parsed = parseSqsBody(message?.Body);
    assert.ok(parsed.kind === 'receipt' && parsed.receipt.mail.kind === 's3');
    await store.updateMetadata(
      parsed.receipt.mail,
      finalMetadata({
        status: 'partial',
        at: Date.now(),
        domain: PARKED,
        envelopeRecipients: [`a@${PARKED}`, `b@${PARKED}`],
        delivered: [`a@${PARKED}`],
        invalid: [`b@${PARKED}`],
        contentRejected: [],
        sentEffects: ['forward:fwd@elsewhere.test', 'autoreply:postmaster@parked.test'],
        failedEffects: [],
      }),
    );
    const run = await pending;
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stdout,
      new RegExp(
        `^parked\\.test: status=partial\n  delivered to a@parked\\.test\n` +
          `  refused: b@parked\\.test \\(mailbox unknown or unusable\\)\n` +
          `  forwarded to fwd@elsewhere\\.test\n  auto-replied to postmaster@parked\\.test\n`,
        'm',
      ),
    );

    const notFinal = await cli('inject', '--to', `c@${PARKED}`, '--wait', '1', '--json');
    assert.equal(notFinal.code, 1, 'no verdict within the wait');
    assert.deepEqual(notFinal.json<{ outcomes: unknown[] }>().outcomes, [
      { domain: PARKED, status: 'pending', final: false, effectsComplete: false },
    ]);
    await parkedMessages();
  });
});

describe('replay', () => {
  it('a mail failed on purpose (recipient rejected), fixed, then replay --status invalid: delivered once', async () => {
    const bob = `bob@${LIVE}`;
    rig.mailbox.setRcptReply(bob, { code: 550, message: '5.1.1 <bob@cli-replay.test>: User unknown' });
    const injected = await inject('--to', bob, '--from', 'sender@external.test');
    const first = await rig.outcome(injected.sesMessageId);
    assert.equal(first.status, 'invalid');
    assert.equal((await object(injected.bucket, injected.key)).metadata.invalid_inboxes, bob);

    const dry = await cli('replay', '--domains', LIVE, '--status', 'invalid', '--dry-run', '--json');
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(
      dry.json<ReplayReport>().replayed.map((r) => [r.key, r.recipients, r.status]),
      [[injected.key, [bob], 'invalid']],
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(rig.outcomes(injected.sesMessageId).length, 1, 'a dry run enqueues nothing');

    rig.mailbox.setRcptReply(bob, undefined);
    rig.mailbox.clear();
    const run = await cli('replay', '--domains', LIVE, '--status', 'invalid');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /1 mail selected: 1 replayed, 0 not replayed/);
    await waitUntil(() => rig.outcomes(injected.sesMessageId).length === 2, 10_000, 'the replayed outcome');
    assert.equal(rig.outcomes(injected.sesMessageId)[1]?.status, 'delivered');
    assert.equal(copiesFor(bob), 1, 'delivered exactly once');
    assert.equal((await object(injected.bucket, injected.key)).metadata.status, 'delivered');

    const again = await cli('replay', '--domains', LIVE, '--status', 'invalid', '--json');
    assert.equal(again.json<ReplayReport>().selected, 0, 'nothing invalid is left');
  });

  it('replaying a delivered mail does not deliver it again (the ledger)', async () => {
    const carol = `carol@${LIVE}`;
    const injected = await inject('--to', carol);
    assert.equal((await rig.outcome(injected.sesMessageId)).status, 'delivered');
    const before = copiesFor(carol);
    const run = await cli('replay', '--domains', LIVE, '--key', injected.key, '--to', carol);
    assert.equal(run.code, 0, run.stderr);
    await waitUntil(() => rig.outcomes(injected.sesMessageId).length === 2, 10_000, 'the replayed outcome');
    const replayed = rig.outcomes(injected.sesMessageId)[1];
    assert.deepEqual(
      // Delivered by the ledger's record, not by the mail server: no reply code this time.
      replayed?.recipients?.map((r) => [r.recipient, r.state, r.code]),
      [[carol, 'delivered', undefined]],
    );
    assert.equal(copiesFor(carol), before, 'no second copy');
  });

  it('enqueues the same SES id and S3 object with uw-replay, and --force adds the next generation', async () => {
    const injected = await inject(
      '--to',
      `x@${PARKED}`,
      '--verdict',
      'spf=FAIL',
      '--from',
      'sender@external.test',
    );
    await parkedMessages();
    const plain = await cli('replay', '--domains', PARKED, '--key', injected.key, '--to', `x@${PARKED}`);
    assert.equal(plain.code, 0, plain.stderr);
    const forced1 = await cli(
      'replay',
      '--domains',
      PARKED,
      '--key',
      injected.key,
      '--to',
      `x@${PARKED}`,
      '--force',
      '--json',
    );
    assert.equal(forced1.json<ReplayReport>().replayed[0]?.generation, 1);
    assert.equal((await object(injected.bucket, injected.key)).metadata.replay_generation, '1');
    const forced2 = await cli(
      'replay',
      '--domains',
      PARKED,
      '--key',
      injected.key,
      '--to',
      `x@${PARKED}`,
      '--force',
      '--json',
    );
    assert.equal(forced2.json<ReplayReport>().replayed[0]?.generation, 2);

    const messages = await parkedMessages();
    assert.deepEqual(
      messages.map((m) => [
        m.MessageAttributes?.['uw-replay']?.StringValue,
        m.MessageAttributes?.['uw-replay-generation'],
      ]),
      [
        ['true', undefined],
        ['true', { DataType: 'Number', StringValue: '1' }],
        ['true', { DataType: 'Number', StringValue: '2' }],
      ],
    );
    for (const message of messages) {
      const parsed = parseSqsBody(message.Body);
      assert.ok(parsed.kind === 'receipt');
      assert.equal(parsed.receipt.sesMessageId, injected.sesMessageId);
      assert.deepEqual(parsed.receipt.mail, { kind: 's3', bucket: injected.bucket, key: injected.key });
      assert.equal(parsed.receipt.source, 'sender@external.test', 'the envelope sender from Return-Path');
      assert.equal(parsed.receipt.verdicts.spf, 'FAIL', "SES's verdicts from its trace headers");
      assert.equal(parsed.receipt.verdicts.spam, 'PASS');
    }
  });

  it('--force delivers again, on purpose, once per generation', async () => {
    const dora = `dora@${LIVE}`;
    const injected = await inject('--to', dora);
    assert.equal((await rig.outcome(injected.sesMessageId)).status, 'delivered');
    const before = copiesFor(dora);
    const run = await cli('replay', '--domains', LIVE, '--key', injected.key, '--to', dora, '--force');
    assert.equal(run.code, 0, run.stderr);
    await waitUntil(() => rig.outcomes(injected.sesMessageId).length === 2, 10_000, 'the forced outcome');
    assert.equal(copiesFor(dora), before + 1, 'one more copy');
  });

  it('says why a mail cannot be replayed, and how, with exit 1', async () => {
    const injected = await inject('--to', `x@${PARKED}`);
    await parkedMessages();
    const run = await cli('replay', '--domains', PARKED, '--key', injected.key, '--json');
    assert.equal(run.code, 1);
    assert.deepEqual(run.json<ReplayReport>().notReplayed, [
      {
        bucket: 'parked-test-emails',
        key: injected.key,
        reason: `the envelope recipients are not recorded (status unprocessed): replay --domains ${PARKED} --key ${injected.key} --to <recipients>`,
      },
    ]);
    const missing = await cli('replay', '--domains', PARKED, '--key', 'no-such-key');
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /no such object/);
  });

  it('filters on processed_at with --since and --until', async () => {
    const recent = await cli(
      'replay',
      '--domains',
      LIVE,
      '--status',
      'delivered',
      '--since',
      '10m',
      '--dry-run',
      '--json',
    );
    assert.ok(recent.json<ReplayReport>().selected >= 2, recent.stdout);
    const old = await cli(
      'replay',
      '--domains',
      LIVE,
      '--status',
      'delivered',
      '--until',
      '2020-01-01',
      '--dry-run',
      '--json',
    );
    assert.equal(old.json<ReplayReport>().selected, 0);
    // Delivered mail names no recipients to replay to (the verdict has no invalid_inboxes), so it is selected and
    // listed as needing --to; either list carries the keys.
    const report = recent.json<ReplayReport>();
    const key = report.replayed[0]?.key ?? report.notReplayed[0]?.key;
    assert.ok(key, recent.stdout);
    const head = await rig.stack.s3.send(
      new HeadObjectCommand({ Bucket: 'cli-replay-test-emails', Key: key }),
    );
    // On the object, or for a plain delivery in its ledger record.
    const record = await ledgerRecord(rig.stack, key.slice(key.lastIndexOf('/') + 1), LIVE);
    assert.ok(Number(head.Metadata?.processed_at ?? record?.verdict_at) > Date.now() / 1000 - 600);
  });

  it('takes the recorded envelope recipients: a delivered mail replays without --to, with --wait its verdict', async () => {
    const erin = `erin@${LIVE}`;
    const injected = await inject('--to', erin);
    assert.equal((await rig.outcome(injected.sesMessageId)).status, 'delivered');
    // A plain delivery: nothing on the object; the ledger record holds the verdict and erin's delivery mark, which
    // is what replay takes as the envelope recipients.
    assert.equal((await object(injected.bucket, injected.key)).metadata.envelope_recipients, undefined);
    const record = await ledgerRecord(rig.stack, injected.sesMessageId, LIVE);
    assert.equal(record?.verdict, 'delivered');
    assert.deepEqual(record?.effects, { [`${erin}|deliver`]: 'done' });
    const before = copiesFor(erin);
    const run = await cli('replay', '--domains', LIVE, '--key', injected.key, '--wait', '20', '--json');
    assert.equal(run.code, 0, run.stderr);
    const [replayed] = run.json<{
      replayed: Array<ReplayReport['replayed'][number] & { outcome?: { status: string; final: boolean } }>;
    }>().replayed;
    assert.deepEqual(replayed?.recipients, [erin]);
    assert.deepEqual([replayed?.outcome?.status, replayed?.outcome?.final], ['delivered', true]);
    // The verdict waited for is the replay's: the daemon logs its outcome line right after writing it.
    await waitUntil(() => rig.outcomes(injected.sesMessageId).length === 2, 5_000, 'the replayed outcome');
    assert.equal(copiesFor(erin), before, 'the ledger skipped erin');
    const metadata = (await object(injected.bucket, injected.key)).metadata;
    assert.equal(metadata.replay_pending, undefined, "the daemon's verdict removed the mark");
    assert.equal(metadata.status, 'delivered');

    const human = await cli('replay', '--domains', LIVE, '--key', injected.key, '--wait', '20');
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stdout,
      new RegExp(
        `^cli-replay-test-emails/${injected.key}: status=delivered\n  delivered to erin@cli-replay\\.test$`,
        'm',
      ),
    );
  });

  it('--status takes every status the audit metadata holds (rejected too)', async () => {
    for (const status of [
      'delivered',
      'partial',
      'invalid',
      'rejected',
      'blocked',
      'failed',
      'unprocessed',
    ]) {
      const run = await cli(
        'replay',
        '--domains',
        LIVE,
        '--status',
        status,
        '--since',
        '1m',
        '--dry-run',
        '--json',
      );
      assert.equal(run.code, 0, `${status}: ${run.stderr}`);
    }
  });

  it('--wait without a daemon: not final, exit 1, and the pending mark stays on the object', async () => {
    const injected = await inject('--to', `x@${PARKED}`);
    await parkedMessages();
    const run = await cli(
      'replay',
      '--domains',
      PARKED,
      '--key',
      injected.key,
      '--to',
      `x@${PARKED}`,
      '--wait',
      '1',
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /: no final outcome within 1 s/);
    assert.match((await object(injected.bucket, injected.key)).metadata.replay_pending ?? '', /^\d+$/);
    await parkedMessages();
    assertUsageError(
      await cli('replay', '--domains', PARKED, '--key', injected.key, '--wait', '5', '--dry-run'),
      /--wait has nothing to wait for with --dry-run/,
    );
  });

  it('refuses an unclear selection with exit 2', async () => {
    for (const argv of [
      ['replay', '--domains', LIVE],
      ['replay', '--domains', LIVE, '--status', 'invalid', '--to', `a@${LIVE}`],
      ['replay', '--key', 'k'],
      ['replay', '--domains', LIVE, '--key', 'k', '--status', 'failed'],
      ['replay', '--domains', LIVE, '--status', 'lost'],
      ['replay', '--domains', LIVE, '--status', 'failed', '--since', 'last tuesday'],
      ['replay', '--domains', LIVE, '--status', 'failed', '--limit', '0'],
    ]) {
      const run = await cli(...argv);
      assert.equal(run.code, 2, `${argv.join(' ')}: ${run.stdout}${run.stderr}`);
    }
  });
});
