import { afterEach, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { splitMessage } from '../../src/mail/header-block.ts';
import { headerView, messageIds, parseAddresses, parseMail } from '../../src/pipeline/parse.ts';

/** A message written with LF in the source, sent with CRLF as on the wire. */
function crlf(text: string): Buffer {
  return Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'latin1');
}

const RICH = crlf(`Return-Path: <bounce@example.de>
Received: from mx.example.de by inbound-smtp.us-east-1.amazonaws.com;
 Wed, 01 May 2024 12:34:56 +0000
From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <Juergen.Mueller@Example.DE>
To: "Bob B." <BOB@example.com>, carol@example.com
To: dave@example.com
Cc: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>, undisclosed-recipients:;
Reply-To: Replies <Replies@Example.DE>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus
 =?UTF-8?B?S8O2bG4=?=
Message-ID: <abc.123@example.de>
In-Reply-To: <parent@example.com> <other@example.com>
References: <root@example.com>
 <parent@example.com>
X-Custom: one
x-custom: two
X-CUSTOM: three
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hallo Bob, sch=C3=B6ne Gr=C3=BC=C3=9Fe.
--alt
Content-Type: text/html; charset=utf-8

<p>Hallo <b>Bob</b></p>
--alt--
--outer
Content-Type: text/plain; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"
Content-Transfer-Encoding: base64

U0VDUkVUIEFUVEFDSE1FTlQgVEVYVA==
--outer--
`);

describe('parseMail on a complete multipart mail', () => {
  it('decodes an RFC 2047 subject across a folded line', async () => {
    const view = await parseMail(RICH);
    assert.equal(view.subject, 'Grüße aus Köln');
  });

  it('reads From with a decoded display name and a lower-cased address', async () => {
    const view = await parseMail(RICH);
    assert.deepEqual(view.from, { address: 'juergen.mueller@example.de', name: 'Jürgen Müller' });
  });

  it('reads every To field and Cc in order, skipping an empty group (their names are never shown: not decoded)', async () => {
    const view = await parseMail(RICH);
    assert.deepEqual(view.to, [
      { address: 'bob@example.com', name: '' },
      { address: 'carol@example.com', name: '' },
      { address: 'dave@example.com', name: '' },
    ]);
    assert.deepEqual(view.cc, [{ address: 'andre@example.org', name: '' }]);
  });

  it('reads the first mailbox of Sender, and leaves Reply-To to the forward (no reply goes there)', async () => {
    const view = await parseMail(
      crlf(
        'From: "A Author" <author@example.org>\nSender: "A Secretary" <Secretary@Example.ORG>, x@y.test\n\nb\n',
      ),
    );
    assert.deepEqual(view.sender, { address: 'secretary@example.org', name: 'A Secretary' });
    assert.equal('replyTo' in (await parseMail(RICH)), false);
  });

  it('reads Message-ID, the first In-Reply-To id and all References', async () => {
    const view = await parseMail(RICH);
    assert.equal(view.messageId, '<abc.123@example.de>');
    assert.equal(view.inReplyTo, '<parent@example.com>');
    assert.deepEqual(view.references, ['<root@example.com>', '<parent@example.com>']);
  });

  it('takes text and html from the multipart/alternative part', async () => {
    const view = await parseMail(RICH);
    assert.equal(view.text, 'Hallo Bob, schöne Grüße.');
    assert.equal(view.html, '<p>Hallo <b>Bob</b></p>');
    assert.equal(view.contentType, 'multipart/mixed');
    assert.equal(view.parseError, undefined);
  });

  it('does not put attachment content into the view', async () => {
    const view = await parseMail(RICH);
    assert.deepEqual(Object.keys(view).sort(), [
      'cc',
      'contentType',
      'from',
      'headerBytes',
      'headers',
      'html',
      'inReplyTo',
      'messageId',
      'references',
      'subject',
      'text',
      'to',
    ]);
    assert.doesNotMatch(JSON.stringify({ ...view, headers: [...view.headers] }), /SECRET ATTACHMENT TEXT/);
  });

  it('keys the header map by lower-cased name with every value in message order', async () => {
    const view = await parseMail(RICH);
    assert.deepEqual(view.headers.get('x-custom'), ['one', 'two', 'three']);
    assert.deepEqual(view.headers.get('to'), [
      '"Bob B." <BOB@example.com>, carol@example.com',
      'dave@example.com',
    ]);
    assert.deepEqual(view.headers.get('received'), [
      'from mx.example.de by inbound-smtp.us-east-1.amazonaws.com; Wed, 01 May 2024 12:34:56 +0000',
    ]);
    assert.deepEqual(
      [...view.headers.keys()],
      [
        'return-path',
        'received',
        'from',
        'to',
        'cc',
        'reply-to',
        'subject',
        'message-id',
        'in-reply-to',
        'references',
        'x-custom',
        'mime-version',
        'content-type',
      ],
    );
    assert.equal(view.headers.get('X-Custom'), undefined);
  });

  it('leaves RFC 2047 words in the header map undecoded', async () => {
    const view = await parseMail(RICH);
    assert.deepEqual(view.headers.get('subject'), ['=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?UTF-8?B?S8O2bG4=?=']);
  });

  it('drains a large attachment without failing and without keeping it', async () => {
    const payload = Buffer.alloc(3 * 1024 * 1024, 0x41)
      .toString('base64')
      .replace(/.{76}/g, '$&\n');
    const raw = crlf(`From: a@example.com
Subject: big attachment
Content-Type: multipart/mixed; boundary="x"

--x
Content-Type: text/plain

see attached
--x
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="big.bin"
Content-Transfer-Encoding: base64

${payload}
--x--
`);
    const view = await parseMail(raw);
    assert.equal(view.parseError, undefined);
    assert.equal(view.text, 'see attached');
    assert.equal(view.html, undefined);
    assert.ok(JSON.stringify({ ...view, headers: [...view.headers] }).length < 1000);
  });
});

