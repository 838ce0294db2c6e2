import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { awsErrorName, ConfigError, isTemporaryAwsError, WorkerError } from '../../src/errors.ts';

/** Shaped like an AWS SDK v3 service exception. */
function awsError(name: string, httpStatusCode?: number, extra: Record<string, unknown> = {}): Error {
  const error = new Error(`${name} happened`);
  error.name = name;
  return Object.assign(error, {
    $fault: httpStatusCode !== undefined && httpStatusCode >= 500 ? 'server' : 'client',
    $metadata: {
      ...(httpStatusCode !== undefined && { httpStatusCode }),
      requestId: 'c4f6b4d2-0000-4000-8000-000000000000',
      attempts: 1,
      totalRetryDelay: 0,
    },
    ...extra,
  });
}

describe('isTemporaryAwsError', () => {
  const throttlingNames = [
    'ThrottlingException',
    'Throttling',
    'ThrottledException',
    'RequestThrottled',
    'TooManyRequestsException',
    'ProvisionedThroughputExceededException',
    'RequestLimitExceeded',
    'SlowDown',
  ];
  for (const name of throttlingNames) {
    it(`treats ${name} with a 400 status as temporary`, () => {
      assert.equal(isTemporaryAwsError(awsError(name, 400)), true);
    });
  }

  it('treats SlowDown with a 503 status as temporary', () => {
    assert.equal(isTemporaryAwsError(awsError('SlowDown', 503)), true);
  });

  for (const status of [500, 502, 503, 504, 599]) {
    it(`treats an HTTP ${status} as temporary`, () => {
      assert.equal(isTemporaryAwsError(awsError('InternalError', status)), true);
    });
  }

  it('treats an HTTP 429 as temporary whatever its name', () => {
    assert.equal(isTemporaryAwsError(awsError('SomethingElse', 429)), true);
  });

  const permanent: Array<[string, number]> = [
    ['ValidationException', 400],
    ['InvalidParameterValue', 400],
    ['AccessDenied', 403],
    ['ExpiredToken', 400],
    ['NoSuchKey', 404],
    ['NoSuchBucket', 404],
    ['ResourceNotFoundException', 400],
    ['ConditionalCheckFailedException', 400],
    ['PreconditionFailed', 412],
    ['MessageRejected', 400],
  ];
  for (const [name, status] of permanent) {
    it(`treats ${name} (${status}) as permanent`, () => {
      assert.equal(isTemporaryAwsError(awsError(name, status)), false);
    });
  }

  it('matches throttling names exactly', () => {
    assert.equal(isTemporaryAwsError(awsError('throttlingexception', 400)), false);
    assert.equal(isTemporaryAwsError(awsError('ThrottlingExceptionX', 400)), false);
  });

  it('treats a 4xx error marked $retryable as temporary', () => {
    assert.equal(isTemporaryAwsError(awsError('ValidationException', 400, { $retryable: {} })), true);
    assert.equal(
      isTemporaryAwsError(awsError('AccessDenied', 403, { $retryable: { throttling: true } })),
      true,
    );
  });

  it('does not count a falsy $retryable', () => {
    assert.equal(isTemporaryAwsError(awsError('ValidationException', 400, { $retryable: undefined })), false);
    assert.equal(isTemporaryAwsError(awsError('ValidationException', 400, { $retryable: false })), false);
  });

  it('treats an error without an HTTP status as a temporary network failure', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4566'), { code: 'ECONNREFUSED' });
    assert.equal(isTemporaryAwsError(refused), true);
    assert.equal(isTemporaryAwsError(awsError('TimeoutError')), true);
    assert.equal(isTemporaryAwsError({ name: 'AccessDenied', $metadata: {} }), true);
  });

  it('treats values that are not objects as temporary', () => {
    assert.equal(isTemporaryAwsError(undefined), true);
    assert.equal(isTemporaryAwsError(null), true);
    assert.equal(isTemporaryAwsError('socket hang up'), true);
    assert.equal(isTemporaryAwsError(503), true);
  });

  it('works on plain objects shaped like SDK errors', () => {
    assert.equal(isTemporaryAwsError({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }), false);
    assert.equal(isTemporaryAwsError({ $metadata: { httpStatusCode: 400 } }), false);
    assert.equal(isTemporaryAwsError({ $metadata: { httpStatusCode: 500 } }), true);
  });
});

