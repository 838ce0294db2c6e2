/**
 * Every mail-controlled size has a bound (src/mail/mail-limits.ts): work is counted here — fields materialised,
 * ids collected, addresses parsed — never timed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { WorkerError } from '../../src/errors.ts';
import { sesBounceCheck } from '../../src/mail/bounce.ts';
import { parseDsn } from '../../src/mail/dsn.ts';
import { rewriteForForward } from '../../src/mail/forward.ts';
import { editHeaders, serializeMessage, splitMessage } from '../../src/mail/header-block.ts';
import { MAIL_LIMITS } from '../../src/mail/mail-limits.ts';
import { headerView, parseMail, withBodies } from '../../src/pipeline/parse.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const fixture = (name: string): Buffer => readFileSync(new URL(`../fixtures/dsn/${name}`, import.meta.url));

/** A header block of `count` empty `a:` fields (the measured crash: 24 MB of them), then a body. */
function fieldBomb(count: number): Buffer {
  return Buffer.concat([Buffer.alloc(count * 4, 'a:\r\n'), b('From: late@example.com\r\n\r\nbody\r\n')]);
}

/** `depth` nested multipart/mixed containers around one text part. */
export function nestedMime(depth: number, head = 'From: a@external.test\r\nTo: ooo@example.com\r\n'): Buffer {
  const open: string[] = [head];
  for (let i = 0; i < depth; i++)
    open.push(`Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n`);
  open.push('Content-Type: text/plain\r\n\r\nthe innermost text\r\n');
  for (let i = depth - 1; i >= 0; i--) open.push(`--b${i}--\r\n`);
  return b(open.join(''));
}

describe('header block bounds', () => {
  it('stops at the field bound on a 24 MB block of empty fields, and still round-trips', () => {
    const raw = fieldBomb(6_000_000);
    const split = splitMessage(raw);
    assert.equal(split.fields.length, MAIL_LIMITS.headerFields);
    assert.equal(split.truncated, 'header-fields');
    assert.ok(serializeMessage(split).equals(raw));
    assert.deepEqual(headerView(split).limits, ['header-fields']);
  });

  it('keeps exactly the bound without calling the block truncated', () => {
    const raw = Buffer.concat([Buffer.alloc(MAIL_LIMITS.headerFields * 4, 'a:\r\n'), b('\r\nbody')]);
    const split = splitMessage(raw);
    assert.equal(split.fields.length, MAIL_LIMITS.headerFields);
    assert.equal(split.truncated, undefined);
  });

  it('stops before a 5 MB single header line and keeps the fields before it', () => {
    const raw = Buffer.concat([
      b('From: a@example.com\r\nX-Huge: '),
      Buffer.alloc(5 * 1024 * 1024, 'x'),
      b('\r\n\r\nbody'),
    ]);
    const split = splitMessage(raw);
    assert.equal(split.truncated, 'header-bytes');
    assert.deepEqual(
      split.fields.map((f) => f.name),
      ['From'],
    );
    assert.ok(serializeMessage(split).equals(raw));
    assert.equal(headerView(split).from?.address, 'a@example.com');
  });

  it('stops inside a field of a million continuation lines', () => {
    const raw = Buffer.concat([b('Subject: start\r\n'), Buffer.alloc(4_000_000, ' x\r\n'), b('\r\nbody')]);
    const split = splitMessage(raw);
    assert.equal(split.truncated, 'header-bytes');
    assert.equal(split.fields.length, 0);
    assert.ok(serializeMessage(split).equals(raw));
  });

  it('refuses to edit an incomplete block (a From past the bound would survive next to ours)', () => {
    const split = splitMessage(fieldBomb(20_000));
    assert.throws(
      () => editHeaders(split, { set: [['From', 'x@example.com']] }),
      (e: unknown) => e instanceof WorkerError && e.code === 'MAIL_LIMIT' && !e.temporary,
    );
    assert.throws(
      () =>
        rewriteForForward(fieldBomb(20_000), {
          forwardingAddress: 'alice@example.com',
          originalRecipient: 'alice@example.com',
          domain: 'example.com',
          subjectPrefix: 'FWD: ',
          loopMarker: { name: 'X-SES-Worker-Processed', value: 'v' },
          messageIdDomain: 'example.com',
          now: new Date(),
        }),
      (e: unknown) => e instanceof WorkerError && e.code === 'MAIL_LIMIT',
    );
  });
});

