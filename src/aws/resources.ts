/**
 * The AWS resources the worker depends on, described once: the DynamoDB tables with the key schema and TTL
 * attribute the daemon reads and writes, the per-domain queue and bucket names, and the IAM actions the daemon
 * calls. The daemon's start-up checks, `unified-worker setup` and `doctor`, the AWS CDK template and their tests
 * all read this module, so a change here changes all of them together.
 *
 * No SDK imports: the CDK app under deploy/aws imports this file as it is.
 */
import { createHash } from 'node:crypto';
import type { SettingName } from '../config/settings.ts';

export type TableRole = 'rules' | 'blocklist' | 'outbound' | 'oooState' | 'idempotency';

export interface TableSpec {
  readonly role: TableRole;
  /** The setting that names the table (its default is the default name). */
  readonly setting: SettingName;
  /** The partition key, a string attribute; no table has a sort key. */
  readonly partitionKey: string;
  /** The attribute the daemon writes as an epoch-seconds expiry; TTL should be enabled on it. */
  readonly ttlAttribute?: string;
  /** Written by the daemon (not only read): its items come and go with the mail flow. */
  readonly writtenByDaemon: boolean;
  readonly purpose: string;
}

export const TABLES: readonly TableSpec[] = [
  {
    role: 'rules',
    setting: 'RULES_TABLE',
    partitionKey: 'email_address',
    writtenByDaemon: false,
    purpose: 'per-address rules: out-of-office and forwards',
  },
  {
    role: 'blocklist',
    setting: 'BLOCKLIST_TABLE',
    partitionKey: 'email_address',
    writtenByDaemon: false,
    purpose: 'per-recipient blocked sender patterns',
  },
  {
    role: 'outbound',
    setting: 'OUTBOUND_TABLE',
    partitionKey: 'MessageId',
    ttlAttribute: 'expires_at',
    writtenByDaemon: true,
    purpose: 'mail sent out through SES (recorded from its sending events), to rewrite its bounces',
  },
  {
    role: 'oooState',
    setting: 'OOO_STATE_TABLE',
    partitionKey: 'pk',
    ttlAttribute: 'expires_at',
    writtenByDaemon: true,
    purpose: 'auto-replies sent, at most one per sender and interval',
  },
  {
    role: 'idempotency',
    setting: 'IDEMPOTENCY_TABLE',
    partitionKey: 'pk',
    ttlAttribute: 'expires_at',
    writtenByDaemon: true,
    purpose: 'the effect ledger: exactly-once delivery, forwards and auto-replies',
  },
];

export function tableSpec(role: TableRole): TableSpec {
  const spec = TABLES.find((t) => t.role === role);
  if (!spec) throw new Error(`unknown table role ${role}`);
  return spec;
}

/** `{domain}` in a name template is the domain with dots replaced by dashes: `example.com` → `example-com`. */
export function nameFromTemplate(template: string, domain: string): string {
  return template.replaceAll('{domain}', domain.toLowerCase().replaceAll('.', '-'));
}

/** Current S3 bucket naming rules, plus the capitals and underscores of legacy us-east-1 buckets. */
export const BUCKET_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$/;

/** The dead-letter queue that `setup` and the AWS template create next to a domain's queue. */
export function deadLetterQueueName(queueName: string): string {
  return queueName.endsWith('.fifo') ? `${queueName.slice(0, -5)}-dlq.fifo` : `${queueName}-dlq`;
}

/**
/**
 * The SNS topic between a queue and its publisher (SES's receipt rule for a domain queue, the configuration set's
 * event destination for the outbound events queue), as `setup` and the AWS app name it.
 */
export function notificationTopicName(queueName: string): string {
  return `${queueName.replace(/\.fifo$/, '')}-notifications`;
}

/** The receipt rule set `setup` creates (and activates only when no rule set is active) and the AWS app deploys. */
export const RECEIPT_RULE_SET_NAME = 'unified-worker';

/** SES: a receipt rule name is at most 64 characters. */
const RULE_NAME_MAX = 64;

/**
 * The receipt rule that stores a domain's mail in its bucket and announces it on its topic: `example-com-to-worker`,
 * its end replaced by a short hash of the whole when it would be longer than SES allows.
 */
export function receiptRuleName(domain: string): string {
  return fitName(`${nameFromTemplate('{domain}', domain)}-to-worker`, RULE_NAME_MAX);
}

