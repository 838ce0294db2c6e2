import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import libmime from 'libmime';
import { WorkerError } from '../../src/errors.ts';
import { isSesBounce, rewriteBounce } from '../../src/mail/bounce.ts';
import { outboundLookupKeys, parseDsn } from '../../src/mail/dsn.ts';
import { getHeader, getHeaders, splitMessage } from '../../src/mail/header-block.ts';
import type { MailView } from '../../src/mail/mail-view.ts';

const fixture = (name: string): Buffer => readFileSync(new URL(`../fixtures/dsn/${name}`, import.meta.url));

function view(from: string | undefined, extra: Partial<MailView> = {}): MailView {
  return {
    headers: new Map(from === undefined ? [] : [['from', [from]]]),
    subject: '',
    to: [],
    cc: [],
    references: [],
    contentType: 'text/plain',
    ...(from !== undefined && { from: { address: from.toLowerCase(), name: '' } }),
    ...extra,
  };
}

const isInjection = (e: unknown): boolean =>
  e instanceof WorkerError && e.code === 'HEADER_INJECTION' && e.temporary === false;

const SES_ID_1 = '0100018c1a2b3c4d-7f3e9b2a-5c1d-4e8f-9a0b-1c2d3e4f5a6b-000000';

describe('isSesBounce', () => {
  it('is true for MAILER-DAEMON@amazonses.com in any case', () => {
    assert.equal(isSesBounce(view('MAILER-DAEMON@amazonses.com')), true);
    assert.equal(isSesBounce(view('mailer-daemon@AmazonSES.com')), true);
  });

  it('is true for a multipart/report from SES', () => {
    assert.equal(isSesBounce(view('mailer-daemon@amazonses.com', { contentType: 'multipart/report' })), true);
  });

  it('is true when only the envelope sender is SES mailer-daemon', () => {
    assert.equal(isSesBounce(view('someone@example.org'), 'MAILER-DAEMON@amazonses.com'), true);
    assert.equal(isSesBounce(view(undefined), '<mailer-daemon@amazonses.com>'), true);
  });

  it('reads the raw From header when the full parse failed', () => {
    const headersOnly: MailView = {
      ...view(undefined),
      headers: new Map([['from', ['"Mail Delivery" <MAILER-DAEMON@amazonses.com>']]]),
      parseError: 'timeout',
    };
    assert.equal(isSesBounce(headersOnly), true);
  });

  it('is false for bounces of other MTAs and for look-alike addresses', () => {
    assert.equal(
      isSesBounce(view('MAILER-DAEMON@mail.example.net', { contentType: 'multipart/report' })),
      false,
    );
    assert.equal(isSesBounce(view('postmaster@contoso.onmicrosoft.com')), false);
    assert.equal(isSesBounce(view('mailer-daemon@amazonses.com.evil.example')), false);
    assert.equal(isSesBounce(view('mailer-daemon@us-east-1.amazonses.com')), false);
    assert.equal(isSesBounce(view(undefined), ''), false);
    assert.equal(isSesBounce(view('alice@example.com'), 'bounce@example.com'), false);
  });
});

