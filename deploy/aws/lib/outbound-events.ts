/**
 * The AWS side of bounce rewriting, once per deployment: the SES configuration set every send names (the worker's
 * forwards and auto-replies, docker-mailserver's relay), its event destination publishing SEND, BOUNCE and COMPLAINT
 * events to an SNS topic, and the queue the daemon reads them from (SNS envelope, not raw), with its dead-letter
 * queue. The daemon records each sent message id in the outbound table, so SES's bounce for it can be rewritten for
 * the real sender.
 */
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ses from 'aws-cdk-lib/aws-ses';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  OUTBOUND_EVENT_DESTINATION,
  OUTBOUND_EVENT_TYPES,
  deadLetterQueueName,
  notificationTopicName,
} from '../../../src/aws/resources.ts';
import { QUEUE_RETENTION } from './domain-stack.ts';

/** SES v2's event type names (resources.ts) as CDK spells them. */
const SENDING_EVENT: Record<(typeof OUTBOUND_EVENT_TYPES)[number], ses.EmailSendingEvent> = {
  SEND: ses.EmailSendingEvent.SEND,
  BOUNCE: ses.EmailSendingEvent.BOUNCE,
  COMPLAINT: ses.EmailSendingEvent.COMPLAINT,
};

export interface OutboundEventsProps {
  readonly configurationSetName: string;
  /** The events queue; undefined creates the configuration set alone (OUTBOUND_EVENTS_QUEUE=none). */
  readonly queueName: string | undefined;
  readonly maxReceives: number;
}

export class OutboundEvents extends Construct {
  readonly configurationSet: ses.ConfigurationSet;
  readonly topic?: sns.Topic;
  readonly queue?: sqs.Queue;
  readonly deadLetterQueue?: sqs.Queue;

  constructor(scope: Construct, id: string, props: OutboundEventsProps) {
    super(scope, id);
    this.configurationSet = new ses.ConfigurationSet(this, 'ConfigurationSet', {
      configurationSetName: props.configurationSetName,
    });
    if (props.queueName === undefined) return;

    this.topic = new sns.Topic(this, 'Topic', { topicName: notificationTopicName(props.queueName) });
    Validations.of(this.topic).acknowledge({
      id: 'AwsSolutions-SNS3',
      reason:
        'The only publisher is SES event publishing of this configuration set (the topic policy names it as ' +
        'aws:SourceArn); a deny on aws:SecureTransport=false is not documented for SES event publishing, and a ' +
        'refused publish loses the record a bounce rewrite needs.',
    });
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      queueName: deadLetterQueueName(props.queueName),
      retentionPeriod: QUEUE_RETENTION,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      queueName: props.queueName,
      retentionPeriod: QUEUE_RETENTION,
      visibilityTimeout: Duration.seconds(30),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceives },
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // Raw delivery stays off: the daemon's consumer reads the SNS envelope, as it does on the domain queues.
    this.topic.addSubscription(
      new subscriptions.SqsSubscription(this.queue, { deadLetterQueue: this.deadLetterQueue }),
    );
    // Adds the topic policy that lets SES publish for this configuration set only (aws:SourceArn, aws:SourceAccount).
    this.configurationSet.addEventDestination('EventDestination', {
      configurationSetEventDestinationName: OUTBOUND_EVENT_DESTINATION,
      destination: ses.EventDestination.snsTopic(this.topic),
      events: OUTBOUND_EVENT_TYPES.map((type) => SENDING_EVENT[type]),
    });
  }
}
