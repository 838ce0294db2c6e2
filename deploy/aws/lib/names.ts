/**
 * Names the app derives from a domain beyond the daemon's own (queue, bucket: src/aws/resources.ts): its stack and
 * its receipt rule. Both are stable per domain, so adding or removing a domain never renames another one's.
 */
import { fitName, nameFromTemplate } from '../../../src/aws/resources.ts';

export { receiptRuleName } from '../../../src/aws/resources.ts';

/** CloudFormation: a stack name is at most 128 characters. */
const STACK_NAME_MAX = 128;

/** `unified-worker` + `example.com` → `unified-worker-example-com`: the stack of one domain's resources. */
export function domainStackName(sharedStackName: string, domain: string): string {
  return fitName(`${sharedStackName}-${nameFromTemplate('{domain}', domain)}`, STACK_NAME_MAX);
}

/** `unified-worker` + 2 → `unified-worker-policy-2`: the stack of the worker's second managed policy, and the policy. */
export function policyName(sharedStackName: string, index: number): string {
  return `${sharedStackName}-policy-${index}`;
}
