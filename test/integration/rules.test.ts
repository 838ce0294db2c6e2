import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { MAIL_LIMITS } from '../../src/mail/mail-limits.ts';
import { createSesSender } from '../../src/aws/ses-sender.ts';
import { WorkerError } from '../../src/errors.ts';
import { createDomainQueue, startStack, type TestStack } from '../harness/emulators.ts';
import { bigMail, putLargeMail, startFaultProxy, type FaultProxy } from '../harness/faults.ts';
import { ShiftableClock, startRig, type Rig } from '../harness/pipeline-rig.ts';
import { buildMime, putMail } from '../harness/ses-events.ts';

const DOMAIN = 'rules.test';
const VIRUS_DOMAIN = 'virus.test';
const CACHE_DOMAIN = 'cache.test';
const TAG_DOMAIN = 'tagged.test';

let stack: TestStack;
let rig: Rig;
let virusRig: Rig;
let cacheRig: Rig;
let tagRig: Rig;
let dynamoProxy: FaultProxy;
const clock = new ShiftableClock();

function headerBlock(raw: Buffer | undefined): string {
  if (!raw) return '';
  // Unfolded, as a header parser sees it.
  return raw
    .subarray(0, raw.indexOf('\r\n\r\n'))
    .toString('utf8')
    .replace(/\r\n(?=[ \t])/g, '');
}

