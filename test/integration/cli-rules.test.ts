/**
 * `unified-worker rules` and `blocklist` against dynalite, and what the real pipeline (pipeline rig, smtp-server
 * sinks, the SES emulator) then does with the items they wrote: an auto-reply, a forward, a blocked sender.
 * Mail goes in with `unified-worker inject`.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';

import { MAIL_LIMITS } from '../../src/mail/mail-limits.ts';
import { assertUsageError, runCommand, type CliResult } from '../harness/cli-runner.ts';
import { startRig, type LogLine, type Rig } from '../harness/pipeline-rig.ts';

const DOMAIN = 'cli-rules.test';
let rig: Rig;
let env: Record<string, string>;

before(async () => {
  rig = await startRig({ domains: [DOMAIN] });
  env = { ...rig.stack.env, DOMAINS: DOMAIN, IDEMPOTENCY_TABLE: 'email-worker-idempotency' };
  // The rig made the tables and the queue; setup adds the bucket inject stores mail in.
  const setup = await runCommand(['setup'], env);
  assert.equal(setup.code, 0, setup.stdout + setup.stderr);
});
after(() => rig.stop());

function cli(...argv: string[]): Promise<CliResult> {
  return runCommand(argv, env);
}

/** Injects a test mail and waits for the daemon's outcome line. */
async function mail(from: string, to: string): Promise<LogLine> {
  const run = await cli('inject', '--to', to, '--from', from, '--subject', 'hello', '--json');
  assert.equal(run.code, 0, run.stderr);
  const [injected] = run.json<{ injected: Array<{ sesMessageId: string }> }>().injected;
  return rig.outcome(injected?.sesMessageId ?? '');
}

/** The raw DynamoDB item (attribute types included), as the daemon reads it. */
async function rawItem(table: string, address: string) {
  const { Item } = await rig.stack.dynamodb.send(
    new GetItemCommand({ TableName: table, Key: { email_address: { S: address } }, ConsistentRead: true }),
  );
  return Item;
}

