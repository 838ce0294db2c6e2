import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { simpleParser, type AddressObject, type ParsedMail } from 'mailparser';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import type { MailView } from '../../src/mail/mail-view.ts';
import {
  composeAutoReply,
  htmlToText,
  MAX_REFERENCES,
  type AutoReplyComposeInput,
} from '../../src/mail/autoreply-compose.ts';
import { WorkerError } from '../../src/errors.ts';

const NOW = new Date('2024-03-05T08:09:10Z');
const MARKER = { name: 'X-SES-Worker-Processed', value: 'v1;ts=1709626150;sig=3f9a0c' };

function original(overrides: Partial<MailView> = {}): MailView {
  return {
    headers: new Map([['date', ['Mon, 4 Mar 2024 17:00:00 +0100']]]),
    messageId: '<orig-1@mail.example.org>',
    subject: 'Project update',
    from: { address: 'bob@example.org', name: 'Bob Builder' },
    to: [{ address: 'alice@example.com', name: 'Alice' }],
    cc: [],
    references: ['<root@mail.example.org>'],
    text: 'Hi Alice,\nhow is it going?\n\nBob',
    contentType: 'text/plain',
    ...overrides,
  };
}

function input(overrides: Partial<AutoReplyComposeInput> = {}): AutoReplyComposeInput {
  return {
    recipient: 'alice@example.com',
    recipientName: 'Alice Smith',
    to: { address: 'bob@example.org', name: 'Bob Builder' },
    original: original(),
    message: 'I am out of the office until Monday.',
    contentType: 'text',
    subjectPrefix: 'Auto: ',
    loopMarker: MARKER,
    messageIdDomain: 'mx.example.com',
    now: NOW,
    ...overrides,
  };
}

/** The raw header block (before the first empty line), as bytes decoded 1:1. */
function headerBlock(raw: Buffer): string {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, 'message has a header/body separator');
  return text.slice(0, end);
}

/** Unfolded top-level header fields as [lower-cased name, value] in order. */
function headerFields(raw: Buffer): [string, string][] {
  return headerBlock(raw)
    .replace(/\r\n[ \t]/g, ' ')
    .split('\r\n')
    .map((line) => {
      const colon = line.indexOf(':');
      assert.ok(colon > 0, `header line has a name: ${JSON.stringify(line)}`);
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
    });
}

function fieldValues(raw: Buffer, name: string): string[] {
  return headerFields(raw)
    .filter(([n]) => n === name)
    .map(([, v]) => v);
}

function addresses(value: AddressObject | AddressObject[] | undefined): { address: string; name: string }[] {
  const list = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return list.flatMap((o) => o.value.map((a) => ({ address: a.address ?? '', name: a.name })));
}

function assertWireFormat(raw: Buffer): void {
  const text = raw.toString('latin1');
  assert.ok(text.endsWith('\r\n'), 'message ends with CRLF');
  assert.equal(/\r(?!\n)/.test(text), false, 'no bare CR');
  assert.equal(/(?<!\r)\n/.test(text), false, 'no bare LF');
  for (const line of text.split('\r\n')) {
    assert.ok(
      Buffer.byteLength(line, 'latin1') <= 998,
      `line of ${line.length} octets: ${line.slice(0, 60)}…`,
    );
  }
}

/** No header other than the ones we set may appear, and only one To/From/Subject. */
function assertNoInjectedHeaders(raw: Buffer): void {
  const names = headerFields(raw).map(([n]) => n);
  const allowed = new Set([
    'from',
    'to',
    'subject',
    'message-id',
    'date',
    'mime-version',
    'content-type',
    'content-transfer-encoding',
    'in-reply-to',
    'references',
    'auto-submitted',
    'precedence',
    'x-auto-response-suppress',
    MARKER.name.toLowerCase(),
  ]);
  assert.deepEqual(
    names.filter((n) => !allowed.has(n)),
    [],
  );
  assert.equal(/^bcc:/im.test(headerBlock(raw)), false);
  for (const single of ['from', 'to', 'subject', 'message-id', 'date']) {
    assert.equal(names.filter((n) => n === single).length, 1, `exactly one ${single}`);
  }
}

