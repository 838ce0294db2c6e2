/**
 * From a topic to the queue the daemon reads: the queue subscribes to the topic, the subscription is confirmed,
 * and the queue's policy lets SNS send that topic's messages. Used for each domain's queue (topic from the
 * receipt rule) and for the outbound events queue (topic from the configuration set's event destination).
 */
import {
  GetSubscriptionAttributesCommand,
  ListSubscriptionsByTopicCommand,
  type Subscription,
} from '@aws-sdk/client-sns';

import { evaluatePolicy, parsePolicy, snsSendRequest, type PolicyVerdict } from '../../aws/policies.ts';
import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';

/** ListSubscriptionsByTopic returns 100 per page; a topic of ours has a handful. */
const MAX_PAGES = 20;

export interface SubscribedQueue {
  name: string;
  arn: string;
  policy?: string;
}

export async function subscriptionChecks(
  context: DoctorContext,
  topicArn: string,
  queue: SubscribedQueue,
  setupFix: string,
): Promise<CheckResult[]> {
  return [
    await subscriptionCheck(context, topicArn, queue, setupFix),
    queuePolicyCheck(topicArn, queue, setupFix),
  ];
}

async function subscriptionCheck(
  context: DoctorContext,
  topicArn: string,
  queue: SubscribedQueue,
  setupFix: string,
): Promise<CheckResult> {
  const check = `subscription ${queue.name}`;
  let found: Subscription | undefined;
  try {
    found = await findSubscription(context, topicArn, queue.arn);
  } catch (error) {
    if (awsErrorName(error) === 'NotFoundException' || awsErrorName(error) === 'NotFound') {
      return fail(
        check,
        `the topic ${topicArn} does not exist: its notifications go nowhere`,
        `${setupFix} (creates a topic and points the publisher at it)`,
      );
    }
    return awsFailure(context, {
      check,
      service: 'SNS',
      operation: 'ListSubscriptionsByTopic',
      permission: 'sns:ListSubscriptionsByTopic',
      error,
    });
  }
  if (found === undefined) {
    return fail(
      check,
      `${queue.name} does not subscribe to ${topicArn}: the notifications never reach the worker`,
      `${setupFix} (subscribes the queue and lets the topic send to it)`,
    );
  }
  return confirmationCheck(context, check, topicArn, found);
}

async function findSubscription(
  context: DoctorContext,
  topicArn: string,
  queueArn: string,
): Promise<Subscription | undefined> {
  let token: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const answer = await call(context, `SNS ListSubscriptionsByTopic ${topicArn}`, (signal) =>
      context.control.sns.send(
        new ListSubscriptionsByTopicCommand({ TopicArn: topicArn, NextToken: token }),
        {
          abortSignal: signal,
        },
      ),
    );
    const match = (answer.Subscriptions ?? []).find((s) => s.Protocol === 'sqs' && s.Endpoint === queueArn);
    if (match !== undefined || answer.NextToken === undefined) return match;
    token = answer.NextToken;
  }
  return undefined;
}

async function confirmationCheck(
  context: DoctorContext,
  check: string,
  topicArn: string,
  subscription: Subscription,
): Promise<CheckResult> {
  const pendingFix =
    'confirm it: the SubscriptionConfirmation message waiting in the queue has a SubscribeURL to open ' +
    "(or subscribe the queue from the topic's own account, which confirms at once)";
  const arn = subscription.SubscriptionArn ?? '';
  if (!arn.startsWith('arn:'))
    return fail(check, `to ${topicArn}: pending confirmation, nothing is delivered yet`, pendingFix);
  try {
    const { Attributes } = await call(context, 'SNS GetSubscriptionAttributes', (signal) =>
      context.control.sns.send(new GetSubscriptionAttributesCommand({ SubscriptionArn: arn }), {
        abortSignal: signal,
      }),
    );
    if (Attributes?.PendingConfirmation === 'true') {
      return fail(check, `to ${topicArn}: pending confirmation, nothing is delivered yet`, pendingFix);
    }
    const raw = Attributes?.RawMessageDelivery === 'true' ? ', raw message delivery' : '';
    return ok(check, `to ${topicArn}, confirmed${raw}`);
  } catch (error) {
    return awsFailure(context, {
      check,
      service: 'SNS',
      operation: 'GetSubscriptionAttributes',
      permission: 'sns:GetSubscriptionAttributes',
      error,
    });
  }
}

function queuePolicyCheck(topicArn: string, queue: SubscribedQueue, setupFix: string): CheckResult {
  const check = `queue policy ${queue.name}`;
  const fix = `${setupFix} (adds a statement that lets the topic send)`;
  if (queue.policy === undefined) {
    return fail(
      check,
      `none: SNS may not send ${topicArn}'s notifications into the queue, they are lost`,
      fix,
    );
  }
  let verdict: PolicyVerdict;
  try {
    verdict = evaluatePolicy(parsePolicy(queue.policy), snsSendRequest(queue.arn, topicArn));
  } catch (error) {
    return fail(check, `cannot be read: ${describeError(error)}`, 'replace it with a valid policy document');
  }
  return queueVerdict(check, verdict, topicArn, fix);
}

function queueVerdict(check: string, verdict: PolicyVerdict, topicArn: string, fix: string): CheckResult {
  switch (verdict.kind) {
    case 'allowed':
      return verdict.scoped
        ? ok(check, `statement ${verdict.statement} lets ${topicArn} send`)
        : warn(
            check,
            `statement ${verdict.statement} lets any SNS topic, of any account, send into the queue`,
            `add the condition ArnEquals aws:SourceArn = ${topicArn} to it`,
          );
    case 'denied':
      return fail(
        check,
        `statement ${verdict.statement} denies SNS's sqs:SendMessage`,
        `remove or narrow statement ${verdict.statement}`,
      );
    case 'not-allowed':
      return verdict.near
        ? fail(
            check,
            `statement ${verdict.near.statement} lets SNS send only under ${verdict.near.condition}, which ${topicArn} does not meet`,
            `name ${topicArn} in that condition, or ${fix}`,
          )
        : fail(
            check,
            `no statement lets ${topicArn} (sns.amazonaws.com) sqs:SendMessage into it: notifications are lost`,
            fix,
          );
    case 'not-evaluated':
      return warn(
        check,
        `not evaluated: statement ${verdict.statement}: ${verdict.reason}`,
        `make sure it lets sns.amazonaws.com sqs:SendMessage with aws:SourceArn = ${topicArn}`,
      );
  }
}
