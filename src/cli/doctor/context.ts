/**
 * What every doctor check gets: the settings, the AWS clients, the caller (once known), the DNS resolver and the
 * deadline of each call; and the one place that turns a failed AWS call into a check line with a true fix.
 */
import type { AwsClients } from '../../aws/clients.ts';
import type { CallerIdentity } from '../../aws/caller-identity.ts';
import type { ControlClients } from '../../aws/control-clients.ts';
import type { Config } from '../../config/config.ts';
import { awsErrorName, awsHttpStatus } from '../../errors.ts';
import { describeError } from '../command.ts';
import { DeadlineError, withDeadline } from '../deadline.ts';
import { fail, warn, type CheckResult } from './check.ts';
import type { MxResolver } from './mx-resolver.ts';

export interface DoctorContext {
  config: Config;
  clients: AwsClients;
  control: ControlClients;
  /** Deadline of each AWS, DNS and mail server call. */
  timeoutMs: number;
  resolver: MxResolver;
  /** Who the AWS calls run as; undefined when STS did not answer. */
  caller?: CallerIdentity;
}

/** An AWS call under the doctor's deadline. */
export function call<T>(
  context: DoctorContext,
  what: string,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  return withDeadline(context.timeoutMs, what, work);
}

/** The AWS service a call went to, for the "can this host reach it" fix. */
export type AwsService = 'SQS' | 'S3' | 'SNS' | 'SES' | 'DynamoDB' | 'STS';

export interface FailedCall {
  check: string;
  service: AwsService;
  operation: string;
  /** The IAM action doctor needed. */
  permission: string;
  error: unknown;
}

const DENIED = new Set(['AccessDenied', 'AccessDeniedException', 'AuthorizationError', 'Forbidden']);
/** Emulators and partial implementations answer an API they lack this way. */
const UNSUPPORTED = new Set([
  'InvalidAction',
  'UnknownOperationException',
  'UnsupportedOperation',
  'NotImplemented',
]);

export function awsFailure(context: DoctorContext, failed: FailedCall): CheckResult {
  const { check, service, operation, permission, error } = failed;
  const name = awsErrorName(error) ?? '';
  if (error instanceof DeadlineError) {
    return fail(check, error.message, reachFix(context, service));
  }
  if (DENIED.has(name) || awsHttpStatus(error) === 403) {
    const who = context.caller?.arn ?? 'the caller';
    return fail(check, `${operation} denied (${name || '403'})`, `grant ${permission} to ${who}`);
  }
  if (UNSUPPORTED.has(name) || (awsHttpStatus(error) === 404 && !name.endsWith('Exception'))) {
    return warn(
      check,
      `not checked: this ${service} endpoint does not answer ${operation} (${firstLine(error)})`,
      `nothing to fix on an emulator; against AWS (no AWS_ENDPOINT_URL_* override) doctor checks it`,
    );
  }
  return fail(
    check,
    `${operation} failed: ${firstLine(error)}`,
    `AWS answered ${name || 'an error'}; doctor needs ${permission} here and ${service} reachable`,
  );
}

/** The fix for a service that did not answer: the endpoint override, or the network path to AWS. */
export function reachFix(context: DoctorContext, service: AwsService): string {
  const { region, endpoints } = context.config.aws;
  const key = service === 'DynamoDB' ? 'dynamodb' : (service.toLowerCase() as keyof typeof endpoints);
  const endpoint = endpoints[key];
  return endpoint !== undefined
    ? `check that ${endpoint} (the ${service} endpoint override) answers from this host`
    : `check that this host reaches ${service} in ${region} (network, proxy, VPC endpoint)`;
}

function firstLine(error: unknown): string {
  return (describeError(error).split('\n')[0] ?? '').slice(0, 160);
}