async function compose(overrides: Partial<AutoReplyComposeInput> = {}): Promise<{
  raw: Buffer;
  messageId: string;
  parsed: ParsedMail;
}> {
  const { raw, messageId } = await composeAutoReply(input(overrides));
  assertWireFormat(raw);
  assertNoInjectedHeaders(raw);
  return { raw, messageId, parsed: await simpleParser(raw) };
}

describe('composeAutoReply headers', () => {
  it('sets From, one To, Subject, threading, auto-reply and loop headers, Message-ID and Date', async () => {
    const { raw, messageId, parsed } = await compose();

    assert.deepEqual(addresses(parsed.from), [{ address: 'alice@example.com', name: 'Alice Smith' }]);
    assert.deepEqual(addresses(parsed.to), [{ address: 'bob@example.org', name: 'Bob Builder' }]);
    assert.equal(parsed.cc, undefined);
    assert.equal(parsed.bcc, undefined);
    assert.equal(parsed.replyTo, undefined);
    assert.equal(parsed.subject, 'Auto: Project update');
    assert.equal(parsed.inReplyTo, '<orig-1@mail.example.org>');
    assert.deepEqual(parsed.references, ['<root@mail.example.org>', '<orig-1@mail.example.org>']);
    assert.deepEqual(fieldValues(raw, 'auto-submitted'), ['auto-replied']);
    assert.deepEqual(fieldValues(raw, 'precedence'), ['bulk']);
    assert.deepEqual(fieldValues(raw, 'x-auto-response-suppress'), ['All']);
    assert.deepEqual(fieldValues(raw, MARKER.name.toLowerCase()), [MARKER.value]);
    assert.match(messageId, /^<[0-9a-f]{32}@mx\.example\.com>$/);
    assert.equal(parsed.messageId, messageId);
    assert.deepEqual(fieldValues(raw, 'message-id'), [messageId]);
    assert.deepEqual(fieldValues(raw, 'date'), ['Tue, 05 Mar 2024 08:09:10 +0000']);
    assert.equal(parsed.date?.toISOString(), NOW.toISOString());
    assert.deepEqual(fieldValues(raw, 'mime-version'), ['1.0']);
  });

  it('omits the display name in From when no recipientName is given', async () => {
    const { raw } = await compose({ recipientName: undefined });
    assert.deepEqual(fieldValues(raw, 'from'), ['alice@example.com']);
  });

  it('gives every reply a new Message-ID', async () => {
    const a = await composeAutoReply(input());
    const b = await composeAutoReply(input());
    assert.notEqual(a.messageId, b.messageId);
  });

  describe('Subject', () => {
    const cases: [string, string, string][] = [
      ['Auto: ', 'Hello', 'Auto: Hello'],
      ['Auto: ', 'Auto: Hello', 'Auto: Hello'],
      ['Auto: ', 'AUTO: Hello', 'AUTO: Hello'],
      ['Auto: ', 'Re: Auto: Hello', 'Auto: Re: Auto: Hello'],
      ['Auto: ', '', 'Auto: (no subject)'],
      ['Auto: ', '   ', 'Auto: (no subject)'],
      ['', 'Hello', 'Hello'],
      ['[Away] ', 'Hello', '[Away] Hello'],
    ];
    for (const [prefix, subject, expected] of cases) {
      it(`turns ${JSON.stringify(subject)} with prefix ${JSON.stringify(prefix)} into ${JSON.stringify(expected)}`, async () => {
        const { parsed } = await compose({ subjectPrefix: prefix, original: original({ subject }) });
        assert.equal(parsed.subject, expected);
      });
    }

    it('caps a very long original subject so no header line exceeds 998 octets', async () => {
      const { parsed } = await compose({ original: original({ subject: 'A'.repeat(5000) }) });
      assert.equal(parsed.subject, `Auto: ${'A'.repeat(249)}…`);
    });
  });

  describe('References and In-Reply-To', () => {
    it('keeps only the last 20 ids, the parent last', async () => {
      const refs = Array.from({ length: 30 }, (_, i) => `<r${i}@example.org>`);
      const { parsed } = await compose({ original: original({ references: refs }) });
      const expected = [...refs.slice(-(MAX_REFERENCES - 1)), '<orig-1@mail.example.org>'];
      assert.equal(MAX_REFERENCES, 20);
      assert.deepEqual(parsed.references, expected);
    });

    it('drops malformed ids from References', async () => {
      const refs = [
        '<ok@example.org>',
        'no-brackets@example.org',
        '<has space@example.org>',
        '<a@b>\r\nBcc: x',
        '<>',
      ];
      const { parsed } = await compose({ original: original({ references: refs }) });
      assert.deepEqual(parsed.references, ['<ok@example.org>', '<orig-1@mail.example.org>']);
    });

    it('does not repeat the parent id when References already ends with it', async () => {
      const refs = ['<root@mail.example.org>', '<orig-1@mail.example.org>'];
      const { parsed } = await compose({ original: original({ references: refs }) });
      assert.deepEqual(parsed.references, refs);
    });

    it('falls back to the original In-Reply-To when it has no References', async () => {
      const { parsed } = await compose({
        original: original({ references: [], inReplyTo: '<parent@example.org>' }),
      });
      assert.deepEqual(parsed.references, ['<parent@example.org>', '<orig-1@mail.example.org>']);
    });

    it('omits In-Reply-To and References when the original has neither a Message-ID nor References', async () => {
      const { raw } = await compose({ original: original({ messageId: undefined, references: [] }) });
      assert.deepEqual(fieldValues(raw, 'in-reply-to'), []);
      assert.deepEqual(fieldValues(raw, 'references'), []);
    });

    it('drops a Message-ID longer than 250 octets', async () => {
      const { raw } = await compose({
        original: original({ messageId: `<${'x'.repeat(300)}@example.org>`, references: [] }),
      });
      assert.deepEqual(fieldValues(raw, 'in-reply-to'), []);
    });
  });
});