describe('parseMail on simple and odd mails', () => {
  it('reads a single-part text mail with LF line endings', async () => {
    const raw = Buffer.from('From: a@example.com\nSubject: plain\n\nline one\nline two\n', 'latin1');
    const view = await parseMail(raw);
    assert.equal(view.subject, 'plain');
    assert.equal(view.text, 'line one\nline two\n');
    assert.equal(view.html, undefined);
    assert.equal(view.contentType, 'text/plain');
  });

  it('reads a single-part html mail', async () => {
    const raw = crlf('From: a@example.com\nContent-Type: Text/HTML; charset=utf-8\n\n<p>hi</p>\n');
    const view = await parseMail(raw);
    assert.equal(view.contentType, 'text/html');
    assert.equal(view.html, '<p>hi</p>\n');
    assert.ok(!view.text, 'no text is derived from the html');
  });

  it('gives a mail with no body a view without text or html', async () => {
    const view = await parseMail(crlf('From: A <a@example.com>\nSubject: headers only\n'));
    assert.deepEqual(view, {
      headers: new Map([
        ['from', ['A <a@example.com>']],
        ['subject', ['headers only']],
      ]),
      subject: 'headers only',
      from: { address: 'a@example.com', name: 'A' },
      to: [],
      cc: [],
      references: [],
      contentType: 'text/plain',
      headerBytes: 48,
    });
  });

  it('gives a mail with an empty body after the blank line a view without text or html', async () => {
    const view = await parseMail(crlf('From: a@example.com\nSubject: empty\n\n'));
    assert.equal(view.text, undefined);
    assert.equal(view.html, undefined);
    assert.equal(view.parseError, undefined);
  });

  it('gives empty input an empty view', async () => {
    assert.deepEqual(await parseMail(Buffer.alloc(0)), {
      headers: new Map(),
      subject: '',
      to: [],
      cc: [],
      references: [],
      contentType: 'text/plain',
      headerBytes: 0,
    });
  });

  it('leaves out from, messageId and inReplyTo when the mail has none', async () => {
    const view = await parseMail(crlf('Subject: x\nIn-Reply-To: no brackets here\n\nbody\n'));
    assert.equal('from' in view, false);
    assert.equal('messageId' in view, false);
    assert.equal('inReplyTo' in view, false);
    assert.deepEqual(view.references, []);
  });

  it('still gives the header view for a multipart mail whose boundary never appears', async () => {
    const raw = crlf(`From: Sender <sender@example.com>
To: bob@example.com
Subject: broken
Message-ID: <broken@example.com>
Content-Type: multipart/mixed; boundary="never-used"

this is not MIME at all
--other
Content-Type: text/plain

x
`);
    const view = await parseMail(raw);
    assert.equal(view.subject, 'broken');
    assert.deepEqual(view.from, { address: 'sender@example.com', name: 'Sender' });
    assert.deepEqual(view.to, [{ address: 'bob@example.com', name: '' }]);
    assert.equal(view.messageId, '<broken@example.com>');
    assert.equal(view.contentType, 'multipart/mixed');
    if (view.parseError !== undefined) assert.equal(typeof view.parseError, 'string');
  });

  it('still gives the header view for a multipart mail without a boundary parameter', async () => {
    const raw = crlf(`From: sender@example.com
Subject: no boundary
Content-Type: multipart/alternative

--b
Content-Type: text/plain

hello
--b--
`);
    const view = await parseMail(raw);
    assert.equal(view.subject, 'no boundary');
    assert.equal(view.contentType, 'multipart/alternative');
    assert.deepEqual(view.headers.get('content-type'), ['multipart/alternative']);
  });

  it('still gives the header view for an unterminated part with broken base64', async () => {
    const raw = crlf(`From: sender@example.com
Subject: truncated
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain
Content-Transfer-Encoding: base64

!!!not base64@@@
--b
Content-Type: text/html

<p>cut off`);
    const view = await parseMail(raw);
    assert.equal(view.subject, 'truncated');
    assert.deepEqual(view.from, { address: 'sender@example.com', name: '' });
    assert.deepEqual([...view.headers.keys()], ['from', 'subject', 'content-type']);
  });

  it('cuts text and html bodies to maxBodyChars', async () => {
    const view = await parseMail(RICH, { maxBodyChars: 5 });
    assert.equal(view.text, 'Hallo');
    assert.equal(view.html, '<p>Ha');
  });

  it('decodes raw UTF-8 in the subject and display names (RFC 6532)', async () => {
    const raw = Buffer.from('From: Jürgen <j@example.de>\r\nSubject: Grüße\r\n\r\nbody\r\n', 'utf8');
    const view = await parseMail(raw);
    assert.equal(view.subject, 'Grüße');
    assert.deepEqual(view.from, { address: 'j@example.de', name: 'Jürgen' });
  });
});

