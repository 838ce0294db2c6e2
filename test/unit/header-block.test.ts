import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import libmime from 'libmime';
import { WorkerError } from '../../src/errors.ts';
import {
  assertSafeHeaderValue,
  editHeaders,
  getHeader,
  getHeaders,
  serializeMessage,
  splitMessage,
} from '../../src/mail/header-block.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function assertRoundTrip(input: Buffer): void {
  const out = serializeMessage(splitMessage(input));
  assert.ok(out.equals(input), `round trip changed ${JSON.stringify(input.toString('latin1').slice(0, 80))}`);
}

function isInjection(error: unknown): boolean {
  return error instanceof WorkerError && error.code === 'HEADER_INJECTION' && error.temporary === false;
}

/** Small deterministic PRNG so a failing property case can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CRLF_MESSAGE = b(
  'Received: from a by b;\r\n\tTue, 28 Nov 2023 10:00:00 +0000\r\n' +
    'From: Alice <alice@example.com>\r\n' +
    'Subject: Hello\r\n' +
    'DKIM-Signature: v=1; a=rsa-sha256;\r\n\tbh=abc;\r\n\tb=def\r\n' +
    'To: bob@example.net\r\n' +
    '\r\n' +
    'Body line 1\r\nBody: not a header\r\n',
);

describe('splitMessage and serializeMessage', () => {
  it('returns the exact input bytes for tricky inputs', () => {
    const all8bit = Buffer.alloc(256);
    for (let i = 0; i < 256; i++) all8bit[i] = i;
    const inputs: Buffer[] = [
      CRLF_MESSAGE,
      b('From: a@b\nSubject: bare LF\n\nbody\n'),
      b('From: a@b\r\nSubject: mixed\n  folded\r\n\r\nbody\nmore\r\n'),
      b('From: a@b\r\nSubject: no body\r\n'),
      b('From: a@b\r\nSubject: no final newline'),
      b(''),
      b('\r\n'),
      b('\n\nbody only'),
      b('This first line is not a header\r\nFrom: a@b\r\n\r\n'),
      b(' leading continuation\r\nFrom: a@b\r\n'),
      Buffer.concat([b('X-Bytes: '), all8bit, b('\r\n\r\n'), all8bit]),
      b('Subject: nul\0inside\r\nX\0Y: z\r\n\r\n\0body'),
      b('Subject : obsolete space before colon\r\n\r\nx'),
      b('Subject: a\rb\rc\r\n\r\n'),
      b('From: a@b\r\nnot a header line\r\nTo: c@d\r\n\r\nbody'),
      b('From: a@b\r\n   \r\n\r\nwhitespace-only continuation'),
      b('A:\r\nB:\r\n\r\n'),
      b(':no name\r\n\r\n'),
    ];
    for (const input of inputs) assertRoundTrip(input);
  });

  // How long this takes is measured in bench/mail-parsing.bench.ts; that the work is linear is counted below.
  it('keeps a 5 MB single header line byte for byte', () => {
    const huge = Buffer.alloc(5 * 1024 * 1024, 'a');
    const input = Buffer.concat([b('X-Huge: '), huge, b('\r\nSubject: after\r\n\r\nbody')]);
    // Above the default header-bytes bound (MAIL_LIMITS): raise it to scan the line itself.
    const msg = splitMessage(input, { maxBytes: 6 * 1024 * 1024 });
    assert.equal(msg.fields.length, 2);
    assert.equal(msg.fields[0]?.value.length, huge.length);
    assert.equal(getHeader(msg, 'subject'), 'after');
    assert.ok(serializeMessage(msg).equals(input));
  });

  it('treats a 5 MB line without colon or newline as body', () => {
    const input = Buffer.alloc(5 * 1024 * 1024, 'x');
    const msg = splitMessage(input);
    assert.equal(msg.fields.length, 0);
    assert.ok(msg.rest.equals(input));
  });

  it('unfolds a field with 1000 continuation lines and keeps its raw bytes', () => {
    const parts = ['References: <0@x>'];
    for (let i = 1; i <= 1000; i++) parts.push(`\t<${i}@x>`);
    const input = b(`${parts.join('\r\n')}\r\nSubject: s\r\n\r\nbody`);
    const msg = splitMessage(input);
    assert.equal(msg.fields.length, 2);
    assert.equal(msg.fields[0]?.value, parts.join('').slice('References: '.length));
    assert.ok(serializeMessage(msg).equals(input));
  });

  it('keeps every random byte soup identical and splits it into fields plus a suffix', () => {
    const alphabet = [
      '\r',
      '\n',
      '\r\n',
      ':',
      ' ',
      '\t',
      'a',
      'X-H',
      'Subject',
      '\0',
      '\xff',
      '\xe9',
      '=?',
      '--',
    ];
    const random = mulberry32(20231128);
    for (let i = 0; i < 3000; i++) {
      const len = Math.floor(random() * 40);
      let s = '';
      for (let j = 0; j < len; j++) s += alphabet[Math.floor(random() * alphabet.length)];
      const input = b(s);
      const msg = splitMessage(input);
      assert.ok(serializeMessage(msg).equals(input), `case ${i}: ${JSON.stringify(s)}`);
      const restStart = input.length - msg.rest.length;
      assert.ok(input.subarray(restStart).equals(msg.rest));
      for (const f of msg.fields) assert.ok(f.raw.length > 0 && f.name.length > 0);
    }
  });

  it('ends the header block at the blank line and keeps the separator in rest', () => {
    const msg = splitMessage(CRLF_MESSAGE);
    assert.deepEqual(
      msg.fields.map((f) => f.name),
      ['Received', 'From', 'Subject', 'DKIM-Signature', 'To'],
    );
    assert.equal(msg.rest.toString('latin1'), '\r\nBody line 1\r\nBody: not a header\r\n');
    assert.equal(msg.eol, '\r\n');
    assert.equal(
      msg.fields[0]?.raw.toString('latin1'),
      'Received: from a by b;\r\n\tTue, 28 Nov 2023 10:00:00 +0000\r\n',
    );
    assert.equal(msg.fields[0]?.value, 'from a by b;\tTue, 28 Nov 2023 10:00:00 +0000');
    assert.equal(msg.fields[3]?.value, 'v=1; a=rsa-sha256;\tbh=abc;\tb=def');
  });

  it('ends the header block at a line that is not a header field', () => {
    const msg = splitMessage(b('From: a@b\r\nnot a header line\r\nTo: c@d\r\n'));
    assert.deepEqual(
      msg.fields.map((f) => f.name),
      ['From'],
    );
    assert.equal(msg.rest.toString('latin1'), 'not a header line\r\nTo: c@d\r\n');
  });

  it('treats a message whose first line is not a header as all body', () => {
    const input = b('Hello there\r\nFrom: a@b\r\n\r\n');
    const msg = splitMessage(input);
    assert.equal(msg.fields.length, 0);
    assert.ok(msg.rest.equals(input));
  });

  it('treats a message without blank line as all headers', () => {
    const msg = splitMessage(b('From: a@b\nSubject: x'));
    assert.equal(msg.fields.length, 2);
    assert.equal(msg.rest.length, 0);
    assert.equal(msg.eol, '\n');
    assert.equal(getHeader(msg, 'SUBJECT'), 'x');
  });

  it('accepts obsolete whitespace before the colon and keeps the bare name', () => {
    const msg = splitMessage(b('Subject \t: spaced\r\n\r\n'));
    assert.equal(msg.fields[0]?.name, 'Subject');
    assert.equal(msg.fields[0]?.value, 'spaced');
  });

  it('decodes header bytes as latin1 so 8-bit values survive', () => {
    const msg = splitMessage(Buffer.concat([b('Subject: '), Buffer.from('Grüße', 'utf8'), b('\r\n\r\n')]));
    assert.equal(Buffer.from(msg.fields[0]?.value ?? '', 'latin1').toString('utf8'), 'Grüße');
  });
});

/**
 * The input behind a Proxy that counts the bytes splitMessage examines: one per indexed read, the span an
 * `indexOf` searched or a `toString` decoded. subarray views cost nothing (no bytes are touched). Any other Buffer
 * method fails the test, so new code cannot do uncounted work.
 */