describe('composeAutoReply header injection', () => {
  it('neutralises CRLF in the original subject', async () => {
    const { raw, parsed } = await compose({ original: original({ subject: 'Hi\r\nBcc: victim@x' }) });
    assert.equal(parsed.subject, 'Auto: Hi Bcc: victim@x');
    assert.equal(parsed.bcc, undefined);
    assert.equal(fieldValues(raw, 'to').length, 1);
  });

  it('neutralises NUL, bare CR and bare LF in the original subject', async () => {
    const { parsed } = await compose({ original: original({ subject: 'a\0b\rc\nd\te' }) });
    assert.equal(parsed.subject, 'Auto: a b c d e');
  });

  it('neutralises CRLF in the original From display name used for To', async () => {
    const evil = { address: 'bob@example.org', name: 'Bob\r\nBcc: victim@x' };
    const { raw, parsed } = await compose({ to: evil, original: original({ from: evil }) });
    assert.deepEqual(addresses(parsed.to), [{ address: 'bob@example.org', name: 'Bob Bcc: victim@x' }]);
    assert.equal(fieldValues(raw, 'to').length, 1);
    assert.ok(parsed.text?.includes('Bob Bcc: victim@x <bob@example.org> wrote:'));
  });

  it('neutralises CRLF in recipientName', async () => {
    const { parsed } = await compose({ recipientName: 'Alice\r\nBcc: victim@x\r\nX-Evil: 1' });
    assert.deepEqual(addresses(parsed.from), [
      { address: 'alice@example.com', name: 'Alice Bcc: victim@x X-Evil: 1' },
    ]);
  });

  it('drops an original Message-ID that carries CRLF instead of copying it into In-Reply-To', async () => {
    const { raw } = await compose({ original: original({ messageId: '<a@b>\r\nBcc: x', references: [] }) });
    assert.deepEqual(fieldValues(raw, 'in-reply-to'), []);
    assert.deepEqual(fieldValues(raw, 'references'), []);
  });

  it('drops an original In-Reply-To that carries CRLF', async () => {
    const { parsed } = await compose({
      original: original({ references: [], inReplyTo: '<p@x>\r\nBcc: y' }),
    });
    assert.deepEqual(parsed.references, '<orig-1@mail.example.org>');
  });

  it('keeps header-looking lines of the rule message in the body', async () => {
    const message = 'Away\r\n\r\nBcc: victim@x\nX-Evil: 1\r\n.\r\n';
    const { raw, parsed } = await compose({ message });
    assert.ok(parsed.text?.startsWith('Away\n\nBcc: victim@x\nX-Evil: 1\n.\n'));
    assert.equal(fieldValues(raw, 'x-evil').length, 0);
  });

  it('keeps header-looking lines of an HTML rule message in the body', async () => {
    const { raw } = await compose({ contentType: 'html', message: '\r\nBcc: victim@x\r\n\r\n<p>Away</p>' });
    assert.equal(fieldValues(raw, 'bcc').length, 0);
  });

  it('neutralises CRLF in the subject prefix', async () => {
    const { parsed } = await compose({ subjectPrefix: 'Auto:\r\nBcc: x ' });
    assert.equal(parsed.subject, 'Auto: Bcc: x Project update');
  });

  const rejected: [string, Partial<AutoReplyComposeInput>][] = [
    ['a reply target address with CRLF', { to: { address: 'bob@example.org\r\nBcc: victim@x', name: '' } }],
    [
      'a reply target holding two addresses',
      { to: { address: 'bob@example.org, eve@example.net', name: '' } },
    ],
    ['an empty reply target address', { to: { address: '', name: 'Bob' } }],
    ['a recipient address with CRLF', { recipient: 'alice@example.com\r\nBcc: victim@x' }],
    ['a loop marker name with CRLF', { loopMarker: { name: 'X-Loop\r\nBcc', value: 'x' } }],
    ['a loop marker name with a colon', { loopMarker: { name: 'X-Loop: a', value: 'x' } }],
    ['a loop marker named like a header we set', { loopMarker: { name: 'To', value: 'eve@example.net' } }],
    ['a loop marker value with CRLF', { loopMarker: { name: 'X-Loop', value: 'x\r\nBcc: victim@x' } }],
    ['an empty loop marker value', { loopMarker: { name: 'X-Loop', value: '' } }],
    ['a Message-ID domain with CRLF', { messageIdDomain: 'mx.example.com>\r\nBcc: victim@x' }],
  ];
  for (const [what, overrides] of rejected) {
    it(`rejects ${what} with HEADER_INJECTION`, async () => {
      await assert.rejects(
        composeAutoReply(input(overrides)),
        (err: unknown) => err instanceof WorkerError && err.code === 'HEADER_INJECTION' && !err.temporary,
      );
    });
  }

  it('rejects an invalid Date', async () => {
    await assert.rejects(composeAutoReply(input({ now: new Date('nope') })), RangeError);
  });
});

