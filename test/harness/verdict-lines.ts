import assert from 'node:assert/strict';

/**
 * The delivered copy starts with the worker's X-SES-Worker-Delivery-Id line and its five X-SES-*-Verdict lines,
 * then the original bytes follow unchanged. Checks those lines (written out here, not taken from src, so a test can
 * catch a change in them) and returns the rest.
 */
export function stripVerdicts(raw: Buffer): Buffer {
  const first = raw.subarray(0, raw.indexOf('\r\n') + 2).toString('latin1');
  assert.match(first, /^X-SES-Worker-Delivery-Id: deliver\.[0-9a-f]{32}\r\n$/);
  let offset = first.length;
  for (let i = 0; i < 5; i++) {
    const line = raw.subarray(offset, raw.indexOf('\r\n', offset) + 2).toString('latin1');
    assert.match(line, /^X-SES-(Spam|Virus|SPF|DKIM|DMARC)-Verdict: [A-Z_]+\r\n$/);
    offset += line.length;
  }
  return raw.subarray(offset);
}