describe('parseDsn', () => {
  it('reads an SES bounce with one failed recipient and the SES Message-ID of the original', () => {
    assert.deepEqual(parseDsn(fixture('ses-bounce-single.eml')), {
      failedRecipients: ['bob@example.net'],
      originalMessageIds: [`<${SES_ID_1}@email.amazonses.com>`],
      reportingMta: 'a8-51.smtp-out.amazonses.com',
    });
  });

  it('gives the same result for the SES bounce with LF line endings', () => {
    const lf = Buffer.from(
      fixture('ses-bounce-single.eml').toString('latin1').replace(/\r\n/g, '\n'),
      'latin1',
    );
    assert.deepEqual(parseDsn(lf), parseDsn(fixture('ses-bounce-single.eml')));
  });

  it('reads an SES bounce with two failed recipients and a folded Message-ID', () => {
    assert.deepEqual(parseDsn(fixture('ses-bounce-two-recipients.eml')), {
      failedRecipients: ['erin@example.org', 'frank@example.org'],
      originalMessageIds: [
        '<0100018c1f9e1111-2222aaaa-3333-4444-5555-666677778888-000000@email.amazonses.com>',
      ],
      reportingMta: 'a8-30.smtp-out.amazonses.com',
    });
  });

  it('reads a Postfix DSN with the full message returned', () => {
    assert.deepEqual(parseDsn(fixture('postfix-dsn.eml')), {
      failedRecipients: ['carol@example.net'],
      originalMessageIds: ['<20231128100211.GA12345@example.com>'],
      reportingMta: 'mail.example.net',
    });
  });

  it('reads an Exchange Online NDR', () => {
    assert.deepEqual(parseDsn(fixture('exchange-ndr.eml')), {
      failedRecipients: ['dave@contoso.com'],
      originalMessageIds: [
        '<0100018c1a3f5d6e-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d-000000@email.amazonses.com>',
      ],
      reportingMta: 'AM0PR02MB5987.eurprd02.prod.outlook.com',
    });
  });

  it('counts only failed recipients in a mixed delayed, failed and delivered report', () => {
    assert.deepEqual(parseDsn(fixture('mixed-delayed-failed.eml')), {
      failedRecipients: ['gina@example.org'],
      originalMessageIds: [
        '<0100018c1b000001-aaaa0000-bbbb-4ccc-8ddd-eeeeffff0000-000000@email.amazonses.com>',
      ],
      reportingMta: 'relay.example.org',
    });
  });

  it('decodes a base64 delivery-status part and quoted-printable returned headers', () => {
    assert.deepEqual(parseDsn(fixture('base64-delivery-status.eml')), {
      failedRecipients: ['jane@example.org'],
      originalMessageIds: [
        '<0102018c1f000abc-1234abcd-5678-4ef0-9abc-def012345678-000000@eu-west-1.amazonses.com>',
      ],
      reportingMta: 'mx1.mail.example.org',
    });
  });

  it('finds nothing in a mail that is not a DSN, even with an attached message and In-Reply-To', () => {
    assert.deepEqual(parseDsn(fixture('non-dsn.eml')), { failedRecipients: [], originalMessageIds: [] });
  });

  it('falls back to In-Reply-To and References of the DSN itself when no headers were returned', () => {
    const raw = Buffer.from(
      [
        'From: MAILER-DAEMON@amazonses.com',
        'In-Reply-To: <direct@email.amazonses.com>',
        'References: <older@example.com>',
        '  <direct@email.amazonses.com> <newest@example.com>',
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        '',
        '--b',
        'Content-Type: message/delivery-status',
        '',
        'Reporting-MTA: dns; a1.smtp-out.amazonses.com',
        '',
        'Final-Recipient: rfc822; x@example.org',
        'Action: failed',
        'Status: 5.0.0',
        '--b--',
        '',
      ].join('\r\n'),
    );
    assert.deepEqual(parseDsn(raw), {
      failedRecipients: ['x@example.org'],
      originalMessageIds: ['<direct@email.amazonses.com>', '<newest@example.com>', '<older@example.com>'],
      reportingMta: 'a1.smtp-out.amazonses.com',
    });
  });

  it('does not take failed recipients from a bounce returned inside the bounce', () => {
    const inner = fixture('ses-bounce-single.eml');
    const raw = Buffer.concat([
      Buffer.from(
        [
          'From: MAILER-DAEMON@amazonses.com',
          'Content-Type: multipart/report; report-type=delivery-status; boundary="outer"',
          '',
          '--outer',
          'Content-Type: message/delivery-status',
          '',
          'Reporting-MTA: dns; outer.example',
          '',
          'Final-Recipient: rfc822; alice@example.com',
          'Action: failed',
          'Status: 5.1.1',
          '',
          '--outer',
          'Content-Type: message/rfc822',
          '',
          '',
        ].join('\r\n'),
      ),
      inner,
      Buffer.from('\r\n--outer--\r\n'),
    ]);
    const dsn = parseDsn(raw);
    assert.deepEqual(dsn.failedRecipients, ['alice@example.com']);
    assert.deepEqual(dsn.originalMessageIds, [
      '<0102018c1a2b4e1f-2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a-000000@eu-west-1.amazonses.com>',
    ]);
  });

  it('accepts a permanent status without Action but ignores hostile recipient syntax', () => {
    const raw = Buffer.from(
      [
        'Content-Type: multipart/report; report-type=delivery-status; boundary=b',
        '',
        '--b',
        'Content-Type: message/delivery-status',
        '',
        'Final-Recipient: rfc822; no-action@example.org',
        'Status: 5.2.1',
        '',
        'Final-Recipient: rfc822; "a\\"b"@example.org',
        'Action: failed',
        '',
        'Final-Recipient: rfc822; evil@example.org>, <bcc@evil.example',
        'Action: failed',
        '',
        'Original-Recipient: rfc822;only-original@example.org',
        'Action: failed',
        '--b--',
      ].join('\n'),
    );
    assert.deepEqual(parseDsn(raw).failedRecipients, ['no-action@example.org', 'only-original@example.org']);
  });

  it('never throws on malformed input', () => {
    const inputs = [
      Buffer.alloc(0),
      Buffer.from('\r\n\r\n'),
      Buffer.from('Content-Type: multipart/report\r\n\r\n--x\r\n'),
      Buffer.from('Content-Type: multipart/report; boundary=""\r\n\r\nbody'),
      Buffer.from(
        'Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64***',
      ),
      Buffer.from('Content-Type: =?x?q?\r\n\r\n'),
      Buffer.from(
        'Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nAction: fa=\r\niled\r\nFinal-Recipient: rfc822; q=2Ep@exa=\r\nmple.org\r\n',
      ),
      Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)),
    ];
    for (const input of inputs) assert.doesNotThrow(() => parseDsn(input));
    // The quoted-printable case still yields its recipient (=2E is '.', soft line breaks removed).
    assert.deepEqual(parseDsn(inputs[6] as Buffer).failedRecipients, ['q.p@example.org']);
  });

  // How long 200 levels take is measured in bench/mail-parsing.bench.ts; the bound on the work is counted here.
  it('stops at a fixed depth on deeply nested multiparts', () => {
    const nested = (levels: number): Buffer => {
      let body =
        'Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; deep@example.org\r\nAction: failed\r\n';
      for (let i = 0; i < levels; i++) {
        body = `Content-Type: multipart/mixed; boundary=b${i}\r\n\r\n--b${i}\r\n${body}\r\n--b${i}--\r\n`;
      }
      return Buffer.from(body);
    };
    // Every MIME entity the walker enters has its Content-Type parsed once: counting those counts the walk.
    const entitiesWalked = (raw: Buffer): { failed: string[]; entities: number } => {
      const parse = libmime.parseHeaderValue;
      let entities = 0;
      libmime.parseHeaderValue = (value) => {
        entities += 1;
        return parse(value);
      };
      try {
        return { failed: parseDsn(raw).failedRecipients, entities };
      } finally {
        libmime.parseHeaderValue = parse;
      }
    };
    const shallow = entitiesWalked(nested(2));
    const deep = entitiesWalked(nested(200));
    const deeper = entitiesWalked(nested(2_000));
    assert.deepEqual(shallow.failed, ['deep@example.org'], 'a report two levels down is read');
    assert.equal(shallow.entities, 3);
    assert.deepEqual(deep.failed, []);
    assert.deepEqual(deeper.failed, []);
    // 10x the nesting, the same walk: it ends at the depth limit, not at the bottom of the input.
    assert.ok(deep.entities <= 16, `${deep.entities} entities walked for 200 levels`);
    assert.equal(deeper.entities, deep.entities);
  });
});