describe('rules', () => {
  it('set writes the item the daemon reads, and the next mail gets the auto-reply', async () => {
    const text = 'Back on Monday.\nUrgent things: alice@cli-rules.test';
    const run = await cli('rules', 'set', `Away@${DOMAIN.toUpperCase()}`, '--ooo-message', text, '--json');
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(run.json(), {
      email_address: `away@${DOMAIN}`,
      ooo_active: true,
      ooo_message: text,
      ooo_content_type: 'text',
      forwards: [],
    });
    assert.deepEqual(await rawItem('email-rules', `away@${DOMAIN}`), {
      email_address: { S: `away@${DOMAIN}` },
      ooo_active: { BOOL: true },
      ooo_message: { S: text },
      ooo_content_type: { S: 'text' },
      forwards: { L: [] },
    });

    rig.stack.ses.clear();
    const outcome = await mail('client@external.test', `away@${DOMAIN}`);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(
      outcome.effects?.map((e) => [e.kind, e.target, e.status]),
      [['autoreply', 'client@external.test', 'sent']],
    );
    const [reply] = await rig.stack.ses.waitForSent(1);
    const replyText = reply?.raw.toString('utf8') ?? '';
    assert.match(replyText, /^Auto-Submitted: auto-replied\r$/m);
    assert.ok(replyText.includes('Back on Monday.'), replyText);
    assert.deepEqual(reply?.destinations, ['client@external.test']);
  });

  it('--ooo off keeps the text and stops the replies', async () => {
    const run = await cli('rules', 'set', `away@${DOMAIN}`, '--ooo', 'off', '--json');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.json().ooo_active, false);
    assert.match(String(run.json().ooo_message), /^Back on Monday\./);
    rig.stack.ses.clear();
    const outcome = await mail('other@external.test', `away@${DOMAIN}`);
    assert.equal(outcome.status, 'delivered');
    assert.deepEqual(outcome.effects ?? [], []);
    assert.equal(rig.stack.ses.sendAttempts, 0, 'no auto-reply sent');
  });

  it('reads a multi-line HTML text from a file, and --ooo on needs a text', async () => {
    const file = path.join(tmpdir(), `ooo-${process.pid}.html`);
    await writeFile(file, '<p>Away</p>\n<p>Back on <b>Monday</b></p>\n');
    const run = await cli('rules', 'set', `html@${DOMAIN}`, '--ooo-file', file, '--html', '--json');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.json().ooo_content_type, 'html');
    assert.equal(run.json().ooo_message, '<p>Away</p>\n<p>Back on <b>Monday</b></p>\n');

    const empty = await cli('rules', 'set', `nobody-yet@${DOMAIN}`, '--ooo', 'on');
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /--ooo on needs a text/);
    assert.equal(await rawItem('email-rules', `nobody-yet@${DOMAIN}`), undefined, 'nothing written');
  });

  it('forwards: targets are lower-cased and the next mail is forwarded on the internal port', async () => {
    const run = await cli(
      'rules',
      'set',
      `fwd@${DOMAIN}`,
      '--forward-add',
      `Carol@${DOMAIN.toUpperCase()}`,
      '--json',
    );
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(run.json().forwards, [`carol@${DOMAIN}`]);
    assert.equal(run.json().ooo_active, false, 'a new item states ooo_active');
    rig.internal.clear();
    const outcome = await mail('client@external.test', `fwd@${DOMAIN}`);
    assert.deepEqual(
      outcome.effects?.map((e) => [e.kind, e.target, e.route, e.status]),
      [['forward', `carol@${DOMAIN}`, 'internal', 'sent']],
    );
    const [forwarded] = await rig.internal.waitFor(1);
    assert.deepEqual(forwarded?.to, [`carol@${DOMAIN}`]);

    const removed = await cli(
      'rules',
      'set',
      `fwd@${DOMAIN}`,
      '--forward-remove',
      `carol@${DOMAIN}`,
      '--forward-remove',
      `zed@${DOMAIN}`,
      '--json',
    );
    assert.deepEqual(removed.json().forwards, []);
    assert.match(removed.stderr, /zed@cli-rules\.test was not a forward target/);
  });

  it('warns about a forward chain back to the address, and refuses a forward to itself', async () => {
    assert.equal((await cli('rules', 'set', `a@${DOMAIN}`, '--forward-add', `b@${DOMAIN}`)).code, 0);
    const loop = await cli('rules', 'set', `b@${DOMAIN}`, '--forward-add', `a@${DOMAIN}`);
    assert.equal(loop.code, 0);
    assert.match(loop.stderr, /forward loop: b@cli-rules\.test -> a@cli-rules\.test -> b@cli-rules\.test/);
    const self = await cli('rules', 'set', `a@${DOMAIN}`, '--forward-add', `a@${DOMAIN}`);
    assert.equal(self.code, 2);
    assert.match(self.stderr, /cannot forward to itself/);
  });

  it('refuses anything but a plain mailbox with exit 2 and writes nothing', async () => {
    for (const address of [
      `evil@${DOMAIN}\r\nBcc: x@y.test`,
      'Alice <alice@cli-rules.test> <bob@cli-rules.test>',
      'no-at-sign',
      `"quoted"@${DOMAIN}`,
    ]) {
      const run = await cli('rules', 'set', address, '--ooo-message', 'x');
      assertUsageError(run, /^unified-worker rules set: /, address);
    }
    const target = await cli('rules', 'set', `ok@${DOMAIN}`, '--forward-add', `bad\n@${DOMAIN}`);
    assert.equal(target.code, 2);
    assert.equal(await rawItem('email-rules', `ok@${DOMAIN}`), undefined);
  });

  it('refuses what the daemon would skip or cut: the same bounds on both sides (MAIL_LIMITS)', async () => {
    const targets = Array.from({ length: MAIL_LIMITS.forwards + 1 }, (_, i) => [
      `--forward-add`,
      `t${i}@${DOMAIN}`,
    ]).flat();
    const many = await cli('rules', 'set', `bounded@${DOMAIN}`, ...targets);
    assertUsageError(many, new RegExp(`at most ${MAIL_LIMITS.forwards} entries in forwards`));
    assert.equal(await rawItem('email-rules', `bounded@${DOMAIN}`), undefined);
    const long = await cli(
      'rules',
      'set',
      `bounded@${DOMAIN}`,
      '--forward-add',
      `${'x'.repeat(250)}@outside.test`,
    );
    assert.equal(long.code, 2);
    const text = await cli(
      'rules',
      'set',
      `bounded@${DOMAIN}`,
      '--ooo-message',
      'x'.repeat(MAIL_LIMITS.oooMessageChars + 1),
    );
    assertUsageError(text, new RegExp(`at most ${MAIL_LIMITS.oooMessageChars} are used`));
    const fits = await cli('rules', 'set', `bounded@${DOMAIN}`, ...targets.slice(0, -2));
    assert.equal(fits.code, 0, fits.stderr);
  });

  it('takes the address of a display-name form, and says what to type for a missing file', async () => {
    const set = await cli('rules', 'set', `Bob Smith <Bob@${DOMAIN}>`, '--ooo-message', 'Out.', '--json');
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.json().email_address, `bob@${DOMAIN}`);
    const show = await cli('rules', 'show', `Bob <bob@${DOMAIN}>`);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /out-of-office: on \(text\)\n {4}\| Out\./);
    assertUsageError(
      await cli('rules', 'set', `bob@${DOMAIN}`, '--ooo-file', '/nonexistent/away.txt'),
      /^unified-worker rules set: --ooo-file \/nonexistent\/away\.txt: no such file$/,
    );
    assertUsageError(
      await cli('blocklist', 'add', `bob@${DOMAIN}`, 'Spammer <spam@x.test>'),
      /type the address only, spam@x\.test$/,
    );
    const deleted = await cli('rules', 'delete', `bob@${DOMAIN}`);
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  it('global options work before the command too', async () => {
    const run = await cli('--json', '--domains', DOMAIN, 'rules', 'list');
    assert.equal(run.code, 0, run.stderr);
    assert.ok(Array.isArray(run.json<{ rules: unknown[] }>().rules));
    const bad = await runCommand(['--domains', 'not a domain', 'rules', 'list'], env);
    assertUsageError(bad, /^unified-worker rules list: --domains "not a domain": /);
    const unset = await runCommand(['rules', 'list'], { ...env, DOMAINS: '' });
    assertUsageError(unset, /^unified-worker rules list: which domains\? give --domains/);
  });

  it('an unreachable DynamoDB is one line and exit 1', async () => {
    const run = await runCommand(['rules', 'show', `away@${DOMAIN}`], {
      ...env,
      AWS_ENDPOINT_URL_DYNAMODB: 'http://127.0.0.1:9',
    });
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^unified-worker rules show: GetItem email-rules failed: .*ECONNREFUSED/);
    assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
  });

  it('show, list and delete', async () => {
    const show = await cli('rules', 'show', `away@${DOMAIN}`);
    assert.match(show.stdout, /out-of-office: off \(text\)\n {4}\| Back on Monday\.\n {4}\| Urgent things/);
    const missing = await cli('rules', 'show', `nobody@${DOMAIN}`, '--json');
    assert.equal(missing.stdout.trim(), 'null');
    const list = await cli('rules', 'list', '--json');
    const addresses = list
      .json<{ rules: Array<{ email_address: string }> }>()
      .rules.map((r) => r.email_address);
    assert.deepEqual(addresses, [
      `a@${DOMAIN}`,
      `away@${DOMAIN}`,
      `b@${DOMAIN}`,
      `bounded@${DOMAIN}`,
      `fwd@${DOMAIN}`,
      `html@${DOMAIN}`,
    ]);
    const deleted = await cli('rules', 'delete', `html@${DOMAIN}`, '--json');
    assert.deepEqual(deleted.json(), { email_address: `html@${DOMAIN}`, deleted: true });
    assert.equal(await rawItem('email-rules', `html@${DOMAIN}`), undefined);
  });
});