describe('parseMail timeout', () => {
  afterEach(() => {
    mock.timers.reset();
  });

  const BIG = crlf(
    `From: Big <big@example.com>\nSubject: big mail\nMessage-ID: <big@example.com>\nContent-Type: text/plain\n\n${'a line of text to parse\n'.repeat(100_000)}`,
  );

  it('gives up after timeoutMs and keeps the header view', async () => {
    // The parser needs many event-loop turns for this mail; the (mocked) timer fires before it gets the first.
    mock.timers.enable({ apis: ['setTimeout'] });
    const parsing = parseMail(BIG, { timeoutMs: 5 });
    mock.timers.tick(5);
    const view = await parsing;
    assert.equal(view.parseError, 'MIME parse exceeded 5 ms');
    assert.equal(view.text, undefined);
    assert.equal(view.subject, 'big mail');
    assert.equal(view.messageId, '<big@example.com>');
    assert.deepEqual(view.from, { address: 'big@example.com', name: 'Big' });
  });

  it('does not time out before timeoutMs has passed, and cuts the text at the 1,000,000 character default', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const parsing = parseMail(BIG, { timeoutMs: 5 });
    mock.timers.tick(4);
    const view = await parsing;
    assert.equal(view.parseError, undefined);
    assert.equal(view.text?.length, 1_000_000);
    assert.equal(view.text?.slice(0, 24), 'a line of text to parse\n');
  });

  it('completes a big mail within a generous real timeout', async () => {
    const view = await parseMail(BIG, { timeoutMs: 60_000 });
    assert.equal(view.parseError, undefined);
    assert.equal(view.text?.slice(0, 24), 'a line of text to parse\n');
  });
});

