import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import libmime from 'libmime';
import { WorkerError } from '../../src/errors.ts';
import { rewriteForForward, type ForwardOptions } from '../../src/mail/forward.ts';
import { getHeader, getHeaders, splitMessage } from '../../src/mail/header-block.ts';

const OPTS: ForwardOptions = {
  forwardingAddress: 'bob@ours.example',
  originalRecipient: 'bob@ours.example',
  domain: 'ours.example',
  subjectPrefix: 'FWD: ',
  loopMarker: { name: 'X-SES-Worker-Processed', value: 'v1.0100018c-abc' },
  messageIdDomain: 'mail.ours.example',
  now: new Date('2023-11-28T10:00:00Z'),
};

const BODY = Buffer.concat([
  Buffer.from('\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n', 'latin1'),
  Buffer.from('Grüße — 8-bit body\r\nFrom: not a header\r\n', 'utf8'),
  Buffer.from([0x00, 0xff, 0x0d, 0x0a]),
  Buffer.from('--b1--\r\n', 'latin1'),
]);

const HEADERS = [
  'Return-Path: <alice@example.org>',
  'Received: from mail.example.org by inbound-smtp.eu-west-1.amazonaws.com;',
  '\tTue, 28 Nov 2023 09:59:58 +0000',
  'Delivered-To: bob@ours.example',
  'DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s1;',
  '\th=From:To:Subject:Date:Message-ID;',
  '\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;',
  '\tb=c2lnbmF0dXJl',
  'From: "Alice \\"A\\" Example" <Alice@Example.org>',
  'Sender: list-owner@example.org',
  'To: bob@ours.example',
  'Subject: Quarterly numbers',
  'Date: Tue, 28 Nov 2023 09:59:57 +0000',
  'Message-ID: <orig-123@example.org>',
  'MIME-Version: 1.0',
  'Content-Type: multipart/alternative; boundary="b1"',
  'dkim-signature: v=1; a=rsa-sha256; d=list.example.org; s=s2;',
  ' b=second',
  'X-SES-Worker-Processed: someone-else',
];

function message(headers: string[], body: Buffer = BODY): Buffer {
  return Buffer.concat([Buffer.from(headers.join('\r\n') + '\r\n', 'utf8'), body]);
}

function forward(raw: Buffer, opts: Partial<ForwardOptions> = {}): ReturnType<typeof splitMessage> {
  return splitMessage(rewriteForForward(raw, { ...OPTS, ...opts }));
}

