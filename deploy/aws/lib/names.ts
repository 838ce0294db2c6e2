/**
 * Names the app derives from a domain beyond the daemon's own (queue, bucket: src/aws/resources.ts): its stack and
 * its receipt rule. Both are stable per domain, so adding or removing a domain never renames another one's.
 */
import { createHash } from 'node:crypto';
import { nameFromTemplate } from '../../../src/aws/resources.ts';

/** CloudFormation: a stack name is at most 128 characters. SES: a receipt rule name at most 64. */
const STACK_NAME_MAX = 128;
const RULE_NAME_MAX = 64;

/** `name` cut to `max` characters, its end replaced by a short hash of the whole when it is longer. */
function fit(name: string, max: number): string {
  if (name.length <= max) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, max - hash.length - 1).replace(/-+$/, '')}-${hash}`;
}

/** `unified-worker` + `example.com` → `unified-worker-example-com`: the stack of one domain's resources. */
export function domainStackName(sharedStackName: string, domain: string): string {
  return fit(`${sharedStackName}-${nameFromTemplate('{domain}', domain)}`, STACK_NAME_MAX);
}

/** `example.com` → `example-com-to-worker`: the domain's rule in the receipt rule set. */
export function receiptRuleName(domain: string): string {
  return fit(`${nameFromTemplate('{domain}', domain)}-to-worker`, RULE_NAME_MAX);
}

/** `unified-worker` + 2 → `unified-worker-policy-2`: the stack of the worker's second managed policy, and the policy. */
export function policyName(sharedStackName: string, index: number): string {
  return `${sharedStackName}-policy-${index}`;
}
