/**
 * Does SES do something with a domain's mail? The active receipt rule set must have an enabled rule for the
 * domain that stores the mail in S3 and announces it on an SNS topic, with no earlier rule stopping it. The
 * rule set is read once for all domains; the set `setup` and the AWS template create is read too when it is not
 * the active one, because "deployed but never activated" is the usual reason.
 */
import {
  DescribeActiveReceiptRuleSetCommand,
  DescribeReceiptRuleSetCommand,
  type ReceiptRule,
} from '@aws-sdk/client-ses';

import { findDomainRoute, type RuleFinding } from '../../aws/receipt-rules.ts';
import {
  RECEIPT_RULE_SET_NAME,
  nameFromTemplate,
  notificationTopicName,
  receiptRuleName,
} from '../../aws/resources.ts';
import { notificationSourcesFor } from '../../config/config.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';

export interface RuleSets {
  /** The active set's name and rules; undefined when no set is active. */
  active?: { name: string; rules: ReceiptRule[] };
  /** RECEIPT_RULE_SET_NAME's rules when it exists and is not the active set. */
  inactive?: ReceiptRule[];
}

export type RuleSetLookup = { ok: true; sets: RuleSets } | { ok: false; error: unknown };

export async function loadRuleSets(context: DoctorContext): Promise<RuleSetLookup> {
  const { ses } = context.control;
  try {
    const active = await call(context, 'SES DescribeActiveReceiptRuleSet', (signal) =>
      ses.send(new DescribeActiveReceiptRuleSetCommand({}), { abortSignal: signal }),
    );
    const name = active.Metadata?.Name;
    const sets: RuleSets = name === undefined ? {} : { active: { name, rules: active.Rules ?? [] } };
    if (name !== RECEIPT_RULE_SET_NAME) {
      const inactive = await describeRuleSet(context, RECEIPT_RULE_SET_NAME);
      if (inactive !== undefined) sets.inactive = inactive;
    }
    return { ok: true, sets };
  } catch (error) {
    return { ok: false, error };
  }
}

async function describeRuleSet(context: DoctorContext, name: string): Promise<ReceiptRule[] | undefined> {
  try {
    const set = await call(context, `SES DescribeReceiptRuleSet ${name}`, (signal) =>
      context.control.ses.send(new DescribeReceiptRuleSetCommand({ RuleSetName: name }), {
        abortSignal: signal,
      }),
    );
    return set.Rules ?? [];
  } catch {
    // Only read to make a better fix (RuleSetDoesNotExist is the usual answer); the active set decides the verdict.
    return undefined;
  }
}

export interface ReceiptCheck {
  result: CheckResult;
  /** Where SES puts the domain's mail, when a rule does. */
  route?: Extract<RuleFinding, { kind: 'route' }> & { ruleSet: string };
}

export function receiptRuleCheck(
  context: DoctorContext,
  domain: string,
  lookup: RuleSetLookup,
): ReceiptCheck {
  const check = `receipt rule ${domain}`;
  if (!lookup.ok) {
    const result = awsFailure(context, {
      check,
      service: 'SES',
      operation: 'DescribeActiveReceiptRuleSet',
      permission: 'ses:DescribeActiveReceiptRuleSet and ses:DescribeReceiptRuleSet',
      error: lookup.error,
    });
    return { result };
  }
  const { active, inactive } = lookup.sets;
  if (active === undefined) return { result: noActiveSet(context, check, domain, inactive) };
  const finding = findDomainRoute(active.rules, domain);
  if (finding.kind === 'stopped') {
    return {
      result: fail(
        check,
        `rule ${finding.rule} (${finding.action} action) in ${active.name} ends SES's work on ${domain}'s mail before any rule stores it`,
        `move the rule that stores ${domain}'s mail above ${finding.rule}, or take ${domain} out of ${finding.rule}'s recipients`,
      ),
    };
  }
  if (finding.kind === 'none') return { result: noRule(check, domain, active.name, finding, inactive) };
  return {
    result: routeCheck(context, check, domain, active.name, finding),
    route: { ...finding, ruleSet: active.name },
  };
}

function noActiveSet(
  context: DoctorContext,
  check: string,
  domain: string,
  inactive: ReceiptRule[] | undefined,
): CheckResult {
  const region = context.config.aws.region;
  const detail = `no receipt rule set is active in ${region}: SES accepts mail for none of the domains`;
  if (inactive !== undefined && findDomainRoute(inactive, domain).kind === 'route') {
    return fail(
      check,
      `${detail} (the set ${RECEIPT_RULE_SET_NAME} has a rule for ${domain} but is not active)`,
      `aws ses set-active-receipt-rule-set --rule-set-name ${RECEIPT_RULE_SET_NAME} --region ${region}`,
    );
  }
  return fail(
    check,
    detail,
    `unified-worker setup --domains ${domain} (creates the rule set ${RECEIPT_RULE_SET_NAME} with a rule for ${domain} and activates it)`,
  );
}

