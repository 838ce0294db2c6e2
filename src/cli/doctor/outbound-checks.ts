/**
 * The path that lets bounces of mail sent out through SES be rewritten: the configuration set every send names
 * (SES_CONFIGURATION_SET), its event destination publishing SEND events to SNS, and the queue the daemon reads
 * them from (OUTBOUND_EVENTS_QUEUE), subscribed to that topic.
 */
import {
  GetConfigurationSetCommand,
  GetConfigurationSetEventDestinationsCommand,
  type EventDestination,
} from '@aws-sdk/client-sesv2';

import { deadLetterQueueName } from '../../aws/resources.ts';
import { awsErrorName } from '../../errors.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';
import { queueChecks } from './queue-checks.ts';
import { subscriptionChecks } from './subscription-checks.ts';

const SETUP = 'unified-worker setup';

export async function outboundChecks(context: DoctorContext): Promise<CheckResult[]> {
  const { sesConfigurationSet: set, outboundEventsQueue: queue } = context.config;
  if (set === '') {
    return [
      warn(
        'SES_CONFIGURATION_SET',
        'none: mail sent out through SES is not recorded, so its bounces cannot be rewritten',
        `set SES_CONFIGURATION_SET (default unified-worker) and run ${SETUP}`,
      ),
    ];
  }
  const exists = await configurationSetCheck(context, set);
  if (exists.status !== 'ok') return [exists];
  if (queue === '') {
    return [
      exists,
      warn(
        'OUTBOUND_EVENTS_QUEUE',
        'none: SES events are not consumed, so bounces of mail sent out through SES cannot be rewritten',
        `set OUTBOUND_EVENTS_QUEUE (default ses-outbound-events) and run ${SETUP}`,
      ),
    ];
  }
  const destination = await eventDestinationCheck(context, set, queue);
  const names = { queue, deadLetter: deadLetterQueueName(queue) };
  const queueFindings = await queueChecks(context, names, {
    missingWhy: 'SES events are not consumed, so bounces of mail sent out through SES cannot be rewritten',
    missingFix: `${SETUP}, or set OUTBOUND_EVENTS_QUEUE to your events queue's name`,
    setupFix: SETUP,
  });
  const results = [exists, destination.result, ...queueFindings.results];
  const facts = queueFindings.facts;
  if (destination.topicArn !== undefined && facts !== undefined) {
    const subscribed = {
      name: queue,
      arn: facts.arn,
      ...(facts.policy !== undefined && { policy: facts.policy }),
    };
    results.push(...(await subscriptionChecks(context, destination.topicArn, subscribed, SETUP)));
  }
  return results;
}

async function configurationSetCheck(context: DoctorContext, set: string): Promise<CheckResult> {
  const check = `configuration set ${set}`;
  try {
    await call(context, `SES GetConfigurationSet ${set}`, (signal) =>
      context.clients.sesv2.send(new GetConfigurationSetCommand({ ConfigurationSetName: set }), {
        abortSignal: signal,
      }),
    );
    return ok(check, 'exists: every send through SES names it');
  } catch (error) {
    if (awsErrorName(error) === 'NotFoundException') {
      return fail(
        check,
        "does not exist: SES refuses every send that names it (the worker's forwards and auto-replies, the relay)",
        `${SETUP} (creates it with its event destination), or set SES_CONFIGURATION_SET=none`,
      );
    }
    return awsFailure(context, {
      check,
      service: 'SES',
      operation: 'GetConfigurationSet',
      permission: 'ses:GetConfigurationSet',
      error,
    });
  }
}

async function eventDestinationCheck(
  context: DoctorContext,
  set: string,
  queue: string,
): Promise<{ result: CheckResult; topicArn?: string }> {
  const check = `event destination ${set}`;
  let destinations: EventDestination[];
  try {
    const answer = await call(context, `SES GetConfigurationSetEventDestinations ${set}`, (signal) =>
      context.clients.sesv2.send(
        new GetConfigurationSetEventDestinationsCommand({ ConfigurationSetName: set }),
        {
          abortSignal: signal,
        },
      ),
    );
    destinations = answer.EventDestinations ?? [];
  } catch (error) {
    const result = awsFailure(context, {
      check,
      service: 'SES',
      operation: 'GetConfigurationSetEventDestinations',
      permission: 'ses:GetConfigurationSetEventDestinations',
      error,
    });
    return { result };
  }
  const found = destinations.find(
    (d) =>
      d.Enabled === true &&
      d.SnsDestination?.TopicArn !== undefined &&
      d.MatchingEventTypes?.includes('SEND'),
  );
  if (found?.SnsDestination?.TopicArn === undefined) {
    return {
      result: fail(
        check,
        `no enabled destination publishes SEND events to SNS: nothing reaches ${queue}, bounces of mail sent through SES are not rewritten`,
        `${SETUP} (adds one)`,
      ),
    };
  }
  const topicArn = found.SnsDestination.TopicArn;
  return {
    result: ok(check, `${found.Name}: ${found.MatchingEventTypes?.join(', ')} to ${topicArn}`),
    topicArn,
  };
}
