/**
 * One domain's mail path, in the order the mail takes it: MX → SES (receipt rule, identity) → bucket (and the
 * policy that lets SES write) → queue (redrive) → its subscription to the rule's topic and the policy letting the
 * topic send.
 */
import { nameFromTemplate } from '../../aws/resources.ts';
import { domainQueueNames } from '../queues.ts';
import { bucketChecks, type MailBucket } from './bucket-checks.ts';
import { skip, type CheckResult } from './check.ts';
import type { DoctorContext } from './context.ts';
import { mxCheck } from './mx-checks.ts';
import { queueChecks } from './queue-checks.ts';
import { receiptRuleCheck, type ReceiptCheck, type RuleSetLookup } from './receipt-checks.ts';
import { sesIdentityChecks } from './ses-checks.ts';
import { subscriptionChecks } from './subscription-checks.ts';

export async function domainChecks(
  context: DoctorContext,
  domain: string,
  rules: RuleSetLookup,
): Promise<CheckResult[]> {
  const { config } = context;
  const receipt = receiptRuleCheck(context, domain, rules);
  const names = domainQueueNames(config, domain);
  const setupFix = `unified-worker setup --domains ${domain}`;
  const [mx, identity, bucket, queue] = await Promise.all([
    mxCheck(context, domain),
    sesIdentityChecks(context, domain),
    bucketChecks(context, mailBucket(context, domain, receipt)),
    queueChecks(context, names, {
      missingWhy: `${domain}'s mail is not received (QUEUE_NAME_TEMPLATE=${config.queueNameTemplate})`,
      missingFix: `${setupFix}, or set QUEUE_NAME_TEMPLATE to your queue's name`,
      setupFix,
    }),
  ]);
  const topicArn = receipt.route?.topicArn;
  let subscription: CheckResult[];
  if (topicArn === undefined || topicArn === '') {
    subscription = [
      skip(`subscription ${names.queue}`, 'not checked: no receipt rule names a topic for it (see above)'),
    ];
  } else if (queue.facts === undefined) {
    subscription = [
      skip(`subscription ${names.queue}`, 'not checked: the queue could not be read (see above)'),
    ];
  } else {
    const { arn, policy } = queue.facts;
    const subscribed = { name: names.queue, arn, ...(policy !== undefined && { policy }) };
    subscription = await subscriptionChecks(context, topicArn, subscribed, setupFix);
  }
  return [mx, receipt.result, ...identity, ...bucket, ...queue.results, ...subscription];
}

/** The bucket the rule writes to; BUCKET_NAME_TEMPLATE's when no rule says. */
function mailBucket(context: DoctorContext, domain: string, receipt: ReceiptCheck): MailBucket {
  const route = receipt.route;
  const bucket =
    route?.via === 'S3' && route.bucket
      ? route.bucket
      : nameFromTemplate(context.config.bucketNameTemplate, domain);
  return {
    domain,
    bucket,
    ...(route?.prefix !== undefined && { prefix: route.prefix }),
    ...(route !== undefined && { rule: { ruleSet: route.ruleSet, name: route.rule } }),
  };
}
