/**
 * Everything on the AWS side the worker needs, per domain: SES identity, receipt rule (S3 action + SNS topic), mail
 * bucket, topic, queue with dead-letter queue; once: the receipt rule set, the DynamoDB tables and the worker's
 * least-privilege managed policy (optionally an IRSA role for Kubernetes).
 *
 * The names, key schemas, TTL attributes and IAM actions come from the daemon's own description of its resources
 * (src/aws/resources.ts), so the template cannot drift from what the daemon calls.
 */
import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as ses from 'aws-cdk-lib/aws-ses';
import * as actions from 'aws-cdk-lib/aws-ses-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import {
  DAEMON_PERMISSIONS,
  TABLES,
  deadLetterQueueName,
  nameFromTemplate,
  type IamResourceKind,
} from '../../../src/aws/resources.ts';
import {
  BUCKET_NAME_PATTERN,
  QUEUE_NAME_PATTERN,
  StackOptionsError,
  domainId,
  type WorkerStackOptions,
} from './options.ts';

/** SQS keeps a message at most 14 days; mail waits in the queue while the mail server is down, so take all of it. */
const RETENTION = Duration.days(14);

export interface DomainResources {
  readonly domain: string;
  readonly bucket: s3.Bucket;
  readonly topic: sns.Topic;
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly rule: ses.ReceiptRule;
}

export interface UnifiedWorkerStackProps extends StackProps {
  readonly options: WorkerStackOptions;
}

export class UnifiedWorkerStack extends Stack {
  readonly domains: readonly DomainResources[];
  readonly tables: ReadonlyMap<string, dynamodb.Table>;
  readonly workerPolicy: iam.ManagedPolicy;
  readonly ruleSet: ses.ReceiptRuleSet;

  constructor(scope: Construct, id: string, props: UnifiedWorkerStackProps) {
    super(scope, id, props);
    const { options } = props;

    this.tables = this.createTables(options);
    this.ruleSet = new ses.ReceiptRuleSet(this, 'ReceiptRuleSet', {
      receiptRuleSetName: options.receiptRuleSetName,
    });
    let previous: ses.ReceiptRule | undefined;
    this.domains = options.domains.map((domain) => {
      const resources = this.createDomain(domain, options, previous);
      previous = resources.rule;
      return resources;
    });
    this.workerPolicy = this.createWorkerPolicy(options);
    if (options.eks) this.createServiceAccountRole(options.eks);

    new CfnOutput(this, 'WorkerPolicyArn', {
      description: 'Attach to the worker: instance role, IRSA role, or the IAM user whose keys it uses.',
      value: this.workerPolicy.managedPolicyArn,
    });
    new CfnOutput(this, 'ReceiptRuleSetName', {
      description:
        'Activate it once (CloudFormation cannot): aws ses set-active-receipt-rule-set --rule-set-name <this>',
      value: options.receiptRuleSetName,
    });
    new CfnOutput(this, 'TableNames', {
      description:
        'RULES_TABLE, BLOCKLIST_TABLE, OUTBOUND_TABLE, OOO_STATE_TABLE, IDEMPOTENCY_TABLE for the worker',
      value: Object.entries(options.tableNames)
        .map(([setting, name]) => `${setting}=${name}`)
        .join(' '),
    });
  }

  private createTables(options: WorkerStackOptions): Map<string, dynamodb.Table> {
    const tables = new Map<string, dynamodb.Table>();
    for (const spec of TABLES) {
      const tableName = options.tableNames[spec.setting as keyof WorkerStackOptions['tableNames']];
      const table = new dynamodb.Table(this, `${spec.role[0]!.toUpperCase()}${spec.role.slice(1)}Table`, {
        tableName,
        partitionKey: { name: spec.partitionKey, type: dynamodb.AttributeType.STRING },
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        ...(spec.ttlAttribute !== undefined && { timeToLiveAttribute: spec.ttlAttribute }),
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        // Rules and blocklists are the admins' data; the others are cheap to keep and dangerous to lose mid-flight.
        removalPolicy: RemovalPolicy.RETAIN,
      });
      tables.set(spec.setting, table);
    }
    return tables;
  }