describe('outboundLookupKeys', () => {
  it('tries the SES id first, then the header value with and without brackets', () => {
    assert.deepEqual(outboundLookupKeys([`<${SES_ID_1}@email.amazonses.com>`]), [
      SES_ID_1,
      `<${SES_ID_1}@email.amazonses.com>`,
      `${SES_ID_1}@email.amazonses.com`,
    ]);
  });

  it('recognises regional SES Message-ID domains and ids without brackets', () => {
    assert.deepEqual(outboundLookupKeys(['0102018c-abc-000000@eu-west-1.amazonses.com']), [
      '0102018c-abc-000000',
      '<0102018c-abc-000000@eu-west-1.amazonses.com>',
      '0102018c-abc-000000@eu-west-1.amazonses.com',
    ]);
    assert.equal(outboundLookupKeys(['<id@us-gov-west-1.amazonses.com>'])[0], 'id');
  });

  it('does not treat other domains as SES ids', () => {
    assert.deepEqual(outboundLookupKeys(['<x@amazonses.com.evil.example>', '<y@mail.example.com>']), [
      '<x@amazonses.com.evil.example>',
      'x@amazonses.com.evil.example',
      '<y@mail.example.com>',
      'y@mail.example.com',
    ]);
  });

  it('deduplicates across ids keeping the first position and skips empty values', () => {
    assert.deepEqual(
      outboundLookupKeys(['<a@email.amazonses.com>', 'a@email.amazonses.com', ' ', '<>', '']),
      ['a', '<a@email.amazonses.com>', 'a@email.amazonses.com'],
    );
  });
});