describe('awsErrorName', () => {
  it('returns the name of an error-like object', () => {
    assert.equal(awsErrorName(awsError('NoSuchKey', 404)), 'NoSuchKey');
    assert.equal(awsErrorName({ name: 'QueueDoesNotExist' }), 'QueueDoesNotExist');
  });

  it('returns undefined without a string name', () => {
    assert.equal(awsErrorName({ name: 5 }), undefined);
    assert.equal(awsErrorName({}), undefined);
    assert.equal(awsErrorName('NoSuchKey'), undefined);
    assert.equal(awsErrorName(null), undefined);
    assert.equal(awsErrorName(undefined), undefined);
  });
});

describe('WorkerError', () => {
  it('carries code, message, temporary flag, reply code and AWS name', () => {
    const cause = new Error('underlying');
    const error = new WorkerError('SMTP_PERMANENT', '550 no such user', {
      temporary: false,
      responseCode: 550,
      awsCode: 'MessageRejected',
      cause,
    });
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'WorkerError');
    assert.equal(error.code, 'SMTP_PERMANENT');
    assert.equal(error.message, '550 no such user');
    assert.equal(error.temporary, false);
    assert.equal(error.responseCode, 550);
    assert.equal(error.awsCode, 'MessageRejected');
    assert.equal(error.cause, cause);
  });

  it('sets no cause, reply code or AWS name when none were given', () => {
    const error = new WorkerError('SHUTTING_DOWN', 'stopping', { temporary: true });
    assert.equal('cause' in error, false);
    assert.equal(error.responseCode, undefined);
    assert.equal(error.awsCode, undefined);
  });

  it('serialises all fields with toJSON', () => {
    const error = new WorkerError('S3_ERROR', 'GetObject failed: SlowDown', {
      temporary: true,
      responseCode: 503,
      awsCode: 'SlowDown',
      cause: new Error('secret detail'),
    });
    assert.deepEqual(error.toJSON(), {
      code: 'S3_ERROR',
      message: 'GetObject failed: SlowDown',
      temporary: true,
      responseCode: 503,
      awsCode: 'SlowDown',
    });
  });

  it('leaves absent optional fields out of toJSON', () => {
    const error = new WorkerError('MAIL_TOO_LARGE', 'too big', { temporary: false });
    assert.deepEqual(error.toJSON(), { code: 'MAIL_TOO_LARGE', message: 'too big', temporary: false });
    assert.deepEqual(Object.keys(error.toJSON()), ['code', 'message', 'temporary']);
  });

  it('keeps a reply code of 0 in toJSON', () => {
    const error = new WorkerError('SMTP_TEMPORARY', 'odd', { temporary: true, responseCode: 0 });
    assert.deepEqual(error.toJSON(), {
      code: 'SMTP_TEMPORARY',
      message: 'odd',
      temporary: true,
      responseCode: 0,
    });
  });

  it('is what JSON.stringify writes, and survives structured cloning as plain data', () => {
    const error = new WorkerError('SQS_ERROR', 'DeleteMessageBatch failed', {
      temporary: true,
      awsCode: 'Throttling',
    });
    assert.equal(
      JSON.stringify(error),
      '{"code":"SQS_ERROR","message":"DeleteMessageBatch failed","temporary":true,"awsCode":"Throttling"}',
    );
    assert.deepEqual(structuredClone(error.toJSON()), {
      code: 'SQS_ERROR',
      message: 'DeleteMessageBatch failed',
      temporary: true,
      awsCode: 'Throttling',
    });
  });
});

describe('ConfigError', () => {
  it('names the setting and the reason in its message', () => {
    const error = new ConfigError('SMTP_PORT', 'must be an integer between 1 and 65535, got "abc"');
    assert.equal(
      error.message,
      'invalid configuration: SMTP_PORT: must be an integer between 1 and 65535, got "abc"',
    );
    assert.equal(error.setting, 'SMTP_PORT');
  });

  it('is a permanent CONFIG_INVALID WorkerError', () => {
    const error = new ConfigError('AWS_REGION', 'is required');
    assert.ok(error instanceof ConfigError);
    assert.ok(error instanceof WorkerError);
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'ConfigError');
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.equal(error.temporary, false);
    assert.deepEqual(error.toJSON(), {
      code: 'CONFIG_INVALID',
      message: 'invalid configuration: AWS_REGION: is required',
      temporary: false,
    });
  });
});
