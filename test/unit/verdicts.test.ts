import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SesVerdicts } from '../../src/pipeline/notification.ts';
import { detectEol, verdictHeaders } from '../../src/pipeline/verdicts.ts';

const MIXED: SesVerdicts = {
  spam: 'FAIL',
  virus: 'PASS',
  spf: 'GRAY',
  dkim: 'PROCESSING_FAILED',
  dmarc: 'UNKNOWN',
};

describe('verdictHeaders', () => {
  it('writes the five verdict fields in a fixed order with CRLF line endings', () => {
    const out = verdictHeaders(MIXED, '\r\n');
    assert.ok(Buffer.isBuffer(out));
    assert.equal(
      out.toString('latin1'),
      'X-SES-Spam-Verdict: FAIL\r\n' +
        'X-SES-Virus-Verdict: PASS\r\n' +
        'X-SES-SPF-Verdict: GRAY\r\n' +
        'X-SES-DKIM-Verdict: PROCESSING_FAILED\r\n' +
        'X-SES-DMARC-Verdict: UNKNOWN\r\n',
    );
  });

  it('writes LF line endings for a mail that uses them', () => {
    const verdicts: SesVerdicts = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
    assert.deepEqual(
      verdictHeaders(verdicts, '\n'),
      Buffer.from(
        'X-SES-Spam-Verdict: PASS\nX-SES-Virus-Verdict: PASS\nX-SES-SPF-Verdict: PASS\n' +
          'X-SES-DKIM-Verdict: PASS\nX-SES-DMARC-Verdict: PASS\n',
        'ascii',
      ),
    );
  });

  it('writes DISABLED as given', () => {
    const verdicts: SesVerdicts = {
      spam: 'DISABLED',
      virus: 'DISABLED',
      spf: 'PASS',
      dkim: 'FAIL',
      dmarc: 'GRAY',
    };
    assert.equal(
      verdictHeaders(verdicts, '\r\n').toString('ascii'),
      'X-SES-Spam-Verdict: DISABLED\r\nX-SES-Virus-Verdict: DISABLED\r\nX-SES-SPF-Verdict: PASS\r\n' +
        'X-SES-DKIM-Verdict: FAIL\r\nX-SES-DMARC-Verdict: GRAY\r\n',
    );
  });

  it('has the exact byte length of the text', () => {
    const crlf = verdictHeaders(MIXED, '\r\n');
    const lf = verdictHeaders(MIXED, '\n');
    assert.equal(crlf.length, lf.length + 5);
    assert.equal(crlf.length, 24 + 25 + 23 + 37 + 28 + 5 * 2);
  });

  it('gives a header block a header parser reads back as five fields', () => {
    const block = verdictHeaders(MIXED, '\r\n').toString('ascii');
    const lines = block.split('\r\n');
    assert.equal(lines.length, 6);
    assert.equal(lines[5], '');
    assert.deepEqual(
      lines.slice(0, 5).map((l) => l.split(': ')),
      [
        ['X-SES-Spam-Verdict', 'FAIL'],
        ['X-SES-Virus-Verdict', 'PASS'],
        ['X-SES-SPF-Verdict', 'GRAY'],
        ['X-SES-DKIM-Verdict', 'PROCESSING_FAILED'],
        ['X-SES-DMARC-Verdict', 'UNKNOWN'],
      ],
    );
  });
});

describe('detectEol', () => {
  it('detects CRLF from the first line break', () => {
    assert.equal(detectEol(Buffer.from('From: a@b.test\r\nTo: c@d.test\r\n\r\nbody\r\n')), '\r\n');
  });

  it('detects LF from the first line break', () => {
    assert.equal(detectEol(Buffer.from('From: a@b.test\nTo: c@d.test\n\nbody\n')), '\n');
  });

  it('decides on the first line break only', () => {
    assert.equal(detectEol(Buffer.from('A: 1\nB: 2\r\n')), '\n');
    assert.equal(detectEol(Buffer.from('A: 1\r\nB: 2\n')), '\r\n');
  });

  it('defaults to CRLF when there is no line break at all', () => {
    assert.equal(detectEol(Buffer.alloc(0)), '\r\n');
    assert.equal(detectEol(Buffer.from('Subject: one line only')), '\r\n');
  });

  it('reports LF for a mail that starts with a bare LF', () => {
    assert.equal(detectEol(Buffer.from('\nbody')), '\n');
  });

  it('reports CRLF for a mail that starts with CRLF', () => {
    assert.equal(detectEol(Buffer.from('\r\nbody')), '\r\n');
  });

  it('ignores a CR that is not directly before the LF', () => {
    assert.equal(detectEol(Buffer.from('A: 1\r \nB: 2')), '\n');
  });
});
