/**
 * The direct SQS calls' signer (src/aws/sigv4.ts) against the SDK's own signer: the same request, credentials and
 * time must give the same Authorization header, whatever the path (resolved `.` and `..`, doubled slashes, characters
 * SigV4 encodes again), the header values' whitespace, and a session token.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SignatureV4 } from '@smithy/signature-v4';
import { createSigner, sha256Hex } from '../../src/aws/sigv4.ts';

const credentials = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
const body =
  '{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/example-com-queue","WaitTimeSeconds":20}';
const sha256 = new SQSClient({ region: 'eu-west-1' }).config.sha256;

async function bySdk(path: string, headers: Record<string, string>, epochMs: number, sessionToken?: string) {
  const signer = new SignatureV4({
    service: 'sqs',
    region: 'eu-west-1',
    credentials: { ...credentials, ...(sessionToken && { sessionToken }) },
    sha256,
  });
  const signed = await signer.sign(
    {
      method: 'POST',
      protocol: 'https:',
      hostname: 'sqs.eu-west-1.amazonaws.com',
      path,
      query: {},
      headers,
      body,
    },
    { signingDate: new Date(epochMs) },
  );
  return signed.headers.authorization;
}

describe('SigV4 for the direct SQS calls', () => {
  const headers = {
    host: 'sqs.eu-west-1.amazonaws.com',
    'content-type': 'application/x-amz-json-1.0',
    'x-amz-target': 'AmazonSQS.ReceiveMessage',
    'x-amz-content-sha256': createHash('sha256').update(body).digest('hex'),
  };

  it('hashes as SHA-256 hex', () => {
    assert.equal(sha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  for (const path of ['/', '/proxy/sqs/', '/a/./b/../c//d/', '/with space/ünï(1)!*/']) {
    it(`signs the path ${JSON.stringify(path)} as the SDK does`, async () => {
      const epochMs = Date.UTC(2026, 11, 7, 23, 59, 59);
      const sign = createSigner();
      const ours = sign(
        { method: 'POST', path, headers, bodyHash: headers['x-amz-content-sha256'] },
        { service: 'sqs', region: 'eu-west-1', credentials, epochMs },
      );
      assert.equal(ours.authorization, await bySdk(path, headers, epochMs));
      assert.equal(ours['x-amz-date'], '20261207T235959Z');
    });
  }

  it('signs a session token and folded header whitespace as the SDK does, across a day boundary', async () => {
    const sign = createSigner();
    const spaced = { ...headers, 'x-amzn-query-mode': '  true \t ' };
    for (const epochMs of [Date.UTC(2026, 11, 7, 23, 59, 59), Date.UTC(2026, 11, 8, 0, 0, 1)]) {
      const ours = sign(
        { method: 'POST', path: '/', headers: spaced, bodyHash: headers['x-amz-content-sha256'] },
        {
          service: 'sqs',
          region: 'eu-west-1',
          credentials: { ...credentials, sessionToken: 'token' },
          epochMs,
        },
      );
      assert.equal(ours['x-amz-security-token'], 'token');
      assert.equal(ours.authorization, await bySdk('/', spaced, epochMs, 'token'));
    }
  });

  it('signs the same frozen headers again with another date, with and without a token, as the SDK does', async () => {
    const sign = createSigner();
    const kept = Object.freeze({ ...headers });
    const tokens = [undefined, 'token-1', 'token-2', undefined];
    for (const [i, sessionToken] of tokens.entries()) {
      const epochMs = Date.UTC(2026, 11, 8, 10, 0, i * 20);
      const ours = sign(
        { method: 'POST', path: '/', headers: kept, bodyHash: headers['x-amz-content-sha256'] },
        {
          service: 'sqs',
          region: 'eu-west-1',
          credentials: { ...credentials, ...(sessionToken && { sessionToken }) },
          epochMs,
        },
      );
      assert.equal(ours['x-amz-security-token'], sessionToken);
      assert.equal(ours.authorization, await bySdk('/', headers, epochMs, sessionToken));
    }
  });
});