  private createDomain(
    domain: string,
    options: WorkerStackOptions,
    previous: ses.ReceiptRule | undefined,
  ): DomainResources {
    const id = domainId(domain);
    const bucketName = nameFromTemplate(options.bucketNameTemplate, domain);
    const queueName = nameFromTemplate(options.queueNameTemplate, domain);
    if (!BUCKET_NAME_PATTERN.test(bucketName)) {
      throw new StackOptionsError(
        `bucket name ${JSON.stringify(bucketName)} for ${domain} is not a valid S3 bucket name`,
      );
    }
    if (!QUEUE_NAME_PATTERN.test(queueName) || !QUEUE_NAME_PATTERN.test(deadLetterQueueName(queueName))) {
      throw new StackOptionsError(
        `queue name ${JSON.stringify(queueName)} for ${domain} is not a valid SQS queue name`,
      );
    }

    if (options.createEmailIdentities) {
      const identity = new ses.EmailIdentity(this, `${id}Identity`, {
        identity: ses.Identity.domain(domain),
      });
      identity.dkimRecords.forEach((record, i) => {
        new CfnOutput(this, `${id}DkimRecord${i + 1}`, {
          description: `DKIM CNAME ${i + 1} of 3 for ${domain}: publish it to verify the domain in SES`,
          value: `${record.name} CNAME ${record.value}`,
        });
      });
    }

    const bucket = new s3.Bucket(this, `${id}MailBucket`, {
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

    const topic = new sns.Topic(this, `${id}Topic`, { topicName: `${queueName}-notifications` });
    Validations.of(topic).acknowledge({
      id: 'AwsSolutions-SNS3',
      reason:
        'Publishers are SES receipt rules only (the topic policy is the default owner-only one); a deny on ' +
        'aws:SecureTransport=false is not documented for SES receipt-rule publishing, and a refused publish would ' +
        'leave mail in S3 that no worker hears about.',
    });

    const deadLetterQueue = new sqs.Queue(this, `${id}DeadLetterQueue`, {
      queueName: deadLetterQueueName(queueName),
      retentionPeriod: RETENTION,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const queue = new sqs.Queue(this, `${id}Queue`, {
      queueName,
      retentionPeriod: RETENTION,
      // The worker's heartbeat extends visibility while it works on a mail; 30 s is what the daemon is tested with.
      visibilityTimeout: Duration.seconds(30),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: options.maxReceives },
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // A notification SNS cannot deliver to the queue lands in the same dead-letter queue (as an SNS envelope, which
    // the worker reads like any other notification once redriven), instead of being dropped after SNS's retries.
    topic.addSubscription(new subscriptions.SqsSubscription(queue, { deadLetterQueue }));

    const rule = new ses.ReceiptRule(this, `${id}ReceiptRule`, {
      ruleSet: this.ruleSet,
      receiptRuleName: `${nameFromTemplate('{domain}', domain)}-to-worker`,
      recipients: [domain],
      scanEnabled: true,
      enabled: true,
      ...(previous !== undefined && { after: previous }),
      actions: [new actions.S3({ bucket, topic })],
    });

    new CfnOutput(this, `${id}QueueUrl`, { description: `SQS queue of ${domain}`, value: queue.queueUrl });
    new CfnOutput(this, `${id}DeadLetterQueueUrl`, {
      description: `Dead-letter queue of ${domain}`,
      value: deadLetterQueue.queueUrl,
    });
    new CfnOutput(this, `${id}MailBucketName`, {
      description: `Mail of ${domain} as SES stores it`,
      value: bucketName,
    });
    new CfnOutput(this, `${id}MxRecord`, {
      description: `MX record to publish for ${domain}`,
      value: `${domain}. MX 10 inbound-smtp.${Aws.REGION}.amazonaws.com`,
    });
    return { domain, bucket, topic, queue, deadLetterQueue, rule };
  }

  /** ARNs per resource kind of DAEMON_PERMISSIONS: exactly the resources this stack made, nothing wider. */
  private resourcesOf(kind: IamResourceKind, options: WorkerStackOptions): string[] {
    switch (kind) {
      case 'domain-queue':
        return this.domains.map((d) => d.queue.queueArn);
      case 'mail-bucket-objects':
        return this.domains.map((d) => d.bucket.arnForObjects('*'));
      case 'table':
        return [...this.tables.values()].map((t) => t.tableArn);
      case 'ses-identity':
        return [...options.domains, ...options.extraSesIdentities].map(
          (identity) => `arn:${Aws.PARTITION}:ses:${Aws.REGION}:${Aws.ACCOUNT_ID}:identity/${identity}`,
        );
      case 'account':
        return ['*'];
    }
  }

  private createWorkerPolicy(options: WorkerStackOptions): iam.ManagedPolicy {
    const byKind = new Map<IamResourceKind, string[]>();
    for (const permission of DAEMON_PERMISSIONS) {
      byKind.set(permission.resource, [...(byKind.get(permission.resource) ?? []), permission.action]);
    }
    const policy = new iam.ManagedPolicy(this, 'WorkerPolicy', {
      description: 'unified-email-worker: exactly the AWS calls the daemon makes, on this stack’s resources',
      statements: [...byKind].map(
        ([kind, actionNames]) =>
          new iam.PolicyStatement({
            sid: kind.replace(/(^|-)([a-z])/g, (_m, _dash, c: string) => c.toUpperCase()),
            actions: [...actionNames].sort(),
            resources: this.resourcesOf(kind, options),
          }),
      ),
    });
    for (const d of this.domains) {
      Validations.of(policy).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${this.getLogicalId(d.bucket.node.defaultChild as s3.CfnBucket)}.Arn>/*]`,
        reason: `Objects of ${d.domain}'s mail bucket: the key is the SES message id, unknown in advance.`,
      });
    }
    Validations.of(policy).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Only ses:GetAccount (the account sending quota) is on *: it has no resource type to name.',
    });
    return policy;
  }

  private createServiceAccountRole(eks: NonNullable<WorkerStackOptions['eks']>): iam.Role {
    const subject = (account: string): string => `system:serviceaccount:${account}`;
    const role = new iam.Role(this, 'WorkerServiceAccountRole', {
      description:
        'unified-email-worker pods (IRSA) and KEDA reading the queue depth for them (identityOwner: workload)',
      assumedBy: new iam.FederatedPrincipal(
        `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:oidc-provider/${eks.oidcIssuer}`,
        {
          StringEquals: {
            [`${eks.oidcIssuer}:aud`]: 'sts.amazonaws.com',
            [`${eks.oidcIssuer}:sub`]: [subject(eks.workerServiceAccount), subject(eks.kedaServiceAccount)],
          },
        },
        'sts:AssumeRoleWithWebIdentity',
      ),
      managedPolicies: [this.workerPolicy],
    });
    new CfnOutput(this, 'WorkerRoleArn', {
      description: 'Annotate the worker service account with it: eks.amazonaws.com/role-arn',
      value: role.roleArn,
    });
    return role;
  }
}