describe('composeAutoReply wire format', () => {
  it('ends every line with CRLF and keeps lines within 998 octets for hostile, oversized input', async () => {
    const longWord = 'W'.repeat(3000);
    const { raw } = await compose({
      recipientName: 'N'.repeat(3000),
      to: { address: 'bob@example.org', name: `"${'Q'.repeat(3000)}` },
      subjectPrefix: 'P'.repeat(500),
      message: `first\rsecond\nthird\r\n${longWord}\n`,
      original: original({
        subject: longWord,
        messageId: `<${'i'.repeat(240)}@x>`,
        references: Array.from({ length: 50 }, (_, i) => `<${'r'.repeat(230)}${i}@x>`),
        text: `${longWord}\r${longWord}\n\n`,
        headers: new Map([['date', [longWord]]]),
        from: { address: 'bob@example.org', name: longWord },
      }),
    });
    // assertWireFormat ran inside compose(); make sure the body really was long enough to need wrapping.
    assert.ok(raw.length > 6000);
  });

  it('writes the text body with CRLF even when the rule message and the original use bare LF or CR', async () => {
    const { raw, parsed } = await compose({
      message: 'one\ntwo\rthree',
      original: original({ text: 'a\nb\rc' }),
    });
    assert.equal(
      parsed.text,
      'one\ntwo\nthree\n\nOn Mon, 4 Mar 2024 17:00:00 +0100, Bob Builder <bob@example.org> wrote:\n> a\n> b\n> c\n',
    );
    assert.ok(raw.toString('latin1').includes('one\r\ntwo\r\nthree\r\n'));
  });
});

