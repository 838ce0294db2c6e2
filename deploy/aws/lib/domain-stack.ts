/**
 * One domain's stack: its SES identity (Easy DKIM, the deployment's configuration set as default), its mail bucket,
 * the topic SES notifies, the queue the worker polls with its dead-letter queue, and its rule in the shared receipt
 * rule set. A stack per domain keeps every template small whatever the number of domains, and a domain added or
 * removed touches only its own stack.
 *
 * Everything shared (the rule set, the configuration set) is referred to by name, not by a cross-stack export, so a
 * domain stack can be deployed, updated or deleted on its own.
 */
import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as ses from 'aws-cdk-lib/aws-ses';
import * as actions from 'aws-cdk-lib/aws-ses-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { deadLetterQueueName, nameFromTemplate, notificationTopicName } from '../../../src/aws/resources.ts';
import { receiptRuleName } from './names.ts';
import type { WorkerStackOptions } from './options.ts';

/** SQS keeps a message at most 14 days; mail waits in the queue while the mail server is down, so take all of it. */
export const QUEUE_RETENTION = Duration.days(14);

export interface DomainStackProps extends StackProps {
  readonly domain: string;
  readonly options: WorkerStackOptions;
}

export class DomainStack extends Stack {
  readonly domain: string;
  readonly bucket: s3.Bucket;
  readonly topic: sns.Topic;
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly rule: ses.ReceiptRule;
  private readonly options: WorkerStackOptions;

  constructor(scope: Construct, id: string, props: DomainStackProps) {
    super(scope, id, props);
    const { domain, options } = props;
    this.domain = domain;
    this.options = options;
    const queueName = nameFromTemplate(options.queueNameTemplate, domain);

    if (options.createEmailIdentities) this.createIdentity(domain, options);
    this.bucket = this.createBucket(nameFromTemplate(options.bucketNameTemplate, domain), options);
    this.topic = new sns.Topic(this, 'Topic', { topicName: notificationTopicName(queueName) });
    Validations.of(this.topic).acknowledge({
      id: 'AwsSolutions-SNS3',
      reason:
        'Publishers are SES receipt rules only (the topic policy is the default owner-only one); a deny on ' +
        'aws:SecureTransport=false is not documented for SES receipt-rule publishing, and a refused publish would ' +
        'leave mail in S3 that no worker hears about.',
    });
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      queueName: deadLetterQueueName(queueName),
      retentionPeriod: QUEUE_RETENTION,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      queueName,
      retentionPeriod: QUEUE_RETENTION,
      // The worker's heartbeat extends visibility while it works on a mail; 30 s is what the daemon is tested with.
      visibilityTimeout: Duration.seconds(30),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: options.maxReceives },
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // A notification SNS cannot deliver to the queue lands in the same dead-letter queue (as an SNS envelope, which
    // the worker reads like any other notification once redriven), instead of being dropped after SNS's retries.
    this.topic.addSubscription(
      new subscriptions.SqsSubscription(this.queue, { deadLetterQueue: this.deadLetterQueue }),
    );
    // No `after`: each rule matches only its own domain's recipients and none stops the set, so their order in the
    // set does not matter, and a rule never depends on another domain's stack.
    this.rule = new ses.ReceiptRule(this, 'ReceiptRule', {
      ruleSet: ses.ReceiptRuleSet.fromReceiptRuleSetName(this, 'RuleSet', options.receiptRuleSetName),
      receiptRuleName: receiptRuleName(domain),
      recipients: [domain],
      scanEnabled: true,
      enabled: true,
      actions: [new actions.S3({ bucket: this.bucket, topic: this.topic })],
    });
    this.createOutputs(domain);
  }

  private createIdentity(domain: string, options: WorkerStackOptions): void {
    const identity = new ses.EmailIdentity(this, 'Identity', {
      identity: ses.Identity.domain(domain),
      // The default configuration set applies to every send from the domain, also without the
      // X-SES-CONFIGURATION-SET header (docker-mailserver's relay through SES), so each one reaches the events queue.
      ...(options.sesConfigurationSet !== undefined && {
        configurationSet: ses.ConfigurationSet.fromConfigurationSetName(
          this,
          'ConfigurationSet',
          options.sesConfigurationSet,
        ),
      }),
    });
    identity.dkimRecords.forEach((record, i) => {
      new CfnOutput(this, `DkimRecord${i + 1}`, {
        description: `DKIM CNAME ${i + 1} of 3 for ${domain}: publish it to verify the domain in SES`,
        value: `${record.name} CNAME ${record.value}`,
      });
    });
  }

  private createBucket(bucketName: string, options: WorkerStackOptions): s3.Bucket {
    const bucket = new s3.Bucket(this, 'MailBucket', {
      bucketName,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules:
        options.mailRetentionDays === undefined
          ? []
          : [{ expiration: Duration.days(options.mailRetentionDays) }],
    });
    Validations.of(bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'Only SES (service principal, this account) and the worker policy can reach the bucket; object-level access ' +
        'auditing belongs in CloudTrail data events rather than a second log bucket per domain.',
    });
    return bucket;
  }

  private createOutputs(domain: string): void {
    new CfnOutput(this, 'QueueUrl', { description: `SQS queue of ${domain}`, value: this.queue.queueUrl });
    new CfnOutput(this, 'DeadLetterQueueUrl', {
      description: `Dead-letter queue of ${domain}`,
      value: this.deadLetterQueue.queueUrl,
    });
    new CfnOutput(this, 'MailBucketName', {
      description: `Mail of ${domain} as SES stores it`,
      value: nameFromTemplate(this.options.bucketNameTemplate, domain),
    });
    new CfnOutput(this, 'MxRecord', {
      description: `MX record to publish for ${domain}`,
      value: `${domain}. MX 10 inbound-smtp.${Aws.REGION}.amazonaws.com`,
    });
  }
}