describe('mail behaviour through the pipeline', () => {
  before(async () => {
    stack = await startStack({ tables: true, domains: [DOMAIN] });
    await createDomainQueue(stack.sqs, VIRUS_DOMAIN);
    rig = await startRig({ domains: [DOMAIN], stack, clock });
    virusRig = await startRig({ domains: [VIRUS_DOMAIN], stack, env: { VIRUS_POLICY: 'reject' } });
    await createDomainQueue(stack.sqs, TAG_DOMAIN);
    tagRig = await startRig({ domains: [TAG_DOMAIN], stack, env: { FORWARD_SPAM_POLICY: 'tag' } });
    // Counts the DynamoDB calls the pipeline makes (the proxy passes every request on unchanged).
    await createDomainQueue(stack.sqs, CACHE_DOMAIN);
    dynamoProxy = await startFaultProxy(stack.endpoints.dynamodb);
    cacheRig = await startRig({
      domains: [CACHE_DOMAIN],
      stack,
      env: { AWS_ENDPOINT_URL_DYNAMODB: dynamoProxy.endpoint, RULES_CACHE_SECONDS: '30' },
    });
  });
  after(async () => {
    await rig?.stop();
    await virusRig?.stop();
    await tagRig?.stop();
    await cacheRig?.stop();
    await dynamoProxy?.stop();
    await stack?.stop();
  });

  it('auto-replies once per sender within the interval and again after it', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `away@${DOMAIN}`, ooo_active: true, ooo_message: 'Back on the 3rd.' },
      }),
    );
    stack.ses.clear();
    const send = async (subject: string) => {
      const put = await putMail(stack, {
        domain: DOMAIN,
        raw: await buildMime({ from: 'client@external.test', to: `away@${DOMAIN}`, subject, text: 'hi' }),
        recipients: [`away@${DOMAIN}`],
        source: 'client@external.test',
        shape: 'sns-s3',
      });
      return rig.outcome(put.messageId);
    };
    const first = await send('one');
    const second = await send('two');
    assert.equal(first.effects?.[0]?.status, 'sent');
    assert.equal(second.effects?.[0]?.status, 'suppressed');
    assert.equal(second.effects?.[0]?.reason, 'already-replied-within-interval');
    assert.equal(stack.ses.sent.length, 1);

    clock.offsetMs = 8 * 86_400_000;
    const third = await send('three');
    assert.equal(third.effects?.[0]?.status, 'sent');
    await stack.ses.waitForSent(2);
    assert.equal(stack.ses.sent.length, 2);
    assert.match(headerBlock(stack.ses.sent[1]?.raw), /^Subject: Auto: three$/m);
    clock.offsetMs = 0;
  });

  it('does not auto-reply to a mailing list and says why', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `away2@${DOMAIN}`, ooo_active: true, ooo_message: 'away' },
      }),
    );
    const put = await putMail(stack, {
      domain: DOMAIN,
      raw: await buildMime({
        from: 'list@lists.test',
        to: `away2@${DOMAIN}`,
        subject: 'Weekly digest',
        text: 'news',
        headers: { 'List-Id': '<weekly.lists.test>', Precedence: 'list' },
      }),
      recipients: [`away2@${DOMAIN}`],
      source: 'bounces@lists.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'delivered');
    assert.equal(outcome.effects?.[0]?.status, 'suppressed');
    assert.equal(outcome.effects?.[0]?.reason, 'precedence');
  });

  it('does not auto-reply to a sender SES could not authenticate (no backscatter)', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `away3@${DOMAIN}`, ooo_active: true, ooo_message: 'away' },
      }),
    );
    const attempts = stack.ses.sendAttempts;
    // The reflector: the attacker signs for their own domain (DKIM PASS), forges the victim as sender.
    const put = await putMail(stack, {
      domain: DOMAIN,
      raw: await buildMime({
        from: 'victim@forged.test',
        to: `away3@${DOMAIN}`,
        subject: 'spoof',
        text: 'x',
      }),
      recipients: [`away3@${DOMAIN}`],
      source: 'victim@forged.test',
      shape: 'sns-s3',
      notification: { verdicts: { spf: 'FAIL', dkim: 'PASS', dmarc: 'GRAY' } },
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(
      outcome.effects?.map((e) => [e.kind, e.status, e.reason]),
      [['autoreply', 'suppressed', 'unauthenticated-sender']],
    );
    assert.equal(stack.ses.sendAttempts, attempts);
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
    assert.equal(head.Metadata?.suppressed_effects, `autoreply:away3@${DOMAIN}:unauthenticated-sender`);
  });

  it('adds the SES verdicts as headers on the delivered copy', async () => {
    const raw = await buildMime({
      from: 'spammy@external.test',
      to: `alice@${DOMAIN}`,
      subject: 'Win',
      text: 'x',
    });
    const put = await putMail(stack, {
      domain: DOMAIN,
      raw,
      recipients: [`alice@${DOMAIN}`],
      source: 'spammy@external.test',
      shape: 'sns-s3',
      notification: { verdicts: { spam: 'FAIL', dkim: 'GRAY', dmarc: 'FAIL' } },
    });
    await rig.outcome(put.messageId);
    const delivered = rig.mailbox.messages.find((m) => m.raw.subarray(m.raw.length - raw.length).equals(raw));
    assert.ok(delivered);
    // The delivery id comes first (before.dovecot.sieve reads the first occurrence), then the verdicts.
    assert.match(
      delivered.raw.subarray(0, delivered.raw.length - raw.length).toString('latin1'),
      new RegExp(
        '^X-SES-Worker-Delivery-Id: deliver\\.[0-9a-f]{32}\r\n' +
          'X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\nX-SES-SPF-Verdict: PASS\r\n' +
          'X-SES-DKIM-Verdict: GRAY\r\nX-SES-DMARC-Verdict: FAIL\r\n$',
      ),
    );
  });

  it('with FORWARD_SPAM_POLICY=tag forwards spam outside with the SES verdicts first, the forged ones gone', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `fwd@${TAG_DOMAIN}`, ooo_active: false, forwards: ['me@elsewhere.test'] },
      }),
    );
    const raw = await buildMime({
      from: 'bulk@spam.test',
      to: `fwd@${TAG_DOMAIN}`,
      subject: 'offer',
      text: 'x',
      headers: { 'X-SES-Spam-Verdict': 'PASS' },
    });
    const sentBefore = stack.ses.sent.length;
    const put = await putMail(stack, {
      domain: TAG_DOMAIN,
      raw,
      recipients: [`fwd@${TAG_DOMAIN}`],
      source: 'bulk@spam.test',
      shape: 'sns-s3',
      notification: { verdicts: { spam: 'FAIL' } },
    });
    const outcome = await tagRig.outcome(put.messageId);
    assert.deepEqual(
      outcome.effects?.map((e) => [e.target, e.route, e.status]),
      [['me@elsewhere.test', 'ses', 'sent']],
    );
    const forwarded = stack.ses.sent
      .slice(sentBefore)
      .find((m) => m.destinations.includes('me@elsewhere.test'));
    assert.ok(forwarded, 'forwarded through SES');
    const head = headerBlock(forwarded.raw);
    assert.match(
      head,
      /^X-SES-Spam-Verdict: FAIL\r\nX-SES-Virus-Verdict: PASS\r\nX-SES-SPF-Verdict: PASS\r\nX-SES-DKIM-Verdict: PASS\r\nX-SES-DMARC-Verdict: PASS\r\n/,
    );
    assert.equal(head.match(/^X-SES-Spam-Verdict:/gm)?.length, 1, "the sender's own copy removed");
  });

  it('with VIRUS_POLICY=reject does not deliver a virus and records why in S3', async () => {
    const put = await putMail(stack, {
      domain: VIRUS_DOMAIN,
      raw: await buildMime({
        from: 'bad@external.test',
        to: `alice@${VIRUS_DOMAIN}`,
        subject: 'invoice',
        text: 'x',
      }),
      recipients: [`alice@${VIRUS_DOMAIN}`],
      source: 'bad@external.test',
      shape: 'sns-s3',
      notification: { verdicts: { virus: 'FAIL' } },
    });
    const outcome = await virusRig.outcome(put.messageId);
    assert.equal(outcome.status, 'blocked');
    assert.equal(outcome.disposition, 'delete');
    assert.equal(virusRig.mailbox.messages.length, 0);
    // A virus verdict is recorded, then the object is deleted like any mail blocked for everyone.
    await assert.rejects(
      stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key })),
      /NotFound/,
    );
    assert.ok(
      virusRig.logs.some((l) => l.sesMessageId === put.messageId && l.recipients?.[0]?.detail === 'virus'),
      'the outcome line names the virus verdict',
    );
  });

  it('does not forward to the recipient itself and forwards each target once', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: {
          email_address: `loop@${DOMAIN}`,
          ooo_active: false,
          forwards: [`loop@${DOMAIN}`, 'Elsewhere@Gmail.test', 'elsewhere@gmail.test'],
        },
      }),
    );
    stack.ses.clear();
    const put = await putMail(stack, {
      domain: DOMAIN,
      raw: await buildMime({ from: 'a@external.test', to: `loop@${DOMAIN}`, subject: 'cycle', text: 'x' }),
      recipients: [`loop@${DOMAIN}`],
      source: 'a@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.deepEqual(
      outcome.effects?.map((e) => [e.target, e.status, e.reason ?? '']),
      [
        [`loop@${DOMAIN}`, 'suppressed', 'forward-to-self'],
        ['elsewhere@gmail.test', 'sent', ''],
      ],
    );
    await stack.ses.waitForSent(1);
    assert.equal(stack.ses.sent.length, 1);
    // The forwarded copy carries our marker, so if it ever comes back in through SES no rule runs on it.
    assert.match(headerBlock(stack.ses.sent[0]?.raw), /^X-SES-Worker-Processed: worker-rules\.test; id=/im);
  });

  it('rule data past its bounds cannot wedge mail: bad forward targets skipped, the rest cut, the reason recorded', async () => {
    const tooLong = `${'x'.repeat(1_700)}@outside.test`;
    const many = Array.from({ length: 25 }, (_, i) => `target-${i}@${DOMAIN}`);
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: {
          email_address: `wedge@${DOMAIN}`,
          ooo_active: false,
          forwards: [tooLong, 'no-at-sign', ...many],
        },
      }),
    );
    const put = await putMail(stack, {
      domain: DOMAIN,
      raw: await buildMime({ from: 'a@external.test', to: `wedge@${DOMAIN}`, subject: 'wedge', text: 'x' }),
      recipients: [`wedge@${DOMAIN}`],
      source: 'a@external.test',
      shape: 'sns-s3',
    });
    const outcome = await rig.outcome(put.messageId);
    assert.equal(outcome.disposition, 'delete', 'final on the first receive: no table fault, no retry');
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(
      outcome.effects?.map((e) => e.target),
      many.slice(0, MAIL_LIMITS.forwards),
      'the usable targets, cut to MAIL_LIMITS.forwards',
    );
    assert.ok(outcome.effects?.every((e) => e.status === 'sent'));
    assert.deepEqual(outcome.limits, ['forward-target', 'forwards']);
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
    assert.equal(head.Metadata?.rule_limits, `wedge@${DOMAIN}: forward-target,forwards`);
    assert.ok(
      rig.logs.some(
        (l) =>
          l.msg === 'rules data over its bound: only the first part is used' && l.limit === 'forward-target',
      ),
    );
  });

  it('reads rules and blocklists of all recipients in one DynamoDB call, then from the per-thread cache', async () => {
    const recipients = ['a', 'b', 'c', 'd', 'e'].map((u) => `${u}@${CACHE_DOMAIN}`);
    const send = async () => {
      const put = await putMail(stack, {
        domain: CACHE_DOMAIN,
        raw: await buildMime({ from: 'x@external.test', to: recipients, subject: 'many', text: 'x' }),
        recipients,
        source: 'x@external.test',
        shape: 'sns-s3',
      });
      return cacheRig.outcome(put.messageId);
    };
    // The ledger batches its completes with BatchGetItem too (on its own table): count the rules reads only.
    const rulesReads = () =>
      dynamoProxy.count('BatchGetItem', (r) => r.body?.includes('"email-rules"') === true);
    const before = rulesReads();
    assert.equal((await send()).status, 'delivered');
    assert.equal(rulesReads() - before, 1, 'one BatchGetItem for five recipients');
    const batch = dynamoProxy.requests
      .filter((r) => r.operation === 'BatchGetItem' && r.body?.includes('"email-rules"'))
      .at(-1);
    const tables = Object.keys(
      (JSON.parse(batch?.body ?? '{}') as { RequestItems?: object }).RequestItems ?? {},
    );
    assert.deepEqual(tables.sort(), ['email-blocked-senders', 'email-rules'], 'both tables in the same call');
    assert.equal(dynamoProxy.count('GetItem'), 0);

    assert.equal((await send()).status, 'delivered');
    assert.equal(rulesReads() - before, 1, 'the second mail was served from the cache');
  });

  it('records a forward over the SES limit as failed and still delivers the local copy', async () => {
    await stack.ddb.send(
      new PutCommand({
        TableName: 'email-rules',
        Item: { email_address: `big@${DOMAIN}`, ooo_active: false, forwards: ['big@gmail.test'] },
      }),
    );
    const attempts = stack.ses.sendAttempts;
    // 31 MB is over 40 MB once base64-encoded, which is how SES measures it.
    const raw = bigMail('big-forward', `big@${DOMAIN}`, 31 * 1024 * 1024);
    const put = await putLargeMail(stack, {
      domain: DOMAIN,
      raw,
      recipients: [`big@${DOMAIN}`],
      source: 'x@external.test',
    });
    const outcome = await rig.outcome(put.messageId, 30_000);
    assert.equal(outcome.status, 'delivered');
    assert.equal(outcome.disposition, 'delete');
    assert.equal(outcome.effects?.[0]?.status, 'failed');
    assert.match(outcome.effects?.[0]?.reason ?? '', /SES_MESSAGE_TOO_LARGE/);
    assert.equal(stack.ses.sendAttempts, attempts, 'SES was not called');
    assert.ok(
      rig.mailbox.messages.some((m) => m.raw.length > raw.length),
      'the local copy was delivered',
    );
    const head = await stack.s3.send(new HeadObjectCommand({ Bucket: put.bucket, Key: put.key }));
    assert.equal(head.Metadata?.failed_effects, 'forward:big@gmail.test');
    assert.equal(head.Metadata?.status, 'delivered');
  });

  it('refuses a forward over the SES raw limit before calling SES', async () => {
    const sender = createSesSender(stack.sesv2, { clock });
    const attempts = stack.ses.sendAttempts;
    await assert.rejects(
      sender.send({
        from: `a@${DOMAIN}`,
        destinations: ['x@gmail.test'],
        raw: Buffer.alloc(31 * 1024 * 1024, 0x61),
      }),
      (error: unknown) =>
        error instanceof WorkerError && error.code === 'SES_MESSAGE_TOO_LARGE' && !error.temporary,
    );
    assert.equal(stack.ses.sendAttempts, attempts);
  });
});