describe('composeAutoReply bodies', () => {
  it('writes a text reply as a single text/plain part with the quoted original', async () => {
    const { raw, parsed } = await compose();
    assert.match(fieldValues(raw, 'content-type')[0] ?? '', /^text\/plain; charset=utf-8$/);
    assert.equal(parsed.html, false);
    assert.equal(
      parsed.text,
      'I am out of the office until Monday.\n\n' +
        'On Mon, 4 Mar 2024 17:00:00 +0100, Bob Builder <bob@example.org> wrote:\n' +
        '> Hi Alice,\n> how is it going?\n>\n> Bob\n',
    );
  });

  it('attributes the quote without a date when the original has no Date header', async () => {
    const { parsed } = await compose({ original: original({ headers: new Map() }) });
    assert.ok(parsed.text?.includes('\n\nBob Builder <bob@example.org> wrote:\n> Hi Alice,'));
  });

  it('truncates the quoted original to quoteMaxChars and marks the cut', async () => {
    const { parsed } = await compose({ quoteMaxChars: 5, original: original({ text: 'abcdefghij' }) });
    assert.ok(parsed.text?.endsWith('wrote:\n> abcde\n> […]\n'));
  });

  it('counts quoteMaxChars in code points, never splitting a surrogate pair', async () => {
    const { parsed } = await compose({ quoteMaxChars: 2, original: original({ text: '🎉🎉🎉' }) });
    assert.ok(parsed.text?.endsWith('wrote:\n> 🎉🎉\n> […]\n'));
  });

  it('leaves the quote out when quoteMaxChars is 0', async () => {
    const { parsed } = await compose({ quoteMaxChars: 0 });
    assert.equal(parsed.text, 'I am out of the office until Monday.\n');
  });

  it('leaves the quote out when the original has no body', async () => {
    const { parsed } = await compose({ original: original({ text: undefined, html: undefined }) });
    assert.equal(parsed.text, 'I am out of the office until Monday.\n');
  });

  it('quotes a text rendering of an HTML-only original without its scripts or styles', async () => {
    const html =
      '<html><head><style>p{color:red}</style></head><body><p>Hello&nbsp;<b>Alice</b></p>' +
      '<script>alert(1)</script><p>Line&#33; &lt;tag&gt;</p></body></html>';
    const { parsed } = await compose({ original: original({ text: undefined, html }) });
    assert.ok(parsed.text?.endsWith('wrote:\n> Hello Alice\n>\n> Line! <tag>\n'), parsed.text);
  });

  it('round-trips UTF-8 in subject, names and body', async () => {
    const { raw, parsed } = await compose({
      recipientName: 'Zoë Ærø',
      to: { address: 'jurgen@example.org', name: 'Jürgen Größ' },
      message: 'Ich bin weg — zurück am Montag 🌴',
      original: original({
        subject: 'Grüße 你好 🎉',
        from: { address: 'jurgen@example.org', name: 'Jürgen Größ' },
        text: 'Schöne Grüße\n你好',
      }),
    });
    assert.equal(parsed.subject, 'Auto: Grüße 你好 🎉');
    assert.deepEqual(addresses(parsed.from), [{ address: 'alice@example.com', name: 'Zoë Ærø' }]);
    assert.deepEqual(addresses(parsed.to), [{ address: 'jurgen@example.org', name: 'Jürgen Größ' }]);
    assert.equal(
      parsed.text,
      'Ich bin weg — zurück am Montag 🌴\n\n' +
        'On Mon, 4 Mar 2024 17:00:00 +0100, Jürgen Größ <jurgen@example.org> wrote:\n' +
        '> Schöne Grüße\n> 你好\n',
    );
    assert.equal(/[\x80-\xff]/.test(headerBlock(raw)), false, 'headers are 7-bit (RFC 2047 encoded)');
    assert.match(fieldValues(raw, 'content-transfer-encoding')[0] ?? '', /^(quoted-printable|base64)$/);
  });

  describe('HTML replies', () => {
    const hostile = original({
      text: 'Look: <script>alert("x")</script> & <img src="https://track.example/p.gif">',
      html: '<p>Look: <script>alert("x")</script><img src="https://track.example/p.gif"></p>',
    });

    it('sends multipart/alternative with the rule HTML and a derived text part', async () => {
      const { raw, parsed } = await compose({
        contentType: 'html',
        message: '<p>I am <b>away</b> until Monday.</p>',
        original: original(),
      });
      assert.match(fieldValues(raw, 'content-type')[0] ?? '', /^multipart\/alternative;/);
      assert.equal(
        parsed.text,
        'I am away until Monday.\n\n' +
          'On Mon, 4 Mar 2024 17:00:00 +0100, Bob Builder <bob@example.org> wrote:\n' +
          '> Hi Alice,\n> how is it going?\n>\n> Bob\n',
      );
      const html = String(parsed.html);
      assert.ok(html.startsWith('<p>I am <b>away</b> until Monday.</p>'));
      assert.ok(
        html.includes('<p>On Mon, 4 Mar 2024 17:00:00 +0100, Bob Builder &lt;bob@example.org&gt; wrote:</p>'),
      );
      // mailparser hands decoded text parts back with LF line ends.
      assert.ok(html.includes('Hi Alice,<br>\nhow is it going?<br>\n<br>\nBob</blockquote>'));
    });

    it('escapes the quoted original and never copies its raw HTML', async () => {
      const { parsed } = await compose({ contentType: 'html', message: '<p>Away</p>', original: hostile });
      const html = String(parsed.html);
      assert.ok(
        html.includes(
          'Look: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; ' +
            '&lt;img src=&quot;https://track.example/p.gif&quot;&gt;</blockquote>',
        ),
      );
      assert.equal(html.includes('<script'), false);
      assert.equal(html.includes('<img'), false);
    });

    it('escapes the text rendering of an HTML-only original and drops its script content', async () => {
      const { parsed } = await compose({
        contentType: 'html',
        message: '<p>Away</p>',
        original: original({ text: undefined, html: hostile.html }),
      });
      const html = String(parsed.html);
      assert.equal(html.includes('<script'), false);
      assert.equal(html.includes('alert'), false);
      assert.equal(html.includes('<img'), false);
    });

    it('escapes the attribution line built from the original sender', async () => {
      const { parsed } = await compose({
        contentType: 'html',
        message: '<p>Away</p>',
        original: original({ from: { address: 'bob@example.org', name: '<script>x</script>' } }),
      });
      assert.ok(
        String(parsed.html).includes('<p>On Mon, 4 Mar 2024 17:00:00 +0100, &lt;script&gt;x&lt;/script&gt;'),
      );
    });

    it('puts the quote inside the body of a full HTML document', async () => {
      const { parsed } = await compose({
        contentType: 'html',
        message: '<html><body><p>Away</p></body></html>',
      });
      assert.match(String(parsed.html), /<p>Away<\/p><p>On .*<\/blockquote>\n<\/body><\/html>/s);
    });
  });
});