function countingBuffer(raw: Buffer): { buffer: Buffer; examined: () => number } {
  let examined = 0;
  const counted: Record<string, (...args: never[]) => unknown> = {
    indexOf: (value: number, from = 0) => {
      const at = raw.indexOf(value, from);
      examined += (at === -1 ? raw.length : at + 1) - from;
      return at;
    },
    toString: (encoding: BufferEncoding, start = 0, end = raw.length) => {
      examined += Math.min(end, raw.length) - start;
      return raw.toString(encoding, start, end);
    },
    subarray: (start?: number, end?: number) => raw.subarray(start, end),
  };
  const buffer = new Proxy(raw, {
    get(target, property) {
      if (typeof property === 'string' && /^\d+$/.test(property)) {
        examined += 1;
        return target[Number(property)];
      }
      if (property === 'length') return target.length;
      if (typeof property === 'string' && typeof Reflect.get(target, property) === 'function') {
        const method = counted[property];
        assert.ok(method, `splitMessage called the uncounted Buffer method ${property}`);
        return method;
      }
      return Reflect.get(target, property);
    },
  });
  return { buffer, examined: () => examined };
}

describe('splitMessage does linear work (bytes examined, counted, at 1x and 10x the input)', () => {
  const shapes: Array<[name: string, build: (bytes: number) => Buffer]> = [
    [
      'one long header line',
      (n) => Buffer.concat([b('X-Huge: '), Buffer.alloc(n, 'a'), b('\r\nSubject: after\r\n\r\nbody')]),
    ],
    ['one long line without colon or newline', (n) => Buffer.alloc(n, 'x')],
    [
      'one field with many continuation lines',
      (n) => b(`References: <0@x>${'\r\n\t<1@x>'.repeat(n / 8)}\r\n\r\nb`),
    ],
    ['many short fields', (n) => b(`${'X-A: b\r\n'.repeat(n / 8)}\r\nbody`)],
    ['many whitespace-only continuation lines', (n) => b(`Subject: s${'\r\n \t'.repeat(n / 4)}\r\n\r\nb`)],
  ];
  for (const [name, build] of shapes) {
    it(name, () => {
      const work = [100_000, 1_000_000].map((bytes) => {
        const input = build(bytes);
        const { buffer, examined } = countingBuffer(input);
        // The proxied input still splits exactly like the plain one.
        assert.ok(serializeMessage(splitMessage(buffer)).equals(input));
        return { bytes: input.length, examined: examined() };
      });
      const [small, large] = work as [
        { bytes: number; examined: number },
        { bytes: number; examined: number },
      ];
      const growth = large.examined / small.examined;
      // Linear: 10x the input, ~10x the work (quadratic would be ~100x); and a few looks at each byte at most.
      assert.ok(growth < 12, `10x the input cost ${growth.toFixed(1)}x the work: ${JSON.stringify(work)}`);
      assert.ok(large.examined <= 6 * large.bytes, `${large.examined} bytes examined for ${large.bytes}`);
    });
  }
});

