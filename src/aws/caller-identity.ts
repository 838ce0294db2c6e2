/**
 * Who the AWS calls run as (STS GetCallerIdentity, which needs no IAM permission), and what a failure of it means:
 * no credentials at all, credentials AWS refuses, or anything else (network, endpoint).
 */
import { GetCallerIdentityCommand, type STSClient } from '@aws-sdk/client-sts';

import { awsErrorName } from '../errors.ts';

export interface CallerIdentity {
  account: string;
  arn: string;
  /** `aws`, `aws-cn`, `aws-us-gov`: the first field of every ARN in this account. */
  partition: string;
}

export type CallerFailure = 'no-credentials' | 'refused' | 'other';

/** How to give the worker credentials, for the message that says it has none. */
export const CREDENTIALS_HELP =
  'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (e.g. in .env), or AWS_PROFILE naming a profile in ' +
  '~/.aws/credentials, or run with an IAM role (EC2 instance profile, ECS task role, EKS IRSA or Pod Identity)';

/** Errors of the credential chain and of STS that say the credentials are missing or not accepted. */
const REFUSED = new Set([
  'InvalidClientTokenId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'UnrecognizedClientException',
  'InvalidAccessKeyId',
]);

export async function getCallerIdentity(sts: STSClient, signal?: AbortSignal): Promise<CallerIdentity> {
  const answer = await sts.send(new GetCallerIdentityCommand({}), { abortSignal: signal });
  const arn = answer.Arn ?? '';
  return { account: answer.Account ?? '', arn, partition: arn.split(':')[1] || 'aws' };
}

export function classifyCallerError(error: unknown): CallerFailure {
  const name = awsErrorName(error) ?? '';
  if (name === 'CredentialsProviderError') return 'no-credentials';
  if (error instanceof Error && /Could not load credentials from any providers/i.test(error.message)) {
    return 'no-credentials';
  }
  return REFUSED.has(name) ? 'refused' : 'other';
}
