/**
 * How doctor turns a failed AWS call into a check line (src/cli/doctor/context.ts `awsFailure`): the fix must be
 * true for the failure at hand: a permission to grant, an endpoint to reach, nothing on an emulator.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { DoctorContext } from '../../src/cli/doctor/context.ts';
import { awsFailure } from '../../src/cli/doctor/context.ts';
import { DeadlineError } from '../../src/cli/deadline.ts';
import { buildConfig } from '../../src/config/config.ts';

/** awsFailure reads only the settings and the caller. */
function context(env: Record<string, string> = {}): DoctorContext {
  return {
    config: buildConfig({ DOMAINS: 'example.com', AWS_REGION: 'eu-west-1', ...env }),
    caller: { account: '123456789012', arn: 'arn:aws:iam::123456789012:user/ops', partition: 'aws' },
    timeoutMs: 10_000,
  } as DoctorContext;
}

function sdkError(name: string, status: number, message = 'x'): Error {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

const call = {
  check: 'bucket policy b',
  service: 'S3' as const,
  operation: 'GetBucketPolicy',
  permission: 's3:GetBucketPolicy',
};

describe('awsFailure', () => {
  it('denied: grant the action to the caller', () => {
    for (const error of [
      sdkError('AccessDenied', 403),
      sdkError('AccessDeniedException', 400),
      sdkError('Whatever', 403),
    ]) {
      const line = awsFailure(context(), { ...call, error });
      assert.equal(line.status, 'fail');
      assert.equal(line.fix, 'grant s3:GetBucketPolicy to arn:aws:iam::123456789012:user/ops');
    }
  });

  it('no answer in time: the network path, or the endpoint override when there is one', () => {
    const error = new DeadlineError('S3 GetBucketPolicy b', 10_000);
    const aws = awsFailure(context(), { ...call, error });
    assert.deepEqual(
      [aws.status, aws.detail, aws.fix],
      [
        'fail',
        'no answer to S3 GetBucketPolicy b within 10 s',
        'check that this host reaches S3 in eu-west-1 (network, proxy, VPC endpoint)',
      ],
    );
    const local = awsFailure(context({ AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:4566' }), { ...call, error });
    assert.equal(
      local.fix,
      'check that http://127.0.0.1:4566 (the S3 endpoint override) answers from this host',
    );
  });

  it('an endpoint without the API (an emulator): a warning, not a failure', () => {
    for (const error of [sdkError('InvalidAction', 400), sdkError('UnknownError', 404)]) {
      const line = awsFailure(context(), { ...call, error });
      assert.equal(line.status, 'warn');
      assert.match(line.detail, /^not checked: this S3 endpoint does not answer GetBucketPolicy/);
    }
  });

  it("anything else: AWS's answer, and what doctor needed", () => {
    const line = awsFailure(context(), {
      ...call,
      error: sdkError('InternalError', 500, 'We encountered an internal error'),
    });
    assert.equal(line.status, 'fail');
    assert.equal(line.detail, 'GetBucketPolicy failed: InternalError: We encountered an internal error');
    assert.equal(
      line.fix,
      'AWS answered InternalError; doctor needs s3:GetBucketPolicy here and S3 reachable',
    );
  });
});
