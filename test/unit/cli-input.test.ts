/**
 * What the operator commands accept: addresses, blocklist patterns, verdicts, replay times; the SES trace headers
 * inject writes and replay reads back; the progress line.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { matchesEverything, parseMailbox, parsePattern } from '../../src/cli/addresses.ts';
import { UsageError } from '../../src/cli/command.ts';
import { Progress } from '../../src/cli/output.ts';
import { parseTime } from '../../src/cli/options.ts';
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
      ['Alice <alice@example.com>', /not a plain local part/],
      ['"alice"@example.com', /not a plain local part/],
      ['al ice@example.com', /not a plain local part/],
      ['.alice@example.com', /not a plain local part/],
      ['alice..b@example.com', /not a plain local part/],
      ['alice@localhost', /not a domain name/],
      ['alice@exa_mple.com', /not a domain name/],
      ['alice', /not a mailbox/],
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
