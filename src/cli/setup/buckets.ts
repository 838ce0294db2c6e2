/**
 * A domain's mail bucket, and the bucket policy statement that lets this account's SES write into it. An existing
 * policy keeps every statement it has; the SES statement is added only when nothing there allows SES already.
 */
import {
  CreateBucketCommand,
  GetBucketPolicyCommand,
  HeadBucketCommand,
  PutBucketPolicyCommand,
  type BucketLocationConstraint,
} from '@aws-sdk/client-s3';

import {
  evaluatePolicy,
  parsePolicy,
  sesWriteRequest,
  sesWriteStatement,
  withStatement,
  type PolicyDocument,
} from '../../aws/policies.ts';
import { awsErrorName, awsHttpStatus } from '../../errors.ts';
import { describeError } from '../command.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';

export async function ensureBucket(context: SetupContext, bucket: string): Promise<SetupItem> {
  context.progress.step(`bucket ${bucket}`);
  const { s3 } = context.clients;
  const result = item('bucket', bucket);
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return result;
  } catch (error) {
    const status = awsHttpStatus(error);
    if (status === 403) {
      return failed(
        result,
        'exists but this account may not read it (another account owns the name, or s3:ListBucket is missing)',
      );
    }
    if (status !== 404) return failed(result, `HeadBucket failed: ${describeError(error)}`);
  }
  const region = context.config.aws.region;
  try {
    await s3.send(
      new CreateBucketCommand({
        Bucket: bucket,
        // us-east-1 is the one region that must not be named.
        ...(region !== 'us-east-1' && {
          CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint },
        }),
      }),
    );
    result.outcome = 'created';
    result.details.push(`in ${region}`);
  } catch (error) {
    failed(result, `CreateBucket failed: ${describeError(error)}`);
  }
  return result;
}

export async function ensureBucketPolicy(context: SetupContext, bucket: string): Promise<SetupItem> {
  context.progress.step(`bucket policy ${bucket}`);
  const { s3 } = context.clients;
  const { account, partition } = context.caller;
  const result = item('bucket policy', bucket);
  let policy: PolicyDocument | undefined;
  try {
    const answer = await s3.send(new GetBucketPolicyCommand({ Bucket: bucket }));
    policy = parsePolicy(answer.Policy ?? '');
  } catch (error) {
    if (awsErrorName(error) !== 'NoSuchBucketPolicy')
      return failed(result, `not changed: ${describeError(error)}`);
  }
  if (policy !== undefined) {
    const verdict = evaluatePolicy(policy, sesWriteRequest({ bucket, account, partition }));
    if (verdict.kind === 'allowed') {
      if (!verdict.scoped) {
        result.warnings.push(
          `statement ${verdict.statement} lets the SES of any AWS account write: add StringEquals aws:SourceAccount = ${account}`,
        );
      }
      return result;
    }
    if (verdict.kind === 'denied') {
      return failed(result, `not changed: statement ${verdict.statement} denies SES's s3:PutObject`);
    }
    if (verdict.kind === 'not-evaluated') {
      result.warnings.push(
        `left as it is: statement ${verdict.statement}: ${verdict.reason} (doctor says the same)`,
      );
      return result;
    }
  }
  try {
    const next = withStatement(policy, sesWriteStatement(bucket, account, partition));
    await s3.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(next) }));
    result.outcome = policy === undefined ? 'created' : 'updated';
    result.details.push(`lets SES of account ${account} write (s3:PutObject)`);
  } catch (error) {
    failed(result, `PutBucketPolicy failed: ${describeError(error)}`);
  }
  return result;
}
