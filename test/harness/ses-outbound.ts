/**
 * The sending side of SES that no emulator has: a configuration set's event destination (SES → SNS topic → the
 * events queue) and SES's mailbox simulator. aws-ses-v2-local accepts sends but publishes nothing, so
 * {@link publishSendingEvents} watches the sends its proxy accepts (test/harness/emulators.ts) and publishes what
 * SES would to the topic on fauxqs's SNS: a Send event for every send through the configuration set, and for a
 * send to the simulator's bounce address a Bounce event and SES's bounce DSN to the sender. Used by the
 * integration tests and by `npm run local`.
 */
import { GetQueueAttributesCommand, CreateQueueCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { CreateTopicCommand, PublishCommand, SubscribeCommand, type SNSClient } from '@aws-sdk/client-sns';
import addressparser from 'nodemailer/lib/addressparser/index.js';

import { deadLetterQueueName } from '../../src/aws/resources.ts';
import { SETTINGS } from '../../src/config/settings.ts';
import type { RecordedSesMail, SesHandle } from './emulators.ts';
import { headersFromMime, sesBounceDsn, sesMessageId, sesSendingEvent } from './ses-events.ts';

/** SES's mailbox simulator: mail to this address bounces (https://docs.aws.amazon.com/ses/latest/dg/send-an-email-from-console.html). */
export const SIMULATOR_BOUNCE = 'bounce@simulator.amazonses.com';
/** Topic name of the events (the AWS app's topic has its own name; the daemon never reads it). */
export const OUTBOUND_EVENTS_TOPIC = 'ses-outbound-events';

export interface OutboundEventsRoute {
  queueName: string;
  queueUrl: string;
  dlqName: string;
  dlqUrl: string;
  topicArn: string;
}

export interface OutboundEventsRouteOptions {
  /** Default: OUTBOUND_EVENTS_QUEUE's default. */
  queueName?: string;
  topicName?: string;
  /** The redrive's maxReceiveCount (default 3). */
  maxReceiveCount?: number;
  /** VisibilityTimeout of the events queue in seconds (SQS default 30). */
  visibilityTimeout?: number;
}

/**
 * What the AWS app creates for the events: the queue with its dead-letter queue and redrive policy, the topic,
 * and the topic's SQS subscription without raw message delivery (the queue gets the SNS envelope).
 */
export async function createOutboundEventsRoute(
  stack: { sqs: SQSClient; sns: SNSClient },
  options: OutboundEventsRouteOptions = {},
): Promise<OutboundEventsRoute> {
  const queueName = options.queueName ?? SETTINGS.OUTBOUND_EVENTS_QUEUE.default;
  const dlqName = deadLetterQueueName(queueName);
  const dlqUrl = await createQueue(stack.sqs, dlqName, {});
  const dlqArn = await queueArn(stack.sqs, dlqUrl);
  const queueUrl = await createQueue(stack.sqs, queueName, {
    RedrivePolicy: JSON.stringify({
      deadLetterTargetArn: dlqArn,
      maxReceiveCount: options.maxReceiveCount ?? 3,
    }),
    ...(options.visibilityTimeout !== undefined && { VisibilityTimeout: String(options.visibilityTimeout) }),
  });
  const { TopicArn: topicArn } = await stack.sns.send(
    new CreateTopicCommand({ Name: options.topicName ?? OUTBOUND_EVENTS_TOPIC }),
  );
  if (!topicArn) throw new Error('CreateTopic returned no TopicArn');
  await stack.sns.send(
    new SubscribeCommand({
      TopicArn: topicArn,
      Protocol: 'sqs',
      Endpoint: await queueArn(stack.sqs, queueUrl),
    }),
  );
  return { queueName, queueUrl, dlqName, dlqUrl, topicArn };
}

async function createQueue(
  sqs: SQSClient,
  name: string,
  attributes: Record<string, string>,
): Promise<string> {
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
  if (!QueueUrl) throw new Error(`CreateQueue ${name} returned no QueueUrl`);
  return QueueUrl;
}

async function queueArn(sqs: SQSClient, url: string): Promise<string> {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }),
  );
  if (!Attributes?.QueueArn) throw new Error(`no QueueArn for ${url}`);
  return Attributes.QueueArn;
}

/** SES's bounce of one recipient of a sent mail, for the caller to deliver to the sender's domain. */
export interface SimulatedBounce {
  /** SES's id of the mail that bounced. */
  messageId: string;
  /** The sender the DSN goes to. */
  sender: string;
  failed: string;
  /** The DSN, as SES's MAILER-DAEMON sends it. */
  dsn: Buffer;
}

