/**
 * How SES's active receipt rule set treats a domain's mail, read the way SES applies it: rules in order, a rule
 * applies when its recipients cover the address (none listed = every verified domain), its actions run in order,
 * and a stop or bounce action ends the evaluation. `doctor` reports the finding; `setup` uses it to leave a
 * working rule alone.
 */
import type { ReceiptAction, ReceiptRule } from '@aws-sdk/client-ses';

export type RuleFinding =
  /** The mail is stored (S3) or carried inline (SNS) by `rule`; `topicArn` is where the worker hears of it. */
  | {
      kind: 'route';
      rule: string;
      via: 'S3' | 'SNS';
      bucket?: string;
      prefix?: string;
      topicArn?: string;
      /** Earlier rules that catch only some addresses of the domain (`user@domain`). */
      partial: string[];
    }
  /** An earlier rule stops or bounces the domain's mail before any rule stores it. */
  | { kind: 'stopped'; rule: string; action: 'Stop' | 'Bounce' }
  /** No enabled rule stores it; `disabled` names a disabled rule that would have. */
  | { kind: 'none'; disabled?: string; partial: string[] };

/** 'all': every address of the domain; 'some': named addresses only; 'none'. */
export function ruleCoverage(
  recipients: readonly string[] | undefined,
  domain: string,
): 'all' | 'some' | 'none' {
  if (recipients === undefined || recipients.length === 0) return 'all';
  const d = domain.toLowerCase();
  let some = false;
  for (const raw of recipients) {
    const recipient = raw.toLowerCase();
    if (recipient === d) return 'all';
    // `.example.com` covers every subdomain of example.com, not example.com itself.
    if (recipient.startsWith('.') && d.endsWith(recipient)) return 'all';
    if (recipient.endsWith(`@${d}`)) some = true;
  }
  return some ? 'some' : 'none';
}

export function findDomainRoute(rules: readonly ReceiptRule[], domain: string): RuleFinding {
  const partial: string[] = [];
  let disabled: string | undefined;
  for (const rule of rules) {
    const name = rule.Name ?? '(unnamed)';
    const coverage = ruleCoverage(rule.Recipients, domain);
    if (coverage === 'none') continue;
    if (rule.Enabled !== true) {
      if (coverage === 'all') disabled ??= name;
      continue;
    }
    const outcome = applyActions(rule.Actions ?? [], name);
    if (outcome === undefined) continue;
    if (coverage === 'some') {
      partial.push(name);
      continue;
    }
    return outcome.kind === 'route' ? { ...outcome, partial } : outcome;
  }
  return { kind: 'none', ...(disabled !== undefined && { disabled }), partial };
}

/** The first action that stores, carries or stops the mail; undefined when the rule does none of these. */
function applyActions(
  actions: readonly ReceiptAction[],
  rule: string,
): Exclude<RuleFinding, { kind: 'none' }> | undefined {
  for (const action of actions) {
    if (action.S3Action) {
      const s3 = action.S3Action;
      // A later SNS action in the same rule would also announce the mail, with its content inline.
      const topicArn = s3.TopicArn ?? actions.find((a) => a.SNSAction)?.SNSAction?.TopicArn;
      return {
        kind: 'route',
        rule,
        via: 'S3',
        ...(s3.BucketName !== undefined && { bucket: s3.BucketName }),
        ...(s3.ObjectKeyPrefix && { prefix: s3.ObjectKeyPrefix }),
        ...(topicArn !== undefined && { topicArn }),
        partial: [],
      };
    }
    if (action.SNSAction) {
      return { kind: 'route', rule, via: 'SNS', topicArn: action.SNSAction.TopicArn ?? '', partial: [] };
    }
    if (action.StopAction) return { kind: 'stopped', rule, action: 'Stop' };
    if (action.BounceAction) return { kind: 'stopped', rule, action: 'Bounce' };
  }
  return undefined;
}

/** `arn:aws:ses:region:account:receipt-rule-set/SET:receipt-rule/RULE`, what SES sends as aws:SourceArn. */
export function receiptRuleArn(options: {
  partition: string;
  region: string;
  account: string;
  ruleSet: string;
  rule: string;
}): string {
  const { partition, region, account, ruleSet, rule } = options;
  return `arn:${partition}:ses:${region}:${account}:receipt-rule-set/${ruleSet}:receipt-rule/${rule}`;
}
