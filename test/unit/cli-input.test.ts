/**
 * What the operator commands accept: addresses (display names too), blocklist patterns, verdicts, numbers,
 * durations, replay times; the SES trace headers inject writes and replay reads back; the progress line.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { matchesEverything, parseMailbox, parseMailboxes, parsePattern } from '../../src/cli/addresses.ts';
import { UsageError } from '../../src/cli/exit.ts';
import { Progress } from '../../src/cli/output.ts';
import { listOption, parseChoice, parseDuration, parseInteger, parseTime } from '../../src/cli/options.ts';
import {
  hasSesTrace,
  parseVerdictOption,
  readSesTrace,
  sesTraceHeaders,
  VERDICT_VALUES,
  type Verdicts,
} from '../../src/cli/ses-trace.ts';

describe('parseMailbox', () => {
  it('trims and lower-cases a plain mailbox', () => {
    assert.equal(parseMailbox('  Alice.Smith+tag@Example.COM '), 'alice.smith+tag@example.com');
    assert.equal(parseMailbox("o'brien@mail.example.co.uk"), "o'brien@mail.example.co.uk");
  });

  it('refuses anything that is not one plain mailbox, naming what is wrong', () => {
    const cases: Array<[string, RegExp]> = [
      ['alice@example.com\r\nBcc: x@evil.test', /line break/],
      ['alice@example.com\n', /line break/],
      ['alice\0@example.com', /line break or NUL/],
      ['"alice"@example.com', /not a plain local part/],
      ['al ice@example.com', /not a plain local part/],
      ['.alice@example.com', /not a plain local part/],
      ['alice..b@example.com', /not a plain local part/],
      ['alice@localhost', /not a domain name/],
      ['alice@exa_mple.com', /not a domain name/],
      ['alice', /not a mailbox: type local@domain/],
      ['Alice <alice>', /not a mailbox/],
      ['Alice <>', /not a mailbox/],
      ['Alice <a@b.test> <c@d.test>', /not a plain local part/],
      ['@example.com', /not a mailbox/],
      ['alice@', /not a mailbox/],
      [`${'a'.repeat(65)}@example.com`, /not a plain local part/],
      [`a@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.${'e'.repeat(63)}.com`, /over 254/],
    ];
    for (const [input, reason] of cases) {
      assert.throws(
        () => parseMailbox(input, '--to'),
        (error: unknown) =>
          error instanceof UsageError && reason.test(error.message) && error.message.startsWith('--to '),
        JSON.stringify(input),
      );
    }
  });
});

describe('parseMailbox with a display name', () => {
  it('takes the address inside the angle brackets, as a mail program shows it', () => {
    assert.equal(parseMailbox('Bob <Bob@Example.com>'), 'bob@example.com');
    assert.equal(parseMailbox('  "Smith, Bob" <bob@example.com> '), 'bob@example.com');
    assert.equal(parseMailbox('<bob@example.com>'), 'bob@example.com');
    assert.equal(parseMailbox('Bob Smith <bob.smith+x@mail.example.com>'), 'bob.smith+x@mail.example.com');
  });

  it('still refuses a header injection inside the name', () => {
    assert.throws(() => parseMailbox('Bob\r\nBcc: x@evil.test <bob@example.com>'), /line break/);
  });
});

describe('parseMailboxes', () => {
  it('parses each and keeps the first of duplicates, in order', () => {
    assert.deepEqual(parseMailboxes(['B@x.test', 'Al <a@x.test>', 'b@x.test'], '--to'), [
      'b@x.test',
      'a@x.test',
    ]);
  });
});

describe('parsePattern', () => {
  it('keeps fnmatch syntax and lower-cases', () => {
    assert.equal(parsePattern('*@Spam.COM'), '*@spam.com');
    assert.equal(parsePattern('news[0-9]?@*.example'), 'news[0-9]?@*.example');
    assert.equal(parsePattern('  müller@*.de '), 'müller@*.de');
  });

  it('refuses empty, overlong, whitespace, control characters and brackets no address has', () => {
    for (const input of [
      '',
      '   ',
      'a b@x.test',
      'a\tb',
      'x@y\r\n',
      'x\u0000',
      'x\u200b@y',
      '<x@y>',
      'x,y',
      'a'.repeat(257),
    ]) {
      assert.throws(() => parsePattern(input), UsageError, JSON.stringify(input));
    }
    assert.throws(
      () => parsePattern('Spammer <Spam@Example.com>'),
      /has a display name: type the address only, spam@example\.com/,
    );
    assert.equal(parsePattern('a'.repeat(256)).length, 256);
  });

  it('recognises the patterns that block every sender', () => {
    for (const p of ['*', '**', '*@*', '?*@*', '*@?*']) assert.equal(matchesEverything(p), true, p);
    for (const p of ['*@spam.test', 'a*', '?', '*.com', '*@*.com'])
      assert.equal(matchesEverything(p), false, p);
  });
});

describe('SES trace headers', () => {
  const input = {
    sesMessageId: 'abc123',
    source: 'sender@external.test',
    recipients: ['a@example.com', 'b@example.com'],
    region: 'eu-west-1',
    timestamp: new Date('2026-11-27T10:00:00Z'),
  };

  it('read back every verdict inject writes', () => {
    for (const status of VERDICT_VALUES) {
      const verdicts: Verdicts = { spam: status, virus: status, spf: status, dkim: status, dmarc: status };
      const mail = Buffer.concat([
        sesTraceHeaders({ ...input, verdicts }, '\r\n'),
        Buffer.from('Subject: x\r\n\r\nbody\r\n'),
      ]);
      const trace = readSesTrace(mail);
      assert.deepEqual(trace.verdicts, verdicts, status);
      assert.equal(trace.source, 'sender@external.test');
    }
  });

  it('are what SES puts on top: Return-Path, Received by inbound-smtp, verdicts, Authentication-Results', () => {
    const verdicts: Verdicts = { spam: 'PASS', virus: 'PASS', spf: 'FAIL', dkim: 'GRAY', dmarc: 'PASS' };
    assert.equal(
      sesTraceHeaders({ ...input, verdicts }, '\n').toString('latin1'),
      'Return-Path: <sender@external.test>\n' +
        'Received: from unified-worker-inject by inbound-smtp.eu-west-1.amazonaws.com with SMTP id abc123\n' +
        ' for a@example.com;\n' +
        ' Fri, 27 Nov 2026 10:00:00 +0000 (UTC)\n' +
        'X-SES-Spam-Verdict: PASS\n' +
        'X-SES-Virus-Verdict: PASS\n' +
        'Authentication-Results: amazonses.com;\n' +
        ' spf=fail;\n' +
        ' dkim=none;\n' +
        ' dmarc=pass;\n',
    );
  });

  it('trust the first occurrence: copies further down came with the mail', () => {
    const mail = Buffer.from(
      'Return-Path: <>\r\n' +
        'X-SES-Spam-Verdict: FAIL\r\n' +
        'Authentication-Results: mx.other.test; spf=pass\r\n' +
        'Authentication-Results: amazonses.com;\r\n spf=softfail (not designated);\r\n dkim=temperror;\r\n dmarc=fail;\r\n' +
        'X-SES-Spam-Verdict: PASS\r\n' +
        'Authentication-Results: amazonses.com; spf=pass; dkim=pass; dmarc=pass\r\n' +
        'Subject: forged\r\n\r\n',
    );
    assert.deepEqual(readSesTrace(mail), {
      source: '',
      verdicts: { spam: 'FAIL', virus: 'DISABLED', spf: 'GRAY', dkim: 'PROCESSING_FAILED', dmarc: 'FAIL' },
    });
  });

  it('recognise a mail SES already stored (downloaded from a bucket)', () => {
    assert.equal(hasSesTrace(Buffer.from('X-SES-RECEIPT: AEFB\r\nSubject: x\r\n\r\n')), true);
    assert.equal(
      hasSesTrace(Buffer.from('Subject: x\r\n\r\nX-SES-Spam-Verdict: PASS\r\n')),
      false,
      'in the body',
    );
  });
});

describe('option values', () => {
  it('--verdict name=status', () => {
    assert.deepEqual(parseVerdictOption('Virus=fail'), ['virus', 'FAIL']);
    assert.deepEqual(parseVerdictOption(' dmarc = PROCESSING_FAILED '), ['dmarc', 'PROCESSING_FAILED']);
    for (const bad of ['spam', 'spam=', 'ham=PASS', 'spam=MAYBE', '=PASS'])
      assert.equal(parseVerdictOption(bad), undefined, bad);
  });

  it('--since / --until: ISO dates and times (UTC unless an offset is given) and relative durations', () => {
    const now = Date.parse('2026-11-27T12:00:00Z');
    assert.equal(parseTime('--since', '2026-11-27', now), Date.parse('2026-11-27T00:00:00Z'));
    assert.equal(parseTime('--since', '2026-11-27T10:30', now), Date.parse('2026-11-27T10:30:00Z'));
    assert.equal(parseTime('--since', '2026-11-27T10:30:15+02:00', now), Date.parse('2026-11-27T08:30:15Z'));
    assert.equal(parseTime('--since', '90m', now), now - 90 * 60_000);
    assert.equal(parseTime('--since', '6h', now), now - 6 * 3_600_000);
    assert.equal(parseTime('--since', '2d', now), now - 2 * 86_400_000);
    for (const bad of ['yesterday', '2026-13-01', '27.11.2026', '5w', '-1d', '1700000000', '']) {
      assert.throws(() => parseTime('--since', bad, now), UsageError, bad);
    }
  });
});

describe('shared option parsers', () => {
  it('lists: comma-separated and repeated, trimmed, empty items dropped', () => {
    assert.deepEqual(listOption(['a, b', 'c', ' ,', 'd']), ['a', 'b', 'c', 'd']);
    assert.deepEqual(listOption(undefined), []);
  });

  it('whole numbers within a range, a fallback when absent, the option named when wrong', () => {
    assert.equal(parseInteger('--limit', '12', { min: 1, max: 100 }), 12);
    assert.equal(parseInteger('--limit', undefined, { min: 1 }, 7), 7);
    assert.equal(parseInteger('--limit', undefined, { min: 1 }), undefined);
    for (const bad of ['0', '101', '1.5', '1e3', 'ten', '', '-3', '0x10']) {
      assert.throws(
        () => parseInteger('--limit', bad, { min: 1, max: 100 }),
        (error: unknown) =>
          error instanceof UsageError &&
          error.message === `--limit ${JSON.stringify(bad)}: expected a whole number, 1..100`,
        bad,
      );
    }
    assert.throws(() => parseInteger('--max', '0', { min: 1 }), /expected a whole number, 1 or more/);
  });

  it('durations: seconds, or with s, m, h, d, within the bound', () => {
    assert.equal(parseDuration('--wait', '90', 600), 90);
    assert.equal(parseDuration('--wait', '90s', 600), 90);
    assert.equal(parseDuration('--wait', '5m', 600), 300);
    assert.equal(parseDuration('--wait', '1h', 3600), 3600);
    assert.equal(parseDuration('--wait', undefined, 600), undefined);
    for (const bad of ['0', '601', '11m', 'soon', '1.5m', '-5', '5 min']) {
      assert.throws(
        () => parseDuration('--wait', bad, 600),
        /^UsageError: --wait .*expected a duration of 1 s to 600 s/,
        bad,
      );
    }
  });

  it('choices, case-insensitive, listed when wrong', () => {
    assert.equal(parseChoice('--status', 'Rejected', ['delivered', 'rejected'] as const), 'rejected');
    assert.throws(
      () => parseChoice('--status', 'lost', ['delivered', 'rejected'] as const),
      /--status "lost": expected one of delivered, rejected/,
    );
  });
});

describe('Progress', () => {
  it('draws a bar on a terminal and nothing elsewhere', () => {
    let tty = '';
    const onTty = new Progress(
      { write: (s: string) => (tty += s), isTTY: true, columns: 80 },
      'replaying',
      4,
    );
    for (let i = 0; i < 4; i++) onTty.tick();
    onTty.finish();
    assert.match(tty, /replaying \[#{6}-{18}\] 1\/4/);
    assert.match(tty, /replaying \[#{24}\] 4\/4/, 'the last step is always drawn');
    assert.ok(tty.endsWith('\r\x1b[2K'), 'the line is cleared for the summary');

    let plain = '';
    const piped = new Progress({ write: (s: string) => (plain += s) }, 'replaying', 4);
    piped.tick(4);
    piped.status('x');
    piped.finish();
    assert.equal(plain, '');
  });
});