describe('getHeader and getHeaders', () => {
  it('match names case-insensitively and keep message order', () => {
    const msg = splitMessage(b('received: one\r\nRECEIVED: two\r\nSubject: s\r\n\r\n'));
    assert.equal(getHeader(msg, 'Received'), 'one');
    assert.deepEqual(getHeaders(msg, 'received'), ['one', 'two']);
    assert.equal(getHeader(msg, 'Missing'), undefined);
    assert.deepEqual(getHeaders(msg, 'Missing'), []);
  });
});

describe('editHeaders', () => {
  it('removes fields with their continuation lines and leaves the rest byte-identical', () => {
    const out = serializeMessage(
      editHeaders(splitMessage(CRLF_MESSAGE), { remove: ['dkim-signature', 'Received'] }),
    );
    assert.equal(
      out.toString('latin1'),
      'From: Alice <alice@example.com>\r\nSubject: Hello\r\nTo: bob@example.net\r\n\r\nBody line 1\r\nBody: not a header\r\n',
    );
  });

  it('sets a field in place, dropping later duplicates, and appends when absent', () => {
    const input = b('A: 1\r\nMessage-ID: <old@x>\r\nB: 2\r\nmessage-id: <dup@x>\r\n\r\nbody');
    const out = serializeMessage(
      editHeaders(splitMessage(input), {
        set: [
          ['Message-ID', '<new@y>'],
          ['X-New', 'v'],
        ],
      }),
    );
    assert.equal(out.toString('latin1'), 'A: 1\r\nMessage-ID: <new@y>\r\nB: 2\r\nX-New: v\r\n\r\nbody');
  });

  it('prepends in the given order and appends after all fields', () => {
    const out = serializeMessage(
      editHeaders(splitMessage(b('A: 1\n\nbody\n')), {
        prepend: [
          ['P1', 'x'],
          ['P2', 'y'],
        ],
        append: [['Z', 'last']],
      }),
    );
    assert.equal(out.toString('latin1'), 'P1: x\nP2: y\nA: 1\nZ: last\n\nbody\n');
  });

  it('terminates an unterminated last field before adding one after it', () => {
    const out = serializeMessage(editHeaders(splitMessage(b('A: 1\r\nB: 2')), { append: [['C', '3']] }));
    assert.equal(out.toString('latin1'), 'A: 1\r\nB: 2\r\nC: 3\r\n');
  });

  it('adds headers in front of a message that is all body', () => {
    const out = serializeMessage(editHeaders(splitMessage(b('\r\nbody')), { append: [['X', 'y']] }));
    assert.equal(out.toString('latin1'), 'X: y\r\n\r\nbody');
  });

  it('changes nothing when given no edits', () => {
    const msg = splitMessage(CRLF_MESSAGE);
    assert.ok(serializeMessage(editHeaders(msg, {})).equals(CRLF_MESSAGE));
  });

  it('keeps the body bytes identical including 8-bit and NUL bytes', () => {
    const body = Buffer.from([0x0d, 0x0a, 0x00, 0xff, 0xfe, 0x0a, 0x0d, 0x41]);
    const input = Buffer.concat([b('Subject: x\r\n'), body]);
    const out = serializeMessage(editHeaders(splitMessage(input), { set: [['Subject', 'y']] }));
    assert.ok(out.subarray(out.length - body.length).equals(body));
    assert.equal(out.subarray(0, out.length - body.length).toString('latin1'), 'Subject: y\r\n');
  });

  it('refuses header injection in values and names and leaves nothing half-edited', () => {
    const msg = splitMessage(CRLF_MESSAGE);
    const attempts: Array<[string, string]> = [
      ['Subject', 'x\r\nBcc: evil@x'],
      ['Subject', 'x\nBcc'],
      ['Subject', 'x\rBcc'],
      ['Subject', 'x\0'],
      ['Bad Name', 'v'],
      ['X:Y', 'v'],
      ['', 'v'],
      ['Ünicode', 'v'],
      ['X-Tab\t', 'v'],
    ];
    for (const [name, value] of attempts) {
      assert.throws(
        () => assertSafeHeaderValue(name, value),
        isInjection,
        `${name}: ${JSON.stringify(value)}`,
      );
      assert.throws(() => editHeaders(msg, { set: [[name, value]] }), isInjection);
      assert.throws(
        () => editHeaders(msg, { append: [['X-Ok', 'fine']], prepend: [[name, value]] }),
        isInjection,
      );
    }
    assert.doesNotThrow(() => assertSafeHeaderValue('X-Ok', 'tab\tand unicode ü are fine'));
  });

  it('folds a long value at whitespace to lines of at most 78 characters', () => {
    const words = Array.from({ length: 60 }, (_, i) => `word${i}`);
    const value = words.join(' ');
    const msg = editHeaders(splitMessage(b('A: 1\r\n\r\n')), { append: [['X-Long', value]] });
    const field = msg.fields[1];
    assert.ok(field !== undefined);
    const fieldLines = field.raw.toString('latin1').split('\r\n').slice(0, -1);
    assert.ok(fieldLines.length > 1);
    for (const line of fieldLines) assert.ok(line.length <= 78, `line of ${line.length}`);
    assert.equal(field.value, value);
    const reparsed = splitMessage(serializeMessage(msg));
    assert.equal(getHeader(reparsed, 'X-Long'), value);
  });

  it('keeps lines within 998 when a token exceeds 78 but whitespace follows it', () => {
    const value = `${'a'.repeat(500)} ${'b'.repeat(600)} ${'c'.repeat(10)}`;
    const msg = editHeaders(splitMessage(b('')), { append: [['X-Tokens', value]] });
    const fieldLines = serializeMessage(msg).toString('latin1').split('\r\n').slice(0, -1);
    assert.deepEqual(
      fieldLines.map((l) => l.length),
      [10 + 500, 601, 11],
    );
    assert.equal(getHeader(splitMessage(serializeMessage(msg)), 'X-Tokens'), value);
  });

  it('leaves a value without any whitespace on one line, since no fold is possible', () => {
    const value = 'x'.repeat(1200);
    const out = serializeMessage(editHeaders(splitMessage(b('')), { append: [['X-Blob', value]] }));
    assert.equal(out.toString('latin1'), `X-Blob: ${value}\r\n`);
  });

  it('does not leave a whitespace-only last line for trailing spaces', () => {
    const value = `${'word '.repeat(30)}    `;
    const out = serializeMessage(editHeaders(splitMessage(b('')), { append: [['X-Trail', value]] }));
    const fieldLines = out.toString('latin1').split('\r\n').slice(0, -1);
    for (const line of fieldLines) assert.ok(line.trim() !== '', JSON.stringify(line));
  });

  it('encodes non-ASCII values as RFC 2047 words of at most 75 characters on lines of at most 78', () => {
    const value = `Grüße aus Köln ${'äöü '.repeat(40)}Ende`;
    const msg = editHeaders(splitMessage(b('A: 1\n\n')), { set: [['Subject', value]] });
    const raw = msg.fields[1]?.raw.toString('latin1') ?? '';
    assert.match(raw, /^Subject: =\?UTF-8\?Q\?/);
    assert.ok(!raw.includes('\r'), 'uses the message eol (LF)');
    assert.ok(/^[\x20-\x7e\n\t]*$/.test(raw), 'pure 7-bit');
    for (const line of raw.split('\n').slice(0, -1)) assert.ok(line.length <= 78, `line of ${line.length}`);
    for (const word of raw.match(/=\?[^?]+\?[QB]\?[^?]*\?=/g) ?? []) assert.ok(word.length <= 75);
    const reparsed = getHeader(splitMessage(serializeMessage(msg)), 'Subject') ?? '';
    assert.equal(libmime.decodeWords(reparsed), value);
  });

  it('keeps every generated line within 78 characters for long mixed values', () => {
    const value = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? 'ünïcödé' : `token-${i}`)).join(' ');
    const out = serializeMessage(editHeaders(splitMessage(b('')), { append: [['X-Mixed', value]] }));
    for (const line of out.toString('latin1').split('\r\n'))
      assert.ok(line.length <= 78, `line of ${line.length}`);
  });
});