describe('blocklist', () => {
  it('add writes blocked_patterns, and mail from a matching sender is blocked', async () => {
    const run = await cli('blocklist', 'add', `alice@${DOMAIN}`, '*@Spam.Test', 'news@*.example', '--json');
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(run.json(), {
      email_address: `alice@${DOMAIN}`,
      blocked_patterns: ['*@spam.test', 'news@*.example'],
    });
    assert.deepEqual(await rawItem('email-blocked-senders', `alice@${DOMAIN}`), {
      email_address: { S: `alice@${DOMAIN}` },
      blocked_patterns: { L: [{ S: '*@spam.test' }, { S: 'news@*.example' }] },
    });
    rig.mailbox.clear();
    const blocked = await mail('eve@spam.test', `alice@${DOMAIN}`);
    assert.equal(blocked.status, 'blocked');
    assert.equal(rig.mailbox.messages.length, 0, 'nothing delivered');

    const delivered = await mail('friend@ok.test', `alice@${DOMAIN}`);
    assert.equal(delivered.status, 'delivered');
  });

  it('test uses the daemon matcher: exit 0 and the pattern when blocked, 1 when not', async () => {
    const hit = await cli('blocklist', 'test', `alice@${DOMAIN}`, 'News@Letters.Example', '--json');
    assert.equal(hit.code, 0);
    assert.deepEqual(hit.json(), {
      email_address: `alice@${DOMAIN}`,
      sender: 'news@letters.example',
      blocked: true,
      pattern: 'news@*.example',
    });
    const miss = await cli('blocklist', 'test', `alice@${DOMAIN}`, 'news@letters.example.org');
    assert.equal(miss.code, 1);
    assert.match(miss.stdout, /^not blocked: none of alice@cli-rules\.test's 2 patterns matches/);
  });

  it('remove takes a pattern out, and the sender gets through again', async () => {
    const run = await cli('blocklist', 'remove', `alice@${DOMAIN}`, '*@spam.test', '--json');
    assert.deepEqual(run.json().blocked_patterns, ['news@*.example']);
    const outcome = await mail('eve@spam.test', `alice@${DOMAIN}`);
    assert.equal(outcome.status, 'delivered');
    const list = await cli('blocklist', 'list', '--json');
    assert.deepEqual(list.json().blocklists, [
      { email_address: `alice@${DOMAIN}`, blocked_patterns: ['news@*.example'] },
    ]);
  });

  it('refuses patterns with whitespace, control characters or over 256 characters, and warns about "*"', async () => {
    for (const pattern of ['a b@x.test', 'x@y.test\r\nz', 'a'.repeat(257), '']) {
      const run = await cli('blocklist', 'add', `alice@${DOMAIN}`, pattern);
      assert.equal(run.code, 2, JSON.stringify(pattern));
    }
    const everything = await cli('blocklist', 'add', `bob@${DOMAIN}`, '*');
    assert.equal(everything.code, 0);
    assert.match(
      everything.stderr,
      /"\*" matches every sender: bob@cli-rules\.test will receive no mail at all/,
    );
  });

  it('removing from an address without a list writes no item', async () => {
    const run = await cli('blocklist', 'remove', `carol@${DOMAIN}`, '*@x.test');
    assert.equal(run.code, 0);
    assert.match(run.stderr, /\*@x\.test was not blocked/);
    assert.equal(await rawItem('email-blocked-senders', `carol@${DOMAIN}`), undefined);
  });

  it('a blocked mail is deleted from S3 after its audit (the daemon reads what blocklist wrote)', async () => {
    await cli('blocklist', 'add', `dave@${DOMAIN}`, 'spammer@*');
    const run = await cli('inject', '--to', `dave@${DOMAIN}`, '--from', 'spammer@x.test', '--json');
    const [injected] = run.json<{ injected: Array<{ sesMessageId: string; bucket: string; key: string }> }>()
      .injected;
    const outcome = await rig.outcome(injected?.sesMessageId ?? '');
    assert.equal(outcome.status, 'blocked');
    await assert.rejects(
      rig.stack.s3.send(new HeadObjectCommand({ Bucket: injected?.bucket, Key: injected?.key })),
      (error: Error) => error.name === 'NotFound',
    );
  });
});
