/**
 * The shared stack, once per deployment: the DynamoDB tables, the receipt rule set the domain stacks add their rules
 * to, the SES configuration set with the outbound events queue (lib/outbound-events.ts), the list of the worker's
 * managed policies (in stacks of their own, lib/policy-stack.ts), and optionally an IRSA role with them attached.
 *
 * The names, key schemas, TTL attributes and IAM actions come from the daemon's own description of its resources
 * (src/aws/resources.ts), so the template cannot drift from what the daemon calls.
 */
import { Aws, CfnOutput, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as ses from 'aws-cdk-lib/aws-ses';
import type { Construct } from 'constructs';
import { TABLES } from '../../../src/aws/resources.ts';
import type { WorkerStackOptions } from './options.ts';
import { OutboundEvents } from './outbound-events.ts';

export interface SharedStackProps extends StackProps {
  readonly options: WorkerStackOptions;
  /** The worker's managed policies, each in its stack of the same name (lib/policy-stack.ts). */
  readonly policyNames: readonly string[];
}

export class SharedStack extends Stack {
  readonly tables: ReadonlyMap<string, dynamodb.Table>;
  readonly ruleSet: ses.ReceiptRuleSet;
  readonly outboundEvents?: OutboundEvents;
  /** ARNs of the worker's managed policies, built from their names. */
  readonly workerPolicyArns: readonly string[];

  constructor(scope: Construct, id: string, props: SharedStackProps) {
    super(scope, id, props);
    const { options } = props;

    this.tables = this.createTables(options);
    this.ruleSet = new ses.ReceiptRuleSet(this, 'ReceiptRuleSet', {
      receiptRuleSetName: options.receiptRuleSetName,
    });
    if (options.sesConfigurationSet !== undefined) {
      this.outboundEvents = new OutboundEvents(this, 'OutboundEvents', {
        configurationSetName: options.sesConfigurationSet,
        queueName: options.outboundEventsQueue,
        maxReceives: options.maxReceives,
      });
    }
    this.workerPolicyArns = props.policyNames.map(
      (name) => `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:policy/${name}`,
    );
    if (options.eks) this.createServiceAccountRole(options.eks);
    this.createOutputs(options);
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

  private createOutputs(options: WorkerStackOptions): void {
    new CfnOutput(this, 'WorkerPolicyArns', {
      description:
        'Attach every one of these (comma-separated) to the worker: instance role, IRSA role, or its IAM user',
      value: this.workerPolicyArns.join(','),
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
    const events = this.outboundEvents;
    if (events === undefined) return;
    new CfnOutput(this, 'SesConfigurationSetName', {
      description:
        'SES_CONFIGURATION_SET for the worker; the X-SES-CONFIGURATION-SET header of mail relayed through SES',
      value: options.sesConfigurationSet!,
    });
    if (events.queue === undefined || events.deadLetterQueue === undefined) return;
    new CfnOutput(this, 'OutboundEventsQueueUrl', {
      description: 'SQS queue of SES send, bounce and complaint events (OUTBOUND_EVENTS_QUEUE)',
      value: events.queue.queueUrl,
    });
    new CfnOutput(this, 'OutboundEventsDeadLetterQueueUrl', {
      description: 'Dead-letter queue of the outbound events queue',
      value: events.deadLetterQueue.queueUrl,
    });
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
      managedPolicies: this.workerPolicyArns.map((arn, i) =>
        iam.ManagedPolicy.fromManagedPolicyArn(this, `WorkerPolicy${i + 1}`, arn),
      ),
    });
    new CfnOutput(this, 'WorkerRoleArn', {
      description: 'Annotate the worker service account with it: eks.amazonaws.com/role-arn',
      value: role.roleArn,
    });
    return role;
  }
}
