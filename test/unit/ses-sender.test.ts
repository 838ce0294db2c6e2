import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SESv2Client } from '@aws-sdk/client-sesv2';
import { createSesSender, sesFailureKind, type SesFailure } from '../../src/aws/ses-sender.ts';
import type { Clock } from '../../src/clock.ts';
import { WorkerError } from '../../src/errors.ts';

/** An AWS SDK v3 service error: `name` and `$metadata.httpStatusCode`. */
function serviceError(name: string, status: number, message = `${name} from SES`): Error {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

/** What @smithy/node-http-handler rejects with when the network fails (no HTTP status). */
function networkError(message: string, fields: { name?: string; code?: string } = {}): Error {
  return Object.assign(new Error(message), fields);
}

describe('sesFailureKind: did SES take the mail?', () => {
  const cases: Array<[string, Error, SesFailure]> = [
    ['v2 throttling (429)', serviceError('TooManyRequestsException', 429), 'not-sent'],
    ['v1 throttling (400)', serviceError('Throttling', 400), 'not-sent'],
    ['503 ServiceUnavailable', serviceError('ServiceUnavailable', 503), 'not-sent'],
    [
      'connection refused',
      networkError('connect ECONNREFUSED 127.0.0.1:443', { code: 'ECONNREFUSED' }),
      'not-sent',
    ],
    [
      'host not found',
      networkError('getaddrinfo ENOTFOUND email.us-east-1.amazonaws.com', { code: 'ENOTFOUND' }),
      'not-sent',
    ],
    [
      'connect timeout',
      networkError(
        '@smithy/node-http-handler - the request socket did not establish a connection with the server within the configured timeout of 5000 ms.',
        { name: 'TimeoutError' },
      ),
      'not-sent',
    ],
    ['MessageRejected (the content)', serviceError('MessageRejected', 400), 'rejected'],
    ['a bad request', serviceError('BadRequestException', 400), 'rejected'],
    ['sending paused', serviceError('SendingPausedException', 400), 'deployment'],
    ['account suspended', serviceError('AccountSuspendedException', 400), 'deployment'],
    ['MAIL FROM not verified', serviceError('MailFromDomainNotVerifiedException', 400), 'deployment'],
    [
      'identity not verified',
      serviceError(
        'MessageRejected',
        400,
        'Email address is not verified. The following identities failed the check in region US-EAST-1: a@x.test',
      ),
      'deployment',
    ],
    ['configuration set missing', serviceError('NotFoundException', 404), 'deployment'],
    ['access denied', serviceError('AccessDeniedException', 403), 'deployment'],
    ['any 403', serviceError('SignatureDoesNotMatch', 403), 'deployment'],
    ['500 InternalFailure', serviceError('InternalFailure', 500), 'unknown'],
    ['502 from a gateway', serviceError('BadGateway', 502), 'unknown'],
    [
      'socket timeout after the request was sent',
      networkError('@smithy/node-http-handler - the request socket timed out after 60000 ms of inactivity', {
        name: 'TimeoutError',
      }),
      'unknown',
    ],
    [
      'connection reset',
      networkError('read ECONNRESET', { name: 'TimeoutError', code: 'ECONNRESET' }),
      'unknown',
    ],
    ['anything else', new Error('socket hang up'), 'unknown'],
  ];
  for (const [what, error, kind] of cases) {
    it(`${what} -> ${kind}`, () => assert.equal(sesFailureKind(error), kind));
  }
});

/**
 * A scripted SESv2Client. A mock, because aws-ses-v2-local cannot drop a connection after it read the request or
 * time out; throttling, 503 and 500 are also covered end to end in test/integration/exactly-once.test.ts.
 */
function scriptedSes(answers: Array<Error | string>): { client: SESv2Client; calls: () => number } {
  let calls = 0;
  const client = {
    send: async () => {
      const answer = answers[calls++];
      if (answer instanceof Error) throw answer;
      return { MessageId: answer ?? 'ok' };
    },
  } as unknown as SESv2Client;
  return { client, calls: () => calls };
}

const noWait: Clock = { now: () => 0, sleep: async () => undefined };
const request = { from: 'bob@example.com', destinations: ['x@external.test'], raw: Buffer.from('x') };

describe('createSesSender: a send is repeated only when SES provably did not take it', () => {
  it('retries throttling and answers with the id of the send that went through', async () => {
    const ses = scriptedSes([
      serviceError('TooManyRequestsException', 429),
      serviceError('ServiceUnavailable', 503),
      'id-3',
    ]);
    assert.equal(await createSesSender(ses.client, { clock: noWait }).send(request), 'id-3');
    assert.equal(ses.calls(), 3);
  });

  it('keeps backing off while SES throttles its rate, slowing the pacer, then counts as a temporary failure', async () => {
    let now = 0;
    const clock: Clock = { now: () => now, sleep: async (ms) => void (now += ms) };
    const ses = scriptedSes(Array.from({ length: 200 }, () => serviceError('TooManyRequestsException', 429)));
    let throttles = 0;
    let permits = 0;
    const pacer = {
      acquire: async () => void permits++,
      throttled: () => void throttles++,
    };
    const error = await createSesSender(ses.client, { clock, attempts: 3, pacer, throttleBudgetMs: 30_000 })
      .send(request)
      .catch((e: unknown) => e);
    assert.ok(error instanceof WorkerError);
    assert.equal(error.code, 'SES_ERROR');
    assert.equal(error.temporary, true);
    assert.ok(ses.calls() > 3, `more tries than the 3 attempts for other failures: ${ses.calls()}`);
    assert.ok(now >= 30_000, 'until the throttle budget ran out');
    assert.equal(throttles, ses.calls(), 'the pacer heard every throttle');
    assert.equal(permits, ses.calls(), 'every try waited for a permit');
  });

  it('does not wait out a daily quota inside one attempt: temporary at once', async () => {
    const quota = Object.assign(serviceError('TooManyRequestsException', 429), {
      message: 'Daily message quota exceeded.',
    });
    const ses = scriptedSes([quota, 'never']);
    const error = await createSesSender(ses.client, { clock: noWait })
      .send(request)
      .catch((e: unknown) => e);
    assert.ok(error instanceof WorkerError);
    assert.equal(error.temporary, true);
    assert.equal(ses.calls(), 1);
  });

  for (const [what, failure] of [
    ['a 500', serviceError('InternalFailure', 500)],
    [
      'a reset after the request was sent',
      networkError('read ECONNRESET', { name: 'TimeoutError', code: 'ECONNRESET' }),
    ],
  ] as const) {
    it(`does not resend after ${what}: the outcome is unknown`, async () => {
      const ses = scriptedSes([failure, 'never']);
      const error = await createSesSender(ses.client, { clock: noWait })
        .send(request)
        .catch((e: unknown) => e);
      assert.ok(error instanceof WorkerError);
      assert.equal(error.code, 'SES_OUTCOME_UNKNOWN');
      assert.equal(error.temporary, false);
      assert.match(error.message, /not resent/);
      assert.equal(ses.calls(), 1);
    });
  }

  it('a rejection is permanent and not retried', async () => {
    const ses = scriptedSes([serviceError('MessageRejected', 400)]);
    const error = await createSesSender(ses.client, { clock: noWait })
      .send(request)
      .catch((e: unknown) => e);
    assert.ok(error instanceof WorkerError);
    assert.equal(error.temporary, false);
    assert.equal(error.awsCode, 'MessageRejected');
    assert.equal(ses.calls(), 1);
  });
});
