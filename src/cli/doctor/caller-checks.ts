/**
 * Who the AWS checks run as, first: without usable credentials every AWS check would fail the same way, so they
 * are skipped and this one line says how to provide credentials.
 */
import {
  CREDENTIALS_HELP,
  classifyCallerError,
  getCallerIdentity,
  type CallerIdentity,
} from '../../aws/caller-identity.ts';
import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import { fail, ok, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';

export interface CallerCheck {
  result: CheckResult;
  caller?: CallerIdentity;
  /** False when the credentials are missing or refused: the AWS checks are skipped. */
  usable: boolean;
}

const CHECK = 'AWS caller';

export async function callerCheck(context: DoctorContext): Promise<CallerCheck> {
  const region = context.config.aws.region;
  try {
    const caller = await call(context, 'STS GetCallerIdentity', (signal) =>
      getCallerIdentity(context.control.sts, signal),
    );
    return {
      result: ok(CHECK, `${caller.arn} (account ${caller.account}), region ${region}`),
      caller,
      usable: true,
    };
  } catch (error) {
    const kind = classifyCallerError(error);
    if (kind === 'no-credentials') {
      return {
        result: fail(CHECK, 'no AWS credentials found: the AWS checks are skipped', CREDENTIALS_HELP),
        usable: false,
      };
    }
    if (kind === 'refused') {
      return {
        result: fail(
          CHECK,
          `AWS refuses the credentials (${awsErrorName(error)}: ${describeError(error).slice(0, 120)}): the AWS checks are skipped`,
          'use a current access key of this account: the one given is wrong, deleted or expired (temporary credentials: get new ones)',
        ),
        usable: false,
      };
    }
    const failure = awsFailure(context, {
      check: CHECK,
      service: 'STS',
      operation: 'GetCallerIdentity',
      permission: 'nothing (GetCallerIdentity needs no permission)',
      error,
    });
    return { result: failure, usable: true };
  }
}
