/**
 * The bucket SES stores a domain's mail in: it exists and this account reads it, and its policy lets this
 * account's SES write (service principal ses.amazonaws.com, tied to the account by aws:SourceAccount).
 */
import { GetBucketPolicyCommand, HeadBucketCommand } from '@aws-sdk/client-s3';

import { evaluatePolicy, parsePolicy, sesWriteRequest, type PolicyVerdict } from '../../aws/policies.ts';
import { receiptRuleArn } from '../../aws/receipt-rules.ts';
import { awsErrorName, awsHttpStatus } from '../../errors.ts';
import { describeError } from '../command.ts';
import { fail, ok, skip, warn, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';

/** Where SES writes, as the receipt rule says (or BUCKET_NAME_TEMPLATE when no rule names one). */
export interface MailBucket {
  domain: string;
  bucket: string;
  prefix?: string;
  /** The rule that writes into it, with its rule set, when known. */
  rule?: { ruleSet: string; name: string };
}

export async function bucketChecks(context: DoctorContext, target: MailBucket): Promise<CheckResult[]> {
  const exists = await bucketExists(context, target);
  if (exists.status !== 'ok') return [exists];
  return [exists, await bucketPolicyCheck(context, target)];
}

async function bucketExists(context: DoctorContext, target: MailBucket): Promise<CheckResult> {
  const { bucket, domain } = target;
  const check = `bucket ${bucket}`;
  try {
    await call(context, `S3 HeadBucket ${bucket}`, (signal) =>
      context.clients.s3.send(new HeadBucketCommand({ Bucket: bucket }), { abortSignal: signal }),
    );
    return ok(check, 'exists and is readable');
  } catch (error) {
    const status = awsHttpStatus(error);
    if (status === 404) {
      return fail(
        check,
        `does not exist: SES cannot store ${domain}'s mail`,
        `unified-worker setup --domains ${domain}, or set BUCKET_NAME_TEMPLATE to the bucket your receipt rule writes to`,
      );
    }
    if (status === 403) {
      return fail(
        check,
        'exists, but this caller may not read it (another account owns the name, or s3:ListBucket is missing)',
        `grant s3:ListBucket on it to ${context.caller?.arn ?? 'the caller'}; if another account owns the name, choose another BUCKET_NAME_TEMPLATE`,
      );
    }
    return awsFailure(context, {
      check,
      service: 'S3',
      operation: 'HeadBucket',
      permission: 's3:ListBucket',
      error,
    });
  }
}

async function bucketPolicyCheck(context: DoctorContext, target: MailBucket): Promise<CheckResult> {
  const { bucket, domain } = target;
  const check = `bucket policy ${bucket}`;
  const caller = context.caller;
  if (caller === undefined) return skip(check, 'not checked: the account is unknown (STS did not answer)');
  const setupFix = `unified-worker setup --domains ${domain} (adds a statement that does)`;
  let text: string;
  try {
    const answer = await call(context, `S3 GetBucketPolicy ${bucket}`, (signal) =>
      context.clients.s3.send(new GetBucketPolicyCommand({ Bucket: bucket }), { abortSignal: signal }),
    );
    text = answer.Policy ?? '';
  } catch (error) {
    if (awsErrorName(error) === 'NoSuchBucketPolicy') {
      return fail(check, `none: SES may not write ${domain}'s mail into the bucket`, setupFix);
    }
    return awsFailure(context, {
      check,
      service: 'S3',
      operation: 'GetBucketPolicy',
      permission: 's3:GetBucketPolicy',
      error,
    });
  }
  let verdict: PolicyVerdict;
  try {
    verdict = evaluatePolicy(
      parsePolicy(text),
      sesWriteRequest({
        bucket,
        ...(target.prefix !== undefined && { prefix: target.prefix }),
        account: caller.account,
        partition: caller.partition,
        ...(target.rule && {
          ruleArn: receiptRuleArn({
            partition: caller.partition,
            region: context.config.aws.region,
            account: caller.account,
            ruleSet: target.rule.ruleSet,
            rule: target.rule.name,
          }),
        }),
      }),
    );
  } catch (error) {
    return fail(check, `cannot be read: ${describeError(error)}`, 'replace it with a valid policy document');
  }
  return bucketVerdict(check, verdict, caller.account, setupFix);
}

function bucketVerdict(
  check: string,
  verdict: PolicyVerdict,
  account: string,
  setupFix: string,
): CheckResult {
  switch (verdict.kind) {
    case 'allowed':
      return verdict.scoped
        ? ok(check, `statement ${verdict.statement} lets this account's SES write the mail`)
        : warn(
            check,
            `statement ${verdict.statement} lets the SES of any AWS account write into the bucket`,
            `add the condition StringEquals aws:SourceAccount = ${account} to it`,
          );
    case 'denied':
      return fail(
        check,
        `statement ${verdict.statement} denies SES's s3:PutObject`,
        `remove or narrow statement ${verdict.statement}`,
      );
    case 'not-allowed':
      return verdict.near
        ? fail(
            check,
            `statement ${verdict.near.statement} lets SES write only under ${verdict.near.condition}, which this account (${account}) does not meet`,
            `correct that condition (aws:SourceAccount = ${account}), or ${setupFix}`,
          )
        : fail(check, 'no statement lets SES (ses.amazonaws.com) s3:PutObject into it', setupFix);
    case 'not-evaluated':
      return warn(
        check,
        `not evaluated: statement ${verdict.statement}: ${verdict.reason}`,
        `make sure it lets ses.amazonaws.com s3:PutObject with aws:SourceAccount = ${account}`,
      );
  }
}
