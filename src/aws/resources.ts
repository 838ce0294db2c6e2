/**
 * The AWS resources the worker depends on, described once: the DynamoDB tables with the key schema and TTL
 * attribute the daemon reads and writes, the per-domain queue and bucket names, and the IAM actions the daemon
 * calls. The daemon's start-up checks, `unified-worker setup` and `doctor`, the AWS CDK template and their tests
 * all read this module, so a change here changes all of them together.
 *
 * No SDK imports: the CDK app under deploy/aws imports this file as it is.
 */
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

/** The dead-letter queue that `setup` and the AWS template create next to a domain's queue. */
export function deadLetterQueueName(queueName: string): string {
  return queueName.endsWith('.fifo') ? `${queueName.slice(0, -5)}-dlq.fifo` : `${queueName}-dlq`;
}

export type IamResourceKind = 'domain-queue' | 'mail-bucket-objects' | 'table' | 'ses-identity' | 'account';

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
  { action: 's3:GetObject', resource: 'mail-bucket-objects', why: 'fetch the mail SES stored' },
  {
    action: 's3:PutObject',
    resource: 'mail-bucket-objects',
    why: 'audit metadata (CopyObject onto itself)',
  },
  { action: 's3:DeleteObject', resource: 'mail-bucket-objects', why: 'remove mail every recipient blocked' },
  { action: 'dynamodb:BatchGetItem', resource: 'table', why: 'rules, blocklists and outbound records' },
  { action: 'dynamodb:GetItem', resource: 'table', why: 'ledger and auto-reply state reads' },
  { action: 'dynamodb:PutItem', resource: 'table', why: 'ledger claims, auto-reply claims' },
  { action: 'dynamodb:UpdateItem', resource: 'table', why: 'ledger completes and lease renewals' },
  { action: 'dynamodb:BatchWriteItem', resource: 'table', why: 'ledger completes of many messages at once' },
  { action: 'dynamodb:DeleteItem', resource: 'table', why: 'release failed claims' },
  { action: 'dynamodb:DescribeTable', resource: 'table', why: 'start-up check of key schemas' },
  { action: 'dynamodb:DescribeTimeToLive', resource: 'table', why: 'start-up check of TTL attributes' },
  { action: 'ses:SendEmail', resource: 'ses-identity', why: 'forwards and auto-replies (SES v2 raw)' },
  { action: 'ses:SendRawEmail', resource: 'ses-identity', why: 'the same send, as some policies name it' },
  { action: 'ses:GetAccount', resource: 'account', why: 'the account sending rate for the send pacer' },
];

/** The actions `unified-worker` operator commands add on top (setup, inject, replay, dlq); not for the daemon. */
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
    why: 'doctor: the domains can send forwards and replies',
  },
];