export interface SendingEventsOptions {
  topicArn: string;
  /** Events are published for sends through this configuration set only, as SES does. */
  configurationSet: string;
  /** Which recipients bounce (default: the mailbox simulator's bounce address). */
  bounces?: (address: string) => boolean;
  /** How long after the send SES reports the bounce (default 500 ms). */
  bounceDelayMs?: number;
  /** Receives SES's DSN of each bounce (default: dropped); a receipt rule would put it on the sender's domain queue. */
  deliverBounce?: (bounce: SimulatedBounce) => Promise<void>;
}

export interface SendingEventsPublisher {
  /** What was published, in order. */
  readonly published: Array<{ type: 'Send' | 'Bounce'; messageId: string }>;
  /** Resolves when the bounces scheduled so far were published and delivered. */
  settled(): Promise<void>;
  stop(): void;
}

/** Publishes SES's sending events for every send the SES emulator accepts through `configurationSet`. */
export function publishSendingEvents(
  stack: { ses: SesHandle; sns: SNSClient },
  options: SendingEventsOptions,
): SendingEventsPublisher {
  const bounces = options.bounces ?? ((address: string) => address.toLowerCase() === SIMULATOR_BOUNCE);
  const published: SendingEventsPublisher['published'] = [];
  const pending = new Set<Promise<void>>();
  const timers = new Set<NodeJS.Timeout>();

  const publish = async (event: Record<string, unknown>, type: 'Send' | 'Bounce', messageId: string) => {
    await stack.sns.send(new PublishCommand({ TopicArn: options.topicArn, Message: JSON.stringify(event) }));
    published.push({ type, messageId });
  };

  const bounceLater = (mail: RecordedSesMail, messageId: string, source: string, failed: string) => {
    let done: () => void = () => undefined;
    const settledBounce = new Promise<void>((resolve) => (done = resolve));
    pending.add(settledBounce);
    const timer = setTimeout(() => {
      timers.delete(timer);
      const event = sesSendingEvent({
        ...eventInput(mail, messageId, source, options.configurationSet),
        type: 'Bounce',
        bounced: [failed],
      });
      const sender = addressOf(source);
      const dsn = sesBounceDsn({
        from: sender,
        outboundMessageId: messageId,
        bounceMessageId: sesMessageId(),
        failed,
      });
      publish(event, 'Bounce', messageId)
        .then(() => options.deliverBounce?.({ messageId, sender, failed, dsn }))
        .catch((err: unknown) => console.error(`SES event publisher: bounce of ${messageId}: ${String(err)}`))
        .finally(() => {
          pending.delete(settledBounce);
          done();
        });
    }, options.bounceDelayMs ?? 500);
    timers.add(timer);
  };

  const remove = stack.ses.onSent(async (mail) => {
    if (mail.configurationSet !== options.configurationSet || mail.messageId === undefined) return;
    const source = mail.from ?? headerFrom(mail.raw) ?? '';
    await publish(
      sesSendingEvent({
        ...eventInput(mail, mail.messageId, source, options.configurationSet),
        type: 'Send',
      }),
      'Send',
      mail.messageId,
    );
    for (const address of destinationsOf(mail)) {
      if (bounces(address)) bounceLater(mail, mail.messageId, source, address);
    }
  });

  return {
    published,
    async settled() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
    stop() {
      remove();
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    },
  };
}

function eventInput(mail: RecordedSesMail, messageId: string, source: string, configurationSet: string) {
  return { messageId, source, destinations: destinationsOf(mail), raw: mail.raw, configurationSet };
}

/** The request's destinations, or (a raw send without any) the mail's To and Cc, as SES takes them. */
function destinationsOf(mail: RecordedSesMail): string[] {
  if (mail.destinations.length > 0) return mail.destinations;
  const headers = headersFromMime(mail.raw);
  return headers
    .filter((h) => ['to', 'cc'].includes(h.name.toLowerCase()))
    .flatMap((h) => addressparser(h.value, { flatten: true }).map((a) => a.address));
}

function headerFrom(raw: Buffer): string | undefined {
  return headersFromMime(raw).find((h) => h.name.toLowerCase() === 'from')?.value;
}

function addressOf(source: string): string {
  return addressparser(source, { flatten: true })[0]?.address ?? source;
}