describe('rewriteBounce', () => {
  const raw = fixture('ses-bounce-single.eml');

  it('sets From, Reply-To and X-Original-From and keeps the body bytes', () => {
    const out = rewriteBounce(raw, {
      failedRecipient: 'bob@example.net',
      originalSource: 'Alice Example <alice@example.com>',
    });
    const before = splitMessage(raw);
    const after = splitMessage(out);
    assert.ok(after.rest.equals(before.rest));
    assert.equal(getHeader(after, 'From'), '"Delivery failure" <bob@example.net>');
    assert.equal(getHeader(after, 'Reply-To'), 'Alice Example <alice@example.com>');
    assert.equal(getHeader(after, 'X-Original-From'), 'MAILER-DAEMON@amazonses.com');
    assert.deepEqual(
      after.fields.map((f) => f.name),
      [...before.fields.map((f) => f.name), 'Reply-To', 'X-Original-From'],
    );
    // Every field other than From is byte-identical and From stays in place.
    before.fields.forEach((field, i) => {
      if (field.name !== 'From') assert.ok(after.fields[i]?.raw.equals(field.raw), field.name);
    });
    assert.equal(
      out
        .toString('latin1')
        .indexOf('From: "Delivery failure" <bob@example.net>\r\nTo: alice@example.com\r\n') > 0,
      true,
    );
  });

  it('leaves Reply-To alone when no original source is known', () => {
    const after = splitMessage(rewriteBounce(raw, { failedRecipient: 'bob@example.net' }));
    assert.deepEqual(getHeaders(after, 'Reply-To'), []);
    assert.equal(getHeader(after, 'From'), '"Delivery failure" <bob@example.net>');
  });

  it('replaces a forged X-Original-From carried by the report', () => {
    const forged = Buffer.concat([Buffer.from('X-Original-From: forged@evil.example\r\n'), raw]);
    const after = splitMessage(rewriteBounce(forged, { failedRecipient: 'bob@example.net' }));
    assert.deepEqual(getHeaders(after, 'X-Original-From'), ['MAILER-DAEMON@amazonses.com']);
  });

  it('keeps LF bounces LF and their body identical', () => {
    const lf = Buffer.from(raw.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
    const out = rewriteBounce(lf, {
      failedRecipient: 'bob@example.net',
      originalSource: 'alice@example.com',
    });
    assert.ok(!out.includes('\r'));
    assert.ok(splitMessage(out).rest.equals(splitMessage(lf).rest));
    assert.equal(getHeader(splitMessage(out), 'Reply-To'), 'alice@example.com');
  });

  it('refuses values that would inject headers or extra addresses', () => {
    const attempts: Array<{ failedRecipient: string; originalSource?: string }> = [
      { failedRecipient: 'x@y\r\nBcc: evil@x' },
      { failedRecipient: 'x@y\nBcc' },
      { failedRecipient: 'x@y\0' },
      { failedRecipient: 'x@y>, <evil@x' },
      { failedRecipient: 'not an address' },
      { failedRecipient: 'x@y', originalSource: 'a@b\r\nBcc: evil@x' },
      { failedRecipient: 'x@y', originalSource: 'a@b, evil@x' },
      { failedRecipient: 'x@y', originalSource: 'no address here' },
    ];
    for (const info of attempts)
      assert.throws(() => rewriteBounce(raw, info), isInjection, JSON.stringify(info));
  });
});
