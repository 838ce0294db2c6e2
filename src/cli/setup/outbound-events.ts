/**
 * What lets bounces of mail sent out through SES be rewritten: the configuration set every send names, its event
 * destination publishing SEND, BOUNCE and COMPLAINT to a topic, and the events queue (with dead-letter queue)
 * subscribed to that topic. An existing SNS destination with SEND is kept, and the queue subscribes to its topic.
 */
import {
  CreateConfigurationSetCommand,
  CreateConfigurationSetEventDestinationCommand,
  GetConfigurationSetCommand,
  GetConfigurationSetEventDestinationsCommand,
  type EventDestination,
} from '@aws-sdk/client-sesv2';

import {
  OUTBOUND_EVENT_DESTINATION,
  OUTBOUND_EVENT_TYPES,
  deadLetterQueueName,
  notificationTopicName,
} from '../../aws/resources.ts';
import { awsErrorName } from '../../errors.ts';
import { describeError } from '../command.ts';
import { failed, item, type SetupContext, type SetupItem } from './item.ts';
import { ensureTopic, ensureSubscription } from './notifications.ts';
import { ensureQueues } from './queues.ts';

/** Steps the progress line counts for this part. */
export const OUTBOUND_STEPS = 6;

export async function setupOutboundEvents(context: SetupContext): Promise<SetupItem[]> {
  const { sesConfigurationSet: set, outboundEventsQueue: queue } = context.config;
  if (set === '') return [];
  const configurationSet = await ensureConfigurationSet(context, set);
  if (queue === '' || configurationSet.outcome === 'failed') return [configurationSet];
  const names = { queue, deadLetter: deadLetterQueueName(queue) };
  const queues = await ensureQueues(context, names);
  const items = [configurationSet, ...queues.items];
  let existing: EventDestination | undefined;
  try {
    existing = await findSendDestination(context, set);
  } catch (error) {
    return [...items, failed(item('event destination', OUTBOUND_EVENT_DESTINATION), describeError(error))];
  }
  let topicArn = existing?.SnsDestination?.TopicArn;
  if (topicArn === undefined) {
    const topic = await ensureTopic(context, notificationTopicName(queue));
    items.push(topic);
    topicArn = topic.arn;
  }
  if (topicArn === undefined) return items;
  if (queues.queue !== undefined) {
    items.push(...(await ensureSubscription(context, topicArn, { name: queue, ...queues.queue })));
  }
  items.push(await ensureDestination(context, set, existing, topicArn));
  return items;
}

async function ensureConfigurationSet(context: SetupContext, set: string): Promise<SetupItem> {
  context.progress.step(`configuration set ${set}`);
  const { sesv2 } = context.clients;
  const result = item('configuration set', set);
  try {
    await sesv2.send(new GetConfigurationSetCommand({ ConfigurationSetName: set }));
    return result;
  } catch (error) {
    if (awsErrorName(error) !== 'NotFoundException') return failed(result, describeError(error));
  }
  try {
    await sesv2.send(new CreateConfigurationSetCommand({ ConfigurationSetName: set }));
    result.outcome = 'created';
    result.details.push('named by every send through SES (SES_CONFIGURATION_SET)');
  } catch (error) {
    failed(result, `CreateConfigurationSet failed: ${describeError(error)}`);
  }
  return result;
}

async function findSendDestination(
  context: SetupContext,
  set: string,
): Promise<EventDestination | undefined> {
  const answer = await context.clients.sesv2.send(
    new GetConfigurationSetEventDestinationsCommand({ ConfigurationSetName: set }),
  );
  return (answer.EventDestinations ?? []).find(
    (d) =>
      d.Enabled === true &&
      d.SnsDestination?.TopicArn !== undefined &&
      d.MatchingEventTypes?.includes('SEND'),
  );
}

async function ensureDestination(
  context: SetupContext,
  set: string,
  existing: EventDestination | undefined,
  topicArn: string,
): Promise<SetupItem> {
  context.progress.step(`event destination ${set}`);
  if (existing !== undefined) {
    const result = item('event destination', existing.Name ?? OUTBOUND_EVENT_DESTINATION);
    result.details.push(`${existing.MatchingEventTypes?.join(', ')} to ${topicArn}`);
    return result;
  }
  const result = item('event destination', OUTBOUND_EVENT_DESTINATION);
  try {
    await context.clients.sesv2.send(
      new CreateConfigurationSetEventDestinationCommand({
        ConfigurationSetName: set,
        EventDestinationName: OUTBOUND_EVENT_DESTINATION,
        EventDestination: {
          Enabled: true,
          MatchingEventTypes: [...OUTBOUND_EVENT_TYPES],
          SnsDestination: { TopicArn: topicArn },
        },
      }),
    );
    result.outcome = 'created';
    result.details.push(`${OUTBOUND_EVENT_TYPES.join(', ')} to ${topicArn}`);
  } catch (error) {
    failed(result, `CreateConfigurationSetEventDestination failed: ${describeError(error)}`);
  }
  return result;
}