describe('header view bounds', () => {
  it('records no limits for ordinary mail', async () => {
    const view = await parseMail(fixture('ses-bounce-single.eml'));
    assert.equal(view.limits, undefined);
  });

  it('does not parse an address field over its bound', () => {
    const to = Array.from({ length: 2_000 }, (_, i) => `user${i}@example.com`).join(', ');
    assert.ok(to.length > MAIL_LIMITS.addressFieldBytes);
    const view = headerView(splitMessage(b(`From: a@x.test\r\nTo: ${to}\r\n\r\n`)));
    assert.deepEqual(view.to, []);
    assert.deepEqual(view.limits, ['address-list']);
    assert.equal(view.from?.address, 'a@x.test');
  });

  it('reads at most the address budget from To and Cc together', () => {
    const field = (n: number, offset: number) =>
      Array.from({ length: n }, (_, i) => `u${offset + i}@example.com`).join(', ');
    const fields = Array.from({ length: 6 }, (_, i) => `${i % 2 ? 'Cc' : 'To'}: ${field(300, i * 300)}`);
    const view = headerView(splitMessage(b(`${fields.join('\r\n')}\r\n\r\n`)));
    assert.equal(view.to.length + view.cc.length, MAIL_LIMITS.addresses);
    assert.deepEqual(view.limits, ['address-list']);
  });

  it('ignores References and In-Reply-To over their bound', () => {
    const refs = Array.from({ length: 5_000 }, (_, i) => `<id${i}@example.com>`).join(' ');
    assert.ok(refs.length > MAIL_LIMITS.threadHeaderBytes);
    const view = headerView(splitMessage(b(`References: ${refs}\r\nIn-Reply-To: ${refs}\r\n\r\n`)));
    assert.deepEqual(view.references, []);
    assert.equal(view.inReplyTo, undefined);
    assert.deepEqual(view.limits, ['references']);
  });
});

describe('MIME nesting bound of the body walk', () => {
  it('skips the walk of 10,000 nested containers and says why', async () => {
    const raw = nestedMime(10_000);
    const view = await withBodies(raw, headerView(splitMessage(raw)));
    assert.deepEqual(view.limits, ['mime-depth']);
    assert.match(view.parseError ?? '', /mime-depth/);
    assert.equal(view.text, undefined);
  });

  it('walks a mail nested as deep as real ones get', async () => {
    const raw = nestedMime(20);
    const view = await withBodies(raw, headerView(splitMessage(raw)));
    assert.equal(view.limits, undefined);
    assert.equal(view.text?.trim(), 'the innermost text');
  });

  it('does not start the walk on an incomplete header block', async () => {
    const raw = fieldBomb(20_000);
    const view = await withBodies(raw, headerView(splitMessage(raw)));
    assert.match(view.parseError ?? '', /header block past its bound/);
  });
});