/** `name` cut to `max` characters, its end replaced by a short hash of the whole when it is longer. */
export function fitName(name: string, max: number): string {
  if (name.length <= max) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, max - hash.length - 1).replace(/-+$/, '')}-${hash}`;
}

/** SES's inbound SMTP endpoint in a region: a domain's MX record must name it for SES there to receive its mail. */
export function sesInboundHost(region: string): string {
  return `inbound-smtp.${region}.amazonaws.com`;
}

/**
 * The SES sending events the configuration set (SES_CONFIGURATION_SET) publishes to SNS, subscribed by the outbound
 * events queue (OUTBOUND_EVENTS_QUEUE): SEND records each outbound message id in the outbound table, BOUNCE and
 * COMPLAINT add what became of it. Names as SES v2 spells them (EventType in the event destination).
 */
export const OUTBOUND_EVENT_TYPES = ['SEND', 'BOUNCE', 'COMPLAINT'] as const;

/** The configuration set's event destination that publishes OUTBOUND_EVENT_TYPES to that topic. */
export const OUTBOUND_EVENT_DESTINATION = 'unified-worker-events';

/**
 * What an IAM permission applies to: per domain its queue and that queue's dead-letter queue, its bucket's objects
 * and its SES identity; once the tables, the outbound events queue, the SES configuration set named on every send,
 * and the account itself.
 */
export type IamResourceKind =
  | 'domain-queue'
  | 'dead-letter-queue'
  | 'mail-bucket-objects'
  | 'table'
  | 'ses-identity'
  | 'events-queue'
  | 'configuration-set'
  | 'account';

export interface IamPermission {
  readonly action: string;
  readonly resource: IamResourceKind;
  /** Where the daemon makes the call, and why it needs it. */
  readonly why: string;
}

/**
 * Every AWS call the running daemon makes, as IAM actions. Batch variants are authorised by the single action
 * (DeleteMessageBatch by sqs:DeleteMessage, ChangeMessageVisibilityBatch by sqs:ChangeMessageVisibility);
 * CopyObject onto itself needs s3:GetObject and s3:PutObject, HeadObject is covered by s3:GetObject.
 */
export const DAEMON_PERMISSIONS: readonly IamPermission[] = [
  { action: 'sqs:GetQueueUrl', resource: 'domain-queue', why: 'resolve each domain queue at start' },
  {
    action: 'sqs:GetQueueAttributes',
    resource: 'domain-queue',
    why: 'visibility timeout, redrive policy, backlog gauge',
  },
  { action: 'sqs:ReceiveMessage', resource: 'domain-queue', why: 'long poll' },
  { action: 'sqs:DeleteMessage', resource: 'domain-queue', why: 'settle finished messages (batched)' },
  {
    action: 'sqs:ChangeMessageVisibility',
    resource: 'domain-queue',
    why: 'visibility heartbeat and retry schedule',
  },
  {
    action: 'sqs:GetQueueUrl',
    resource: 'dead-letter-queue',
    why: 'watch the dead letters (the DLQ gauges)',
  },
  {
    action: 'sqs:GetQueueAttributes',
    resource: 'dead-letter-queue',
    why: 'dead letters waiting (the DLQ gauges)',
  },
  {
    action: 'sqs:ReceiveMessage',
    resource: 'dead-letter-queue',
    why: 'the oldest dead letter: a sample received with visibility 0, left in place',
  },
  { action: 's3:GetObject', resource: 'mail-bucket-objects', why: 'fetch the mail SES stored' },
  {
    action: 's3:PutObject',
    resource: 'mail-bucket-objects',
    why: 'audit metadata (CopyObject onto itself)',
  },
  { action: 's3:DeleteObject', resource: 'mail-bucket-objects', why: 'remove mail every recipient blocked' },
  {
    action: 'dynamodb:BatchGetItem',
    resource: 'table',
    why: 'rules, blocklists, outbound records, ledger records of the first shape',
  },
  {
    action: 'dynamodb:GetItem',
    resource: 'table',
    why: 'the first ledger shape read its claims (old replicas in a rolling upgrade)',
  },
  {
    action: 'dynamodb:PutItem',
    resource: 'table',
    why: "auto-reply reservations, outbound records of sent mail (and the first ledger shape's claims)",
  },
  {
    action: 'dynamodb:UpdateItem',
    resource: 'table',
    why: 'ledger claims, marks, completes and lease renewals; bounced recipients on outbound records',
  },
  { action: 'dynamodb:BatchWriteItem', resource: 'table', why: 'ledger completes of many messages at once' },
  {
    action: 'dynamodb:DeleteItem',
    resource: 'table',
    why: "cancel an auto-reply reservation that was not sent (and the first ledger shape's abandons)",
  },
  { action: 'dynamodb:DescribeTable', resource: 'table', why: 'start-up check of key schemas' },
  { action: 'dynamodb:DescribeTimeToLive', resource: 'table', why: 'start-up check of TTL attributes' },
  { action: 'ses:SendEmail', resource: 'ses-identity', why: 'forwards and auto-replies (SES v2 raw)' },
  { action: 'ses:SendRawEmail', resource: 'ses-identity', why: 'the same send, as some policies name it' },
  {
    action: 'ses:SendEmail',
    resource: 'configuration-set',
    why: 'sends naming SES_CONFIGURATION_SET are authorised against the configuration set too',
  },
  { action: 'ses:GetAccount', resource: 'account', why: 'the account sending rate for the send pacer' },
  { action: 'sqs:GetQueueUrl', resource: 'events-queue', why: 'resolve OUTBOUND_EVENTS_QUEUE at start' },
  {
    action: 'sqs:GetQueueAttributes',
    resource: 'events-queue',
    why: 'visibility timeout and redrive policy of the events queue',
  },
  { action: 'sqs:ReceiveMessage', resource: 'events-queue', why: 'long poll of SES sending events' },
  { action: 'sqs:DeleteMessage', resource: 'events-queue', why: 'settle events once recorded (batched)' },
  {
    action: 'sqs:ChangeMessageVisibility',
    resource: 'events-queue',
    why: 'retry an event whose record could not be written yet',
  },
];

/**
 * The actions `unified-worker` operator commands add on top (setup, doctor, inject, replay, dlq); not for the
 * daemon. STS GetCallerIdentity, which setup and doctor call first, needs no permission.
 */
export const OPERATOR_PERMISSIONS: readonly IamPermission[] = [
  { action: 'sqs:CreateQueue', resource: 'domain-queue', why: 'setup' },
  { action: 'sqs:SetQueueAttributes', resource: 'domain-queue', why: 'setup (redrive policy)' },
  { action: 'sqs:SendMessage', resource: 'domain-queue', why: 'inject, replay, dlq redrive fallback' },
  { action: 'sqs:StartMessageMoveTask', resource: 'domain-queue', why: 'dlq redrive' },
  { action: 'sqs:ListMessageMoveTasks', resource: 'domain-queue', why: 'dlq redrive progress' },
  { action: 's3:CreateBucket', resource: 'mail-bucket-objects', why: 'setup' },
  { action: 's3:ListBucket', resource: 'mail-bucket-objects', why: 'replay scan' },
  { action: 'dynamodb:CreateTable', resource: 'table', why: 'setup' },
  { action: 'dynamodb:UpdateTimeToLive', resource: 'table', why: 'setup' },
  { action: 'dynamodb:Scan', resource: 'table', why: 'rules list, blocklist list' },
  {
    action: 'ses:GetEmailIdentity',
    resource: 'ses-identity',
    why: 'doctor: each domain is verified (receiving and sending) and its DKIM status',
  },
  { action: 'ses:CreateEmailIdentity', resource: 'ses-identity', why: 'setup (the DKIM records to publish)' },
  { action: 's3:GetBucketPolicy', resource: 'mail-bucket-objects', why: 'doctor: SES may write the mail' },
  { action: 's3:PutBucketPolicy', resource: 'mail-bucket-objects', why: 'setup (lets SES write the mail)' },
  { action: 'sns:CreateTopic', resource: 'account', why: 'setup (a topic per queue)' },
  { action: 'sns:Subscribe', resource: 'account', why: 'setup (the queue subscribes to its topic)' },
  {
    action: 'sns:ListSubscriptionsByTopic',
    resource: 'account',
    why: 'doctor, setup: the queue is subscribed',
  },
  {
    action: 'sns:GetSubscriptionAttributes',
    resource: 'account',
    why: 'doctor: the subscription is confirmed',
  },
  {
    action: 'ses:DescribeActiveReceiptRuleSet',
    resource: 'account',
    why: 'doctor, setup: the rule per domain',
  },
  { action: 'ses:DescribeReceiptRuleSet', resource: 'account', why: 'doctor: a rule set that is not active' },
  { action: 'ses:CreateReceiptRuleSet', resource: 'account', why: 'setup (only when no rule set is active)' },
  {
    action: 'ses:SetActiveReceiptRuleSet',
    resource: 'account',
    why: 'setup (only when no rule set is active)',
  },
  { action: 'ses:CreateReceiptRule', resource: 'account', why: 'setup (a rule per domain)' },
  { action: 'ses:GetConfigurationSet', resource: 'account', why: 'doctor: SES_CONFIGURATION_SET exists' },
  {
    action: 'ses:GetConfigurationSetEventDestinations',
    resource: 'account',
    why: 'doctor: its events reach OUTBOUND_EVENTS_QUEUE',
  },
  { action: 'ses:CreateConfigurationSet', resource: 'account', why: 'setup' },
  { action: 'ses:CreateConfigurationSetEventDestination', resource: 'account', why: 'setup' },
];