describe('htmlToText', () => {
  it('handles comments, unterminated tags and numeric entities without throwing', () => {
    assert.equal(htmlToText('a<!-- <p>x</p> -->b&#x263A;&#0;<p>c</p><br/>d<span'), 'ab☺\uFFFD\nc\n\nd');
  });

  it('drops everything after an unclosed script element', () => {
    assert.equal(htmlToText('<p>keep</p><script>var x = "<p>"'), 'keep');
  });
});

/**
 * Pins the MailComposer behaviour this module relies on or guards against, so a nodemailer upgrade that
 * changes it fails here rather than in production.
 */
describe('MailComposer behaviour (nodemailer)', () => {
  it('turns CRLF in a subject into spaces rather than starting a new header', async () => {
    const raw = await new MailComposer({ to: 'a@example.com', subject: 'Hi\r\nBcc: victim@x', text: 'x' })
      .compile()
      .build();
    assert.equal(/^bcc:/im.test(headerBlock(raw)), false);
    assert.deepEqual(fieldValues(raw, 'subject'), ['Hi Bcc: victim@x']);
  });

  it('encodes CRLF in an address display name instead of emitting it', async () => {
    const raw = await new MailComposer({
      to: { name: 'Bob\r\nBcc: victim@x', address: 'bob@example.org' },
      text: 'x',
    })
      .compile()
      .build();
    assert.equal(/^bcc:/im.test(headerBlock(raw)), false);
    assert.equal(fieldValues(raw, 'to').length, 1);
  });

  it('does not fold an unbroken header token, which is why values are length-capped', async () => {
    const raw = await new MailComposer({ to: 'a@example.com', subject: 'A'.repeat(1200), text: 'x' })
      .compile()
      .build();
    const longest = Math.max(
      ...raw
        .toString('latin1')
        .split('\r\n')
        .map((l) => l.length),
    );
    assert.ok(longest > 998);
  });

  it('passes a bare LF from content through, which is why the output is normalised', async () => {
    const raw = await new MailComposer({ to: 'a@example.com', text: 'a\nb' }).compile().build();
    assert.ok(/(?<!\r)\n/.test(raw.toString('latin1')));
  });
});
