/**
 * The outbound half of `npm run local`: SES's sending events and bounces, which no emulator produces. The events
 * queue and topic are created as the AWS app creates them, SES's events are published for every send through the
 * configuration set (test/harness/ses-outbound.ts), and a send to SES's mailbox simulator address bounces: the
 * bounce DSN goes to the sender's domain queue, as SES's receipt rule would put it, and the worker delivers it
 * rewritten. Kept apart from local-stack.ts, which only calls these.
 */
import { SendEmailCommand } from '@aws-sdk/client-sesv2';

import type { AwsClients } from '../src/aws/clients.ts';
import { injectMail } from '../src/cli/ses-inbound.ts';
import { buildMime } from '../src/cli/compose-mail.ts';
import type { Config } from '../src/config/config.ts';
import type { TestStack } from '../test/harness/emulators.ts';
import {
  SIMULATOR_BOUNCE,
  createOutboundEventsRoute,
  publishSendingEvents,
  type SendingEventsPublisher,
} from '../test/harness/ses-outbound.ts';

export { SIMULATOR_BOUNCE };

export interface LocalOutbound {
  /** What was set up, for the console. */
  description: string;
  stop(): void;
}

/**
 * Creates the events queue (with its dead-letter queue) and topic, and publishes SES's events of every send through
 * the configuration set. Undefined when OUTBOUND_EVENTS_QUEUE or SES_CONFIGURATION_SET is `none`.
 */
export async function startLocalOutbound(
  stack: TestStack,
  target: { config: Config; clients: AwsClients },
  onError: (message: string) => void,
): Promise<LocalOutbound | undefined> {
  const { config } = target;
  if (!config.outboundEventsQueue || !config.sesConfigurationSet) return undefined;
  const route = await createOutboundEventsRoute(stack, {
    queueName: config.outboundEventsQueue,
    maxReceiveCount: config.poll.maxReceives,
  });
  const publisher: SendingEventsPublisher = publishSendingEvents(stack, {
    topicArn: route.topicArn,
    configurationSet: config.sesConfigurationSet,
    bounceDelayMs: 1_000,
    deliverBounce: async ({ sender, dsn }) => {
      const domain = sender.slice(sender.lastIndexOf('@') + 1).toLowerCase();
      if (!config.domains.includes(domain)) {
        onError(`SES's bounce for ${sender} is dropped: ${domain} is not a domain of the stack`);
        return;
      }
      // SES's own bounce: null envelope sender, From MAILER-DAEMON@amazonses.com, DMARC pass for amazonses.com.
      await injectMail(target, { raw: dsn, recipients: [sender], source: '' });
    },
  });
  return {
    description:
      `events queue ${route.queueName} (+ ${route.dlqName}), SNS topic ${route.topicArn.split(':').pop()} → the ` +
      `queue; SES's events of configuration set ${config.sesConfigurationSet} are published to it (emulated)`,
    stop: () => publisher.stop(),
  };
}

/**
 * What a user of the mail server does when docker-mailserver relays through SES: a mail out through SES's API with
 * the configuration set. Sent to the mailbox simulator's bounce address, it comes back as a bounce.
 */
export async function sendOutboundDemo(
  clients: AwsClients,
  config: Config,
  user: string,
): Promise<string | undefined> {
  const raw = await buildMime({
    from: user,
    to: SIMULATOR_BOUNCE,
    subject: 'Are you there?',
    text: 'This mail left through (emulated) SES, to an address that bounces.\r\n',
  });
  const { MessageId } = await clients.sesv2.send(
    new SendEmailCommand({
      FromEmailAddress: user,
      Destination: { ToAddresses: [SIMULATOR_BOUNCE] },
      Content: { Raw: { Data: raw } },
      ConfigurationSetName: config.sesConfigurationSet,
    }),
  );
  return MessageId;
}

/**
 * `From … , Reply-To …` of a bounce the worker rewrote (it keeps SES's From in X-Original-From), else undefined.
 */
export function rewrittenBounce(raw: Buffer): string | undefined {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.length;
  const head = raw
    .subarray(0, end)
    .toString('utf8')
    .replace(/\r?\n[ \t]+/g, ' ');
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(head)?.[1]?.trim();
  if (!/mailer-daemon@amazonses\.com/i.test(field('X-Original-From') ?? '')) return undefined;
  return `From ${field('From') ?? '?'}, Reply-To ${field('Reply-To') ?? '(none)'}`;
}
