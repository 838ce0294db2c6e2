/**
 * The deadline every doctor call runs under (src/cli/deadline.ts), and how a failed GetCallerIdentity is read
 * (src/aws/caller-identity.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { classifyCallerError } from '../../src/aws/caller-identity.ts';
import { DeadlineError, formatSeconds, withDeadline } from '../../src/cli/deadline.ts';

describe('withDeadline', () => {
  it('returns what the work returns in time', async () => {
    assert.equal(await withDeadline(1000, 'x', async () => 42), 42);
  });

  it('passes the work failure through', async () => {
    await assert.rejects(
      withDeadline(1000, 'x', async () => {
        throw new Error('boom');
      }),
      /^Error: boom$/,
    );
  });

  it('rejects when time is up even if the work ignores its signal, and aborts the signal', async () => {
    let signal: AbortSignal | undefined;
    const started = Date.now();
    await assert.rejects(
      withDeadline(50, 'STS GetCallerIdentity', (s) => {
        signal = s;
        return new Promise<never>(() => undefined);
      }),
      (error: unknown) =>
        error instanceof DeadlineError && error.message === 'no answer to STS GetCallerIdentity within 0.1 s',
    );
    assert.ok(Date.now() - started < 1000);
    assert.equal(signal?.aborted, true);
    assert.ok(signal?.reason instanceof DeadlineError);
  });

  it('formats seconds the way the messages say them', () => {
    assert.equal(formatSeconds(10_000), '10 s');
    assert.equal(formatSeconds(1_500), '1.5 s');
  });
});

describe('classifyCallerError', () => {
  const named = (name: string, message = 'x') => Object.assign(new Error(message), { name });
  const cases: Array<[string, unknown, ReturnType<typeof classifyCallerError>]> = [
    [
      'the credential chain found nothing',
      named('CredentialsProviderError', 'Could not load credentials from any providers'),
      'no-credentials',
    ],
    [
      'the same message under another name',
      new Error('Could not load credentials from any providers'),
      'no-credentials',
    ],
    ['an unknown access key', named('InvalidClientTokenId'), 'refused'],
    ['a wrong secret', named('SignatureDoesNotMatch'), 'refused'],
    ['an expired session', named('ExpiredToken'), 'refused'],
    ['a network failure', named('TimeoutError'), 'other'],
    ['the deadline', new DeadlineError('STS', 10), 'other'],
    ['not an error', 'text', 'other'],
  ];
  for (const [name, error, expected] of cases) {
    it(`${name}: ${expected}`, () => assert.equal(classifyCallerError(error), expected));
  }
});