describe('headerView', () => {
  it('builds the view from a split message without touching the body', () => {
    const view = headerView(
      splitMessage(
        crlf(
          'From: "Doe, Jane" <Jane@Example.com>\nSubject:   spaced   \nContent-Type: TEXT/Plain;\n charset=us-ascii\n\n--not a header--\n',
        ),
      ),
    );
    assert.deepEqual(view.from, { address: 'jane@example.com', name: 'Doe, Jane' });
    assert.equal(view.subject, 'spaced');
    assert.equal(view.contentType, 'text/plain');
    assert.equal(view.text, undefined);
  });

  it('uses the first From, Subject and Message-ID when a header repeats', () => {
    const view = headerView(
      splitMessage(
        crlf(
          'From: first@example.com\nFrom: second@example.com\nSubject: one\nSubject: two\nMessage-ID: <1@x>\nMessage-ID: <2@x>\n\n',
        ),
      ),
    );
    assert.deepEqual(view.from, { address: 'first@example.com', name: '' });
    assert.equal(view.subject, 'one');
    assert.equal(view.messageId, '<1@x>');
    assert.deepEqual(view.headers.get('from'), ['first@example.com', 'second@example.com']);
  });

  it('defaults the content type to text/plain when it is missing or empty', () => {
    assert.equal(headerView(splitMessage(crlf('Subject: a\n\n'))).contentType, 'text/plain');
    assert.equal(
      headerView(splitMessage(crlf('Content-Type: ; charset=utf-8\n\n'))).contentType,
      'text/plain',
    );
  });

  it('decodes an encoded word in an unknown charset without failing', () => {
    const view = headerView(splitMessage(crlf('Subject: =?x-unknown?Q?abc?= tail\n\n')));
    assert.equal(view.subject, 'abc tail');
  });
});

describe('parseAddresses', () => {
  it('returns an empty list for undefined and empty input', () => {
    assert.deepEqual(parseAddresses(undefined), []);
    assert.deepEqual(parseAddresses(''), []);
  });

  it('lower-cases addresses and decodes display names', () => {
    assert.deepEqual(
      parseAddresses('=?UTF-8?Q?Ren=C3=A9e?= <Renee@Example.FR>, "Smith, J." <J.Smith@X.test>'),
      [
        { address: 'renee@example.fr', name: 'Renée' },
        { address: 'j.smith@x.test', name: 'Smith, J.' },
      ],
    );
  });

  it('flattens groups and drops entries that are not addresses', () => {
    assert.deepEqual(
      parseAddresses(
        'Team: a@example.com, B <b@example.com>;, undisclosed-recipients:;, not-an-address, c@example.com',
      ),
      [
        { address: 'a@example.com', name: '' },
        { address: 'b@example.com', name: 'B' },
        { address: 'c@example.com', name: '' },
      ],
    );
  });

  it('drops an address with a second @ or without a domain', () => {
    assert.deepEqual(parseAddresses('<a@b@example.com>'), []);
    assert.deepEqual(parseAddresses('<postmaster>, x@example.com'), [{ address: 'x@example.com', name: '' }]);
  });
});

describe('messageIds', () => {
  it('lists every bracketed id in order, brackets included', () => {
    assert.deepEqual(messageIds('<a@x> junk <b@y>\t<c.d-e@z>'), ['<a@x>', '<b@y>', '<c.d-e@z>']);
  });

  it('ignores text without brackets and bracketed text with whitespace', () => {
    assert.deepEqual(messageIds('a@x, <not an id>, <>'), []);
  });

  it('keeps only the last 100 ids', () => {
    const ids = Array.from({ length: 150 }, (_, i) => `<id${i}@example.com>`);
    const out = messageIds(ids.join(' '));
    assert.equal(out.length, 100);
    assert.equal(out[0], '<id50@example.com>');
    assert.equal(out[99], '<id149@example.com>');
  });

  it('returns an empty list for an empty value', () => {
    assert.deepEqual(messageIds(''), []);
  });
});
