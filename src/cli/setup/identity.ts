/**
 * The domain's SES identity (Easy DKIM). Setup can create it but not verify it: verification needs the DKIM
 * records in the domain's DNS, which setup prints and never touches.
 */
import {
  CreateEmailIdentityCommand,
  GetEmailIdentityCommand,
  type DkimAttributes,
} from '@aws-sdk/client-sesv2';

import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';

export async function ensureIdentity(context: SetupContext, domain: string): Promise<SetupItem> {
  context.progress.step(`SES identity ${domain}`);
  const { sesv2 } = context.clients;
  const result = item('SES identity', domain);
  try {
    const identity = await sesv2.send(new GetEmailIdentityCommand({ EmailIdentity: domain }));
    if (identity.VerificationStatus === 'SUCCESS' || identity.VerifiedForSendingStatus === true) {
      result.details.push('verified');
      return result;
    }
    result.warnings.push(
      `not verified yet (${identity.VerificationStatus ?? 'unknown'}): publish its DKIM records`,
    );
    result.records = dkimRecords(domain, identity.DkimAttributes);
    return result;
  } catch (error) {
    if (awsErrorName(error) !== 'NotFoundException') return failed(result, describeError(error));
  }
  try {
    const created = await sesv2.send(new CreateEmailIdentityCommand({ EmailIdentity: domain }));
    result.outcome = 'created';
    result.details.push('Easy DKIM; verified once the DKIM records below are published');
    result.records = dkimRecords(domain, created.DkimAttributes);
  } catch (error) {
    failed(result, `CreateEmailIdentity failed: ${describeError(error)}`);
  }
  return result;
}

function dkimRecords(domain: string, dkim: DkimAttributes | undefined): string[] {
  return (dkim?.Tokens ?? []).map((t) => `${t}._domainkey.${domain}. CNAME ${t}.dkim.amazonses.com`);
}
