/**
 * The receipt rule that stores a domain's mail in its bucket and announces it on its topic. It goes at the end of
 * the active rule set; only when no set is active does setup create (or reuse) RECEIPT_RULE_SET_NAME and activate
 * it, since activating a set switches every other set off. A domain some enabled rule already stores is left alone.
 */
import {
  CreateReceiptRuleCommand,
  CreateReceiptRuleSetCommand,
  DescribeActiveReceiptRuleSetCommand,
  DescribeReceiptRuleSetCommand,
  SetActiveReceiptRuleSetCommand,
  type ReceiptRule,
} from '@aws-sdk/client-ses';

import { findDomainRoute } from '../../aws/receipt-rules.ts';
import { RECEIPT_RULE_SET_NAME, receiptRuleName } from '../../aws/resources.ts';
import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';

/** The active set as setup goes along: rules it adds are appended here too. */
export interface RuleSetState {
  name?: string;
  rules: ReceiptRule[];
}

export async function loadRuleSetState(context: SetupContext): Promise<RuleSetState> {
  const active = await context.control.ses.send(new DescribeActiveReceiptRuleSetCommand({}));
  const name = active.Metadata?.Name;
  return name === undefined ? { rules: [] } : { name, rules: active.Rules ?? [] };
}

/** The topic an existing rule for the domain announces on, so the queue subscribes to that one. */
export function existingTopic(state: RuleSetState, domain: string): string | undefined {
  const finding = findDomainRoute(state.rules, domain);
  return finding.kind === 'route' && finding.topicArn ? finding.topicArn : undefined;
}

export async function ensureReceiptRule(
  context: SetupContext,
  state: RuleSetState,
  target: { domain: string; bucket: string; topicArn: string },
): Promise<SetupItem[]> {
  const { domain } = target;
  context.progress.step(`receipt rule ${domain}`);
  const finding = findDomainRoute(state.rules, domain);
  if (finding.kind === 'route') {
    const existing = item('receipt rule', finding.rule);
    existing.details.push(
      `in ${state.name}: stores ${domain}'s mail${finding.bucket ? ` in ${finding.bucket}` : ''}`,
    );
    if (finding.bucket !== undefined && finding.bucket !== target.bucket) {
      existing.warnings.push(
        `it writes to ${finding.bucket}, not ${target.bucket}: left as it is (doctor checks it)`,
      );
    }
    return [existing];
  }
  const rule = receiptRuleName(domain);
  if (finding.kind === 'stopped') {
    return [
      failed(
        item('receipt rule', rule),
        `not added: rule ${finding.rule} (${finding.action}) in ${state.name} ends SES's work on ${domain}'s mail first`,
      ),
    ];
  }
  if (finding.disabled !== undefined) {
    return [
      failed(
        item('receipt rule', finding.disabled),
        `not changed: it would store ${domain}'s mail but is disabled; enable it`,
      ),
    ];
  }
  const items: SetupItem[] = [];
  if (state.name === undefined) items.push(await activateRuleSet(context, state));
  if (state.name === undefined)
    return [...items, failed(item('receipt rule', rule), 'not added: no active rule set')];
  items.push(await createRule(context, state, { ...target, rule }));
  return items;
}

/** No set is active: create RECEIPT_RULE_SET_NAME (or take the existing one) and activate it. */
async function activateRuleSet(context: SetupContext, state: RuleSetState): Promise<SetupItem> {
  const { ses } = context.control;
  const result = item('receipt rule set', RECEIPT_RULE_SET_NAME);
  try {
    try {
      await ses.send(new CreateReceiptRuleSetCommand({ RuleSetName: RECEIPT_RULE_SET_NAME }));
      result.outcome = 'created';
    } catch (error) {
      if (awsErrorName(error) !== 'AlreadyExistsException' && awsErrorName(error) !== 'AlreadyExists')
        throw error;
      result.outcome = 'updated';
    }
    const existing = await ses.send(
      new DescribeReceiptRuleSetCommand({ RuleSetName: RECEIPT_RULE_SET_NAME }),
    );
    await ses.send(new SetActiveReceiptRuleSetCommand({ RuleSetName: RECEIPT_RULE_SET_NAME }));
    result.details.push('activated (no rule set was active)');
    state.name = RECEIPT_RULE_SET_NAME;
    state.rules = existing.Rules ?? [];
  } catch (error) {
    failed(result, describeError(error));
  }
  return result;
}

async function createRule(
  context: SetupContext,
  state: RuleSetState,
  target: { domain: string; bucket: string; topicArn: string; rule: string },
): Promise<SetupItem> {
  const result = item('receipt rule', target.rule);
  // Re-reading after activation may show the rule already there (a set deployed but never activated).
  const finding = findDomainRoute(state.rules, target.domain);
  if (finding.kind === 'route') {
    result.details.push(`in ${state.name}: stores ${target.domain}'s mail`);
    return result;
  }
  const rule: ReceiptRule = {
    Name: target.rule,
    Enabled: true,
    ScanEnabled: true,
    TlsPolicy: 'Optional',
    Recipients: [target.domain],
    Actions: [{ S3Action: { BucketName: target.bucket, TopicArn: target.topicArn } }],
  };
  const last = state.rules.at(-1)?.Name;
  try {
    await context.control.ses.send(
      new CreateReceiptRuleCommand({
        RuleSetName: state.name,
        Rule: rule,
        ...(last !== undefined && { After: last }),
      }),
    );
    state.rules.push(rule);
    result.outcome = 'created';
    result.details.push(
      `in ${state.name}: S3 ${target.bucket}, SNS ${target.topicArn}, spam and virus scan on`,
    );
  } catch (error) {
    failed(result, `CreateReceiptRule failed: ${describeError(error)}`);
  }
  return result;
}