function withHeader(name: string, value: string | undefined): Buffer {
  const kept = HEADERS.filter((h) => !h.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return message(value === undefined ? kept : [...kept, `${name}: ${value}`]);
}

const isInjection = (e: unknown): boolean => e instanceof WorkerError && e.code === 'HEADER_INJECTION';

describe('rewriteForForward', () => {
  it('keeps the body bytes identical', () => {
    const out = forward(message(HEADERS));
    assert.ok(out.rest.equals(BODY));
  });

  it('produces exactly the specified header set', () => {
    const out = forward(message(HEADERS));
    const messageId = getHeader(out, 'Message-ID') ?? '';
    assert.match(
      messageId,
      /^<[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}@mail\.ours\.example>$/,
    );
    assert.deepEqual(
      out.fields.map((f) => f.raw.toString('utf8')),
      [
        'Received: from mail.example.org by inbound-smtp.eu-west-1.amazonaws.com;\r\n\tTue, 28 Nov 2023 09:59:58 +0000\r\n',
        'From: "Alice \\"A\\" Example via ours.example" <bob@ours.example>\r\n',
        'To: bob@ours.example\r\n',
        'Subject: FWD: Quarterly numbers\r\n',
        'Date: Tue, 28 Nov 2023 09:59:57 +0000\r\n',
        `Message-ID: ${messageId}\r\n`,
        'MIME-Version: 1.0\r\n',
        'Content-Type: multipart/alternative; boundary="b1"\r\n',
        'Reply-To: "Alice \\"A\\" Example" <Alice@Example.org>\r\n',
        'X-Original-From: "Alice \\"A\\" Example" <Alice@Example.org>\r\n',
        'X-Original-To: bob@ours.example\r\n',
        'X-Original-Message-ID: <orig-123@example.org>\r\n',
        'X-SES-Worker-Processed: v1.0100018c-abc\r\n',
      ],
    );
  });

  it('removes every DKIM-Signature with all its continuation lines', () => {
    const out = rewriteForForward(message(HEADERS), OPTS).toString('latin1');
    assert.ok(!/dkim-signature/i.test(out));
    assert.ok(!out.includes('bh=47DEQ'));
    assert.ok(!out.includes('b=second'));
    assert.ok(!out.includes('b=c2lnbmF0dXJl'));
  });

  it('leaves exactly one Message-ID even when the original had duplicates or none', () => {
    const dup = forward(message([...HEADERS, 'Message-Id: <dup@example.org>']));
    assert.equal(getHeaders(dup, 'message-id').length, 1);
    assert.equal(getHeader(dup, 'X-Original-Message-ID'), '<orig-123@example.org>');
    const none = forward(withHeader('Message-ID', undefined));
    assert.equal(getHeaders(none, 'message-id').length, 1);
    assert.equal(getHeader(none, 'X-Original-Message-ID'), undefined);
  });

  it('gives a new Message-ID on every call', () => {
    const a = getHeader(forward(message(HEADERS)), 'Message-ID');
    const b = getHeader(forward(message(HEADERS)), 'Message-ID');
    assert.notEqual(a, b);
  });

  it('does not double the subject prefix, case-insensitively', () => {
    assert.equal(getHeader(forward(withHeader('Subject', 'FWD: already')), 'Subject'), 'FWD: already');
    assert.equal(getHeader(forward(withHeader('Subject', 'Fwd: lower case')), 'Subject'), 'Fwd: lower case');
    assert.equal(getHeader(forward(withHeader('Subject', 'fwd:no space')), 'Subject'), 'fwd:no space');
    assert.equal(getHeader(forward(withHeader('Subject', 'Forwarded')), 'Subject'), 'FWD: Forwarded');
  });

  it('uses a custom prefix and adds a subject when the original had none', () => {
    assert.equal(
      getHeader(forward(withHeader('Subject', 'hi'), { subjectPrefix: '[ext] ' }), 'Subject'),
      '[ext] hi',
    );
    assert.equal(getHeader(forward(withHeader('Subject', undefined)), 'Subject'), 'FWD: ');
  });

  it('decodes, prefixes and re-encodes an encoded-word subject', () => {
    const out = forward(withHeader('Subject', '=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?Q?K=F6ln?='));
    const subject = getHeader(out, 'Subject') ?? '';
    assert.match(subject, /^[\x20-\x7e]+$/);
    assert.equal(libmime.decodeWords(subject), 'FWD: Grüße aus Köln');
    const again = getHeader(forward(withHeader('Subject', subject)), 'Subject') ?? '';
    assert.equal(libmime.decodeWords(again), 'FWD: Grüße aus Köln');
  });

  it('encodes a raw UTF-8 subject', () => {
    const subject = getHeader(forward(withHeader('Subject', 'Grüße')), 'Subject') ?? '';
    assert.match(subject, /^[\x20-\x7e]+$/);
    assert.equal(libmime.decodeWords(subject), 'FWD: Grüße');
  });

  it('does not let an encoded CRLF in the subject inject a header', () => {
    const out = rewriteForForward(withHeader('Subject', '=?UTF-8?Q?hi=0D=0ABcc:_evil@x?='), OPTS);
    const msg = splitMessage(out);
    assert.equal(getHeader(msg, 'Bcc'), undefined);
    assert.equal(libmime.decodeWords(getHeader(msg, 'Subject') ?? ''), 'FWD: hi  Bcc: evil@x');
  });

  it('keeps an ASCII subject that only looks like an encoded word literal', () => {
    const subject = getHeader(forward(withHeader('Subject', '=?UTF-8?Q?=3D=3Fnot=3F=3D?=')), 'Subject') ?? '';
    assert.equal(libmime.decodeWords(subject), 'FWD: =?not?=');
  });

  it('builds From from an encoded or non-ASCII display name', () => {
    const encoded = forward(withHeader('From', '=?UTF-8?B?SsO2cmc=?= <j@x.de>'));
    assert.equal(getHeader(encoded, 'From'), '=?UTF-8?Q?J=C3=B6rg_via_ours=2Eexample?= <bob@ours.example>');
    assert.equal(getHeader(encoded, 'Reply-To'), '=?UTF-8?Q?J=C3=B6rg?= <j@x.de>');
    assert.equal(getHeader(encoded, 'X-Original-From'), '=?UTF-8?B?SsO2cmc=?= <j@x.de>');
  });

  it('uses the address when the sender has no display name', () => {
    const out = forward(withHeader('From', 'carol@example.net'));
    assert.equal(getHeader(out, 'From'), '"carol@example.net via ours.example" <bob@ours.example>');
    assert.equal(getHeader(out, 'Reply-To'), '<carol@example.net>');
  });

  it('still produces a valid From for garbage senders', () => {
    const cases: Array<[string | undefined, string, string | undefined]> = [
      ['garbage\r\n more garbage', '"garbage more garbage via ours.example" <bob@ours.example>', undefined],
      [
        'Foo <a@b.c> Extra route-addr',
        '"Foo Extra route-addr via ours.example" <bob@ours.example>',
        '"Foo Extra route-addr" <a@b.c>',
      ],
      ['', '"unknown sender via ours.example" <bob@ours.example>', undefined],
      ['<>', '"unknown sender via ours.example" <bob@ours.example>', undefined],
      ['undisclosed-recipients:;', '"unknown sender via ours.example" <bob@ours.example>', undefined],
      [undefined, '"unknown sender via ours.example" <bob@ours.example>', undefined],
      ['"Mallory\\" <evil@x>, "" <x@y', '"unknown sender via ours.example" <bob@ours.example>', undefined],
    ];
    for (const [from, expectedFrom, expectedReplyTo] of cases) {
      const kept = HEADERS.filter((h) => !/^(from|reply-to):/i.test(h));
      const raw = message(
        from === undefined ? kept : [...kept.slice(0, 3), `From: ${from}`, ...kept.slice(3)],
      );
      const out = forward(raw);
      assert.equal(getHeader(out, 'From'), expectedFrom, `From for ${JSON.stringify(from)}`);
      assert.equal(getHeader(out, 'Reply-To'), expectedReplyTo, `Reply-To for ${JSON.stringify(from)}`);
      assert.ok(out.rest.equals(BODY));
    }
  });

  it('strips control bytes from a From that carries them', () => {
    const raw = Buffer.concat([
      Buffer.from('From: Eve\rBcc: x\0 <eve@example.org>\r\nSubject: s\r\n', 'latin1'),
      BODY,
    ]);
    const out = forward(raw);
    // The colon makes it a group "Eve\rBcc" holding the mailbox `x <eve@example.org>`.
    assert.equal(getHeader(out, 'From'), '"x via ours.example" <bob@ours.example>');
    assert.equal(getHeader(out, 'X-Original-From'), 'Eve Bcc: x <eve@example.org>');
    assert.equal(getHeader(out, 'Reply-To'), '"x" <eve@example.org>');
    assert.equal(getHeader(out, 'Bcc'), undefined);
  });

  it('keeps the original Reply-To rather than From when present', () => {
    const out = forward(message([...HEADERS, 'Reply-To: Team <team@example.org>, other@example.org']));
    assert.equal(getHeader(out, 'Reply-To'), '"Team" <team@example.org>, <other@example.org>');
    assert.equal(getHeaders(out, 'Reply-To').length, 1);
  });

  it('falls back to From when the original Reply-To has no usable address', () => {
    const out = forward(message([...HEADERS, 'Reply-To: nobody']));
    assert.equal(getHeader(out, 'Reply-To'), '"Alice \\"A\\" Example" <Alice@Example.org>');
  });

  it('adds a Date from opts.now only when the original has none', () => {
    assert.equal(
      getHeader(forward(withHeader('Date', undefined)), 'Date'),
      'Tue, 28 Nov 2023 10:00:00 +0000',
    );
    assert.equal(getHeader(forward(message(HEADERS)), 'Date'), 'Tue, 28 Nov 2023 09:59:57 +0000');
  });

  it('replaces forged X-Original-* fields and the old loop marker', () => {
    const out = forward(
      message([
        ...HEADERS,
        'X-Original-To: forged@evil.example',
        'X-Original-From: forged',
        'x-ses-worker-processed: b',
      ]),
    );
    assert.deepEqual(getHeaders(out, 'X-Original-To'), ['bob@ours.example']);
    assert.deepEqual(getHeaders(out, 'X-Original-From'), ['"Alice \\"A\\" Example" <Alice@Example.org>']);
    assert.deepEqual(getHeaders(out, 'X-SES-Worker-Processed'), ['v1.0100018c-abc']);
  });

  it('keeps LF line endings for LF messages', () => {
    const raw = Buffer.from('From: a@example.org\nSubject: s\n\nbody\n', 'latin1');
    const out = rewriteForForward(raw, OPTS).toString('latin1');
    assert.ok(!out.includes('\r'));
    assert.ok(out.endsWith('\n\nbody\n'));
  });

  it('folds a very long sender name and keeps lines within 998 octets', () => {
    const out = rewriteForForward(
      withHeader('From', `${'Very Long Name '.repeat(200)}<x@example.org>`),
      OPTS,
    );
    const head = out.subarray(0, out.length - BODY.length).toString('latin1');
    for (const line of head.split('\r\n')) assert.ok(line.length <= 998, `line of ${line.length}`);
    assert.ok(splitMessage(out).rest.equals(BODY));
  });

  it('refuses option values that would inject headers or addresses', () => {
    const raw = message(HEADERS);
    assert.throws(
      () => rewriteForForward(raw, { ...OPTS, forwardingAddress: 'a@b>\r\nBcc: evil@x' }),
      isInjection,
    );
    assert.throws(() => rewriteForForward(raw, { ...OPTS, forwardingAddress: 'a@b>, <evil@x' }), isInjection);
    assert.throws(() => rewriteForForward(raw, { ...OPTS, originalRecipient: 'x\n@y' }), isInjection);
    assert.throws(() => rewriteForForward(raw, { ...OPTS, domain: 'ours.example>\r\nBcc: x' }), isInjection);
    assert.throws(() => rewriteForForward(raw, { ...OPTS, messageIdDomain: 'a b' }), isInjection);
    assert.throws(
      () => rewriteForForward(raw, { ...OPTS, loopMarker: { name: 'X Bad', value: 'v' } }),
      isInjection,
    );
    assert.throws(
      () => rewriteForForward(raw, { ...OPTS, loopMarker: { name: 'X-L', value: 'v\r\nBcc: x' } }),
      isInjection,
    );
    assert.throws(() => rewriteForForward(raw, { ...OPTS, subjectPrefix: 'F\r\nBcc: x ' }), isInjection);
  });
});

describe('rewriteForForward, tagged with the verdict fields (FORWARD_SPAM_POLICY=tag)', () => {
  it('puts our verdict fields first and drops the copies the sender wrote', () => {
    const raw = message([...HEADERS, 'X-SES-Spam-Verdict: PASS', 'x-ses-virus-verdict: PASS']);
    const verdictFields = [
      ['X-SES-Spam-Verdict', 'FAIL'],
      ['X-SES-Virus-Verdict', 'PASS'],
    ] as const;
    const out = forward(raw, { verdictFields });
    assert.deepEqual(
      out.fields.slice(0, 2).map((f) => [f.name, f.value]),
      verdictFields.map(([n, v]) => [n, v]),
    );
    assert.deepEqual(getHeaders(out, 'X-SES-Spam-Verdict'), ['FAIL']);
    assert.deepEqual(getHeaders(out, 'X-SES-Virus-Verdict'), ['PASS']);
    assert.ok(
      rewriteForForward(raw, { ...OPTS, verdictFields })
        .subarray(-BODY.length)
        .equals(BODY),
    );
  });

  it('leaves the verdict fields of an untagged forward alone', () => {
    const raw = message([...HEADERS, 'X-SES-Spam-Verdict: PASS']);
    assert.deepEqual(getHeaders(forward(raw), 'X-SES-Spam-Verdict'), ['PASS']);
  });
});