describe('delivery report bounds', () => {
  const report = (headers: string) =>
    b(
      `From: MAILER-DAEMON@amazonses.com\r\n${headers}Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n` +
        '--r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\n' +
        'Reporting-MTA: dns; a.example\r\n\r\nFinal-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--r--\r\n',
    );

  it('collects at most the id bound from forged References, closest first', () => {
    const fields = Array.from(
      { length: 400 },
      (_, f) => `References: ${Array.from({ length: 25 }, (_, i) => `<f${f}i${i}@x.test>`).join(' ')}\r\n`,
    );
    const dsn = parseDsn(report(fields.join('')));
    assert.equal(dsn.originalMessageIds.length, MAIL_LIMITS.dsnIds);
    assert.equal(dsn.originalMessageIds[0], '<f399i24@x.test>');
    assert.deepEqual(dsn.limits, ['dsn-ids']);
    assert.deepEqual(dsn.failedRecipients, ['bob@example.com']);
  });

  it('ignores a References value over its bound', () => {
    const refs = Array.from({ length: 10_000 }, (_, i) => `<r${i}@x.test>`).join(' ');
    const dsn = parseDsn(report(`References: ${refs}\r\n`));
    assert.deepEqual(dsn.originalMessageIds, []);
    assert.deepEqual(dsn.limits, ['references']);
  });

  it('reads at most the recipient bound from a report of thousands of blocks', () => {
    const blocks = Array.from(
      { length: 5_000 },
      (_, i) => `Final-Recipient: rfc822; u${i}@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n`,
    ).join('');
    const raw = b(
      'From: MAILER-DAEMON@amazonses.com\r\nContent-Type: multipart/report; boundary="r"\r\n\r\n' +
        `--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n${blocks}--r--\r\n`,
    );
    assert.equal(parseDsn(raw).failedRecipients.length, MAIL_LIMITS.dsnRecipients);
  });

  it('stops at the depth bound of the report walker', () => {
    const dsn = parseDsn(nestedMime(50, 'From: MAILER-DAEMON@amazonses.com\r\n'));
    assert.deepEqual(dsn.limits, ['mime-depth']);
  });

  it('adds no limits to real reports', () => {
    for (const name of ['ses-bounce-single.eml', 'postfix-dsn.eml', 'exchange-ndr.eml'])
      assert.equal(parseDsn(fixture(name)).limits, undefined, name);
  });
});

describe('sesBounceCheck: what SES vouched for', () => {
  const daemonView = headerView(splitMessage(fixture('ses-bounce-single.eml')));
  const pass = { spf: 'PASS', dmarc: 'PASS' };

  it('authenticates a real SES bounce: null envelope sender, DMARC PASS for amazonses.com', () => {
    assert.equal(sesBounceCheck(daemonView, '', pass), 'authenticated');
  });

  it('authenticates by SPF when the envelope sender is in amazonses.com or a subdomain', () => {
    const none = { spf: 'PASS', dmarc: 'FAIL' };
    assert.equal(sesBounceCheck(daemonView, 'MAILER-DAEMON@amazonses.com', none), 'authenticated');
    assert.equal(
      sesBounceCheck(daemonView, '0102018c1a2b-000000@eu-west-1.amazonses.com', none),
      'authenticated',
    );
  });

  it('does not trust a forged From: DMARC failed and the envelope is someone else', () => {
    assert.equal(
      sesBounceCheck(daemonView, 'attacker@evil.test', { spf: 'PASS', dmarc: 'FAIL' }),
      'unauthenticated',
    );
    assert.equal(sesBounceCheck(daemonView, '', { spf: 'PASS', dmarc: 'UNKNOWN' }), 'unauthenticated');
    assert.equal(
      sesBounceCheck(daemonView, 'x@amazonses.com.evil.test', { spf: 'PASS', dmarc: 'FAIL' }),
      'unauthenticated',
    );
  });

  it('does not count a DMARC PASS that belongs to another From', () => {
    const other = headerView(splitMessage(b('From: someone@example.org\r\n\r\n')));
    assert.equal(
      sesBounceCheck(other, 'MAILER-DAEMON@amazonses.com', { spf: 'FAIL', dmarc: 'PASS' }),
      'unauthenticated',
    );
  });

  it('is not a bounce when neither From nor envelope is SES mailer-daemon', () => {
    const other = headerView(splitMessage(b('From: someone@example.org\r\n\r\n')));
    assert.equal(sesBounceCheck(other, 'someone@example.org', pass), 'not-a-bounce');
  });
});
