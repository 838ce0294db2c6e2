/**
 * SES itself: the account may send (forwards, auto-replies, the relay), and each domain is a verified identity
 * (SES receives only for verified domains and sends only from them) whose DKIM records are in place.
 */
import {
  GetAccountCommand,
  GetEmailIdentityCommand,
  type GetEmailIdentityResponse,
} from '@aws-sdk/client-sesv2';

import { awsErrorName } from '../../errors.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';

export async function sesAccountCheck(context: DoctorContext): Promise<CheckResult> {
  const check = 'SES account';
  try {
    const account = await call(context, 'SES GetAccount', (signal) =>
      context.clients.sesv2.send(new GetAccountCommand({}), { abortSignal: signal }),
    );
    if (account.SendingEnabled === false) {
      return fail(
        check,
        'sending is disabled: forwards, auto-replies and the relay through SES fail',
        'see the SES console, Account dashboard: sending was paused (a review may be open)',
      );
    }
    if (account.ProductionAccessEnabled === false) {
      return warn(
        check,
        'in the SES sandbox: forwards and auto-replies reach only verified addresses',
        'request production access in the SES console (Account dashboard)',
      );
    }
    const rate = account.SendQuota?.MaxSendRate;
    return ok(check, `sending enabled, production access${rate !== undefined ? `, ${rate} mails/s` : ''}`);
  } catch (error) {
    return awsFailure(context, {
      check,
      service: 'SES',
      operation: 'GetAccount',
      permission: 'ses:GetAccount',
      error,
    });
  }
}

/** The identity line and the DKIM line of one domain. */
export async function sesIdentityChecks(context: DoctorContext, domain: string): Promise<CheckResult[]> {
  const check = `SES identity ${domain}`;
  const region = context.config.aws.region;
  let identity: GetEmailIdentityResponse;
  try {
    identity = await call(context, `SES GetEmailIdentity ${domain}`, (signal) =>
      context.clients.sesv2.send(new GetEmailIdentityCommand({ EmailIdentity: domain }), {
        abortSignal: signal,
      }),
    );
  } catch (error) {
    if (awsErrorName(error) === 'NotFoundException') {
      return [
        fail(
          check,
          `not an SES identity in ${region}: SES neither receives mail for ${domain} nor sends from it`,
          `unified-worker setup --domains ${domain} (creates it and prints the DKIM records to publish)`,
        ),
      ];
    }
    return [
      awsFailure(context, {
        check,
        service: 'SES',
        operation: 'GetEmailIdentity',
        permission: 'ses:GetEmailIdentity',
        error,
      }),
    ];
  }
  return [verificationCheck(check, domain, identity), dkimCheck(domain, identity)];
}

function verificationCheck(check: string, domain: string, identity: GetEmailIdentityResponse): CheckResult {
  const status = identity.VerificationStatus ?? (identity.VerifiedForSendingStatus ? 'SUCCESS' : 'unknown');
  if (status === 'SUCCESS' || identity.VerifiedForSendingStatus === true) {
    return ok(check, 'verified: SES receives mail for it and sends from it');
  }
  if (status === 'TEMPORARY_FAILURE') {
    return warn(
      check,
      'verification hit a temporary DNS failure; SES keeps trying',
      'nothing to do if the DKIM records are published; otherwise publish them (see the DKIM line)',
    );
  }
  const records = dkimRecords(domain, identity);
  return fail(
    check,
    `not verified (${status}): SES neither receives mail for ${domain} nor sends from it`,
    status === 'FAILED'
      ? `publish ${records}, then restart the verification in the SES console (Identities, ${domain})`
      : `publish ${records}; SES verifies the domain once it finds them`,
  );
}

function dkimCheck(domain: string, identity: GetEmailIdentityResponse): CheckResult {
  const check = `DKIM ${domain}`;
  const dkim = identity.DkimAttributes;
  const status = dkim?.Status ?? 'NOT_STARTED';
  if (status === 'SUCCESS') {
    return dkim?.SigningEnabled === false
      ? warn(
          check,
          'records found, but signing is off: mail from it is not DKIM-signed',
          'enable DKIM signing for the identity in the SES console',
        )
      : ok(check, 'records found, mail is signed');
  }
  const records = dkimRecords(domain, identity);
  if (status === 'PENDING' || status === 'TEMPORARY_FAILURE') {
    return warn(
      check,
      `${status}: SES has not found the records yet`,
      `publish ${records} (SES checks for up to 72 hours)`,
    );
  }
  return fail(
    check,
    `${status}: mail sent from ${domain} is not signed, and the domain does not verify`,
    `publish ${records}, then restart the verification in the SES console`,
  );
}

/** The CNAME records SES's Easy DKIM asks for. */
function dkimRecords(domain: string, identity: GetEmailIdentityResponse): string {
  const tokens = identity.DkimAttributes?.Tokens ?? [];
  if (tokens.length === 0) return `the DKIM CNAME records the SES console shows for ${domain}`;
  return tokens.map((t) => `${t}._domainkey.${domain} CNAME ${t}.dkim.amazonses.com`).join(', ');
}
