/**
 * From a topic to a queue: the topic (created when the publisher has none yet), the queue's subscription to it,
 * and the queue policy statement that lets the topic send. Existing statements and subscriptions are kept.
 */
import {
  CreateTopicCommand,
  GetTopicAttributesCommand,
  ListSubscriptionsByTopicCommand,
  SubscribeCommand,
} from '@aws-sdk/client-sns';
import { SetQueueAttributesCommand } from '@aws-sdk/client-sqs';

import {
  evaluatePolicy,
  parsePolicy,
  snsSendRequest,
  snsSendStatement,
  withStatement,
  type PolicyDocument,
} from '../../aws/policies.ts';
import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import type { QueueFacts } from '../queues.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';

/** Creates the topic unless it exists; its ARN is in `arn` when the item did not fail. */
export async function ensureTopic(
  context: SetupContext,
  name: string,
): Promise<SetupItem & { arn?: string }> {
  context.progress.step(`topic ${name}`);
  const { account, partition } = context.caller;
  const arn = `arn:${partition}:sns:${context.config.aws.region}:${account}:${name}`;
  const result = item('topic', name);
  try {
    await context.control.sns.send(new GetTopicAttributesCommand({ TopicArn: arn }));
    return { ...result, arn };
  } catch (error) {
    const missing = ['NotFoundException', 'NotFound'].includes(awsErrorName(error) ?? '');
    if (!missing) return failed(result, `GetTopicAttributes failed: ${describeError(error)}`);
  }
  try {
    const created = await context.control.sns.send(new CreateTopicCommand({ Name: name }));
    result.outcome = 'created';
    return { ...result, arn: created.TopicArn ?? arn };
  } catch (error) {
    return failed(result, `CreateTopic failed: ${describeError(error)}`);
  }
}

export interface SubscribingQueue {
  name: string;
  url: string;
  facts: QueueFacts;
}

/** The subscription of `queue` to `topicArn`, and the queue policy statement letting the topic send. */
export async function ensureSubscription(
  context: SetupContext,
  topicArn: string,
  queue: SubscribingQueue,
): Promise<SetupItem[]> {
  context.progress.step(`subscription ${queue.name}`);
  const subscription = item('subscription', queue.name);
  try {
    if (await isSubscribed(context, topicArn, queue.facts.arn)) {
      subscription.details.push(`to ${topicArn}`);
    } else {
      await context.control.sns.send(
        new SubscribeCommand({
          TopicArn: topicArn,
          Protocol: 'sqs',
          Endpoint: queue.facts.arn,
          ReturnSubscriptionArn: true,
        }),
      );
      subscription.outcome = 'created';
      subscription.details.push(`to ${topicArn}`);
    }
  } catch (error) {
    failed(subscription, describeError(error));
  }
  return [subscription, await ensureQueuePolicy(context, topicArn, queue)];
}

async function isSubscribed(context: SetupContext, topicArn: string, queueArn: string): Promise<boolean> {
  let token: string | undefined;
  do {
    const page = await context.control.sns.send(
      new ListSubscriptionsByTopicCommand({ TopicArn: topicArn, NextToken: token }),
    );
    if ((page.Subscriptions ?? []).some((s) => s.Protocol === 'sqs' && s.Endpoint === queueArn)) return true;
    token = page.NextToken;
  } while (token !== undefined);
  return false;
}

async function ensureQueuePolicy(
  context: SetupContext,
  topicArn: string,
  queue: SubscribingQueue,
): Promise<SetupItem> {
  context.progress.step(`queue policy ${queue.name}`);
  const result = item('queue policy', queue.name);
  let policy: PolicyDocument | undefined;
  try {
    policy = queue.facts.policy === undefined ? undefined : parsePolicy(queue.facts.policy);
  } catch (error) {
    return failed(result, `not changed: ${describeError(error)}`);
  }
  if (policy !== undefined) {
    const verdict = evaluatePolicy(policy, snsSendRequest(queue.facts.arn, topicArn));
    if (verdict.kind === 'allowed') {
      if (!verdict.scoped) {
        result.warnings.push(
          `statement ${verdict.statement} lets any topic send: add ArnEquals aws:SourceArn = ${topicArn}`,
        );
      }
      return result;
    }
    if (verdict.kind === 'denied')
      return failed(result, `not changed: statement ${verdict.statement} denies SNS`);
    if (verdict.kind === 'not-evaluated') {
      result.warnings.push(
        `left as it is: statement ${verdict.statement}: ${verdict.reason} (doctor says the same)`,
      );
      return result;
    }
  }
  try {
    const next = withStatement(policy, snsSendStatement(queue.facts.arn, topicArn));
    await context.clients.sqs.send(
      new SetQueueAttributesCommand({ QueueUrl: queue.url, Attributes: { Policy: JSON.stringify(next) } }),
    );
    result.outcome = policy === undefined ? 'created' : 'updated';
    result.details.push(`lets ${topicArn} send`);
  } catch (error) {
    failed(result, `SetQueueAttributes Policy failed: ${describeError(error)}`);
  }
  return result;
}