function noRule(
  check: string,
  domain: string,
  activeName: string,
  finding: Extract<RuleFinding, { kind: 'none' }>,
  inactive: ReceiptRule[] | undefined,
): CheckResult {
  if (finding.disabled !== undefined) {
    return fail(
      check,
      `rule ${finding.disabled} in ${activeName} would store ${domain}'s mail but is disabled`,
      `enable rule ${finding.disabled} (SES console: Email receiving, rule set ${activeName})`,
    );
  }
  const partial = finding.partial.length > 0 ? ` (only some addresses: ${finding.partial.join(', ')})` : '';
  const elsewhere = inactive !== undefined ? findDomainRoute(inactive, domain) : undefined;
  if (elsewhere?.kind === 'route') {
    return fail(
      check,
      `the active rule set ${activeName} has no rule for ${domain}${partial}; its rule ${elsewhere.rule} is in ${RECEIPT_RULE_SET_NAME}, which is not active`,
      `add the rule to ${activeName} (unified-worker setup --domains ${domain} does), or make ${RECEIPT_RULE_SET_NAME} the active set if it holds every rule you need (only one set is active)`,
    );
  }
  return fail(
    check,
    `the active rule set ${activeName} has no enabled rule that stores ${domain}'s mail${partial}`,
    `unified-worker setup --domains ${domain} (adds the rule ${receiptRuleName(domain)} to ${activeName})`,
  );
}

function routeCheck(
  context: DoctorContext,
  check: string,
  domain: string,
  ruleSet: string,
  route: Extract<RuleFinding, { kind: 'route' }>,
): CheckResult {
  const { config } = context;
  const queue = nameFromTemplate(config.queueNameTemplate, domain);
  const where = `rule ${route.rule} in ${ruleSet}`;
  if (route.topicArn === undefined || route.topicArn === '') {
    return fail(
      check,
      `${where} stores ${domain}'s mail in ${route.bucket ?? '?'} but announces it on no SNS topic: the worker never hears of it`,
      `give the rule's S3 action the SNS topic that ${queue} subscribes to (unified-worker setup creates ${notificationTopicName(queue)})`,
    );
  }
  const sources = notificationSourcesFor(config, domain);
  if (sources.topicArns.length > 0 && !sources.topicArns.includes(route.topicArn)) {
    return fail(
      check,
      `${where} announces on ${route.topicArn}, which ALLOWED_TOPIC_ARNS does not list: the worker sends every such mail to the dead-letter queue`,
      `add ${route.topicArn} to ALLOWED_TOPIC_ARNS`,
    );
  }
  if (route.via === 'SNS') {
    return warn(
      check,
      `${where} sends ${domain}'s mail inline through SNS (${route.topicArn}): SES bounces mail over 150 KB`,
      `replace the SNS action by an S3 action (bucket ${nameFromTemplate(config.bucketNameTemplate, domain)}, topic ${route.topicArn})`,
    );
  }
  return bucketNotes(context, check, domain, where, route);
}

function bucketNotes(
  context: DoctorContext,
  check: string,
  domain: string,
  where: string,
  route: Extract<RuleFinding, { kind: 'route' }>,
): CheckResult {
  const { config } = context;
  const bucket = route.bucket ?? '';
  const sources = notificationSourcesFor(config, domain);
  if (sources.buckets.length > 0 && !sources.buckets.includes(bucket)) {
    return fail(
      check,
      `${where} stores the mail in ${bucket}, which is not ${domain}'s bucket (BUCKET_NAME_TEMPLATE) and ALLOWED_MAIL_BUCKETS does not list: the worker sends every such mail to the dead-letter queue`,
      `set BUCKET_NAME_TEMPLATE so that it gives ${bucket}, or add ${bucket} to ALLOWED_MAIL_BUCKETS`,
    );
  }
  const detail = `${where}: S3 ${bucket}${route.prefix ? `/${route.prefix}` : ''}, SNS ${route.topicArn}`;
  const partial =
    route.partial.length > 0 ? `; earlier rules take some addresses: ${route.partial.join(', ')}` : '';
  const template = nameFromTemplate(config.bucketNameTemplate, domain);
  if (bucket !== template) {
    return warn(
      check,
      `${detail}; BUCKET_NAME_TEMPLATE gives ${template}, so replay and inject look in the wrong bucket${partial}`,
      `set BUCKET_NAME_TEMPLATE so that it gives ${bucket}`,
    );
  }
  return route.partial.length > 0
    ? warn(
        check,
        `${detail}${partial}`,
        'make sure those rules also store the mail for the worker, or remove them',
      )
    : ok(check, detail);
}
