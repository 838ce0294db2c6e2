/**
 * `unified-worker setup`: creates, idempotently, what the worker needs and can create itself — the DynamoDB
 * tables (key schema and TTL from src/aws/resources.ts), and per domain the queue with its dead-letter queue and
 * redrive policy (`maxReceiveCount` = MAX_RECEIVES) and the mail bucket. Existing resources are never changed
 * except to add what is missing (a redrive policy, TTL); a resource that exists in a shape the daemon cannot
 * use is reported as failed, not replaced.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  UpdateTimeToLiveCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, HeadBucketCommand, type BucketLocationConstraint } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { Command } from 'commander';

import { TABLES, nameFromTemplate, type TableSpec } from '../aws/resources.ts';
import { checkTable } from '../aws/table-check.ts';
import { awsErrorName } from '../errors.ts';
import {
  EXIT_FAILED,
  EXIT_OK,
  describeError,
  runWithContext,
  withCommonOptions,
  type CliApp,
  type CommandContext,
  type CommonOptions,
} from './command.ts';
import { plural } from './output.ts';
import {
  domainQueueNames,
  findQueue,
  queueFacts,
  queueNameFromArn,
  type DomainQueueNames,
} from './queues.ts';

export type SetupOutcome = 'created' | 'existed' | 'updated' | 'failed';

export interface SetupItem {
  kind: 'table' | 'queue' | 'dead-letter queue' | 'bucket';
  name: string;
  outcome: SetupOutcome;
  /** What was done or found, e.g. "TTL enabled on expires_at". */
  details: string[];
  /** Works, but not as intended (TTL unavailable, a differing redrive count). */
  warnings: string[];
}

/** SQS's longest retention: what waits in a dead-letter queue needs time to be looked at. */
const DLQ_RETENTION_SECONDS = 14 * 86_400;
/** DescribeTable polls while a new table is CREATING (AWS takes seconds; emulators none). */
const TABLE_ACTIVE_POLLS = 120;

/** The endpoints that lack UpdateTimeToLive (dynalite) answer this way. */
const UNSUPPORTED = new Set(['UnknownOperationException', 'InvalidAction', 'UnsupportedOperation']);

export function setupCommand(app: CliApp): Command {
  return withCommonOptions(
    new Command('setup').description(
      'create the tables, and per domain the queue with its dead-letter queue and the mail bucket (idempotent)',
    ),
  ).action(
    app.action('setup', (options: CommonOptions) =>
      runWithContext(app.streams, options, { domains: true }, async (context) => {
        const items = await runSetup(context);
        printSetup(context, items);
        return items.some((i) => i.outcome === 'failed') ? EXIT_FAILED : EXIT_OK;
      }),
    ),
  );
}

export async function runSetup(context: CommandContext): Promise<SetupItem[]> {
  const { config } = context;
  const items: SetupItem[] = [];
  for (const spec of TABLES) {
    const table = tableName(context, spec);
    if (table !== undefined) items.push(await ensureTable(context, spec, table));
  }
  for (const domain of config.domains) {
    items.push(...(await ensureQueues(context, domain)));
    items.push(await ensureBucket(context, nameFromTemplate(config.bucketNameTemplate, domain)));
  }
  return items;
}

/** The configured name of a table; undefined for the idempotency table when the ledger is switched off. */
export function tableName(context: CommandContext, spec: TableSpec): string | undefined {
  const name = context.config.tables[spec.role];
  return name === '' ? undefined : name;
}

function item(kind: SetupItem['kind'], name: string, outcome: SetupOutcome): SetupItem {
  return { kind, name, outcome, details: [], warnings: [] };
}

async function ensureTable(context: CommandContext, spec: TableSpec, table: string): Promise<SetupItem> {
  const client = context.clients.ddb as unknown as DynamoDBClient;
  const result = item('table', table, 'existed');
  try {
    if (await tableExists(client, table)) {
      const check = await checkTable(client, spec, table);
      if (check.inconclusive !== undefined || !check.ok) {
        result.outcome = 'failed';
        result.details.push(...(check.inconclusive ?? check.problems.map((p) => `not changed: ${p}`)));
        return result;
      }
    } else {
      await client.send(
        new CreateTableCommand({
          TableName: table,
          AttributeDefinitions: [{ AttributeName: spec.partitionKey, AttributeType: 'S' }],
          KeySchema: [{ AttributeName: spec.partitionKey, KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      await waitUntilActive(client, table);
      result.outcome = 'created';
      result.details.push(`key ${spec.partitionKey} (S), on-demand capacity`);
    }
  } catch (error) {
    result.outcome = 'failed';
    result.details.push(describeError(error));
    return result;
  }
  if (spec.ttlAttribute) await ensureTtl(client, table, spec.ttlAttribute, result);
  return result;
}

async function tableExists(client: DynamoDBClient, table: string): Promise<boolean> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
    return true;
  } catch (error) {
    if (awsErrorName(error) === 'ResourceNotFoundException') return false;
    throw error;
  }
}

async function waitUntilActive(client: DynamoDBClient, table: string): Promise<void> {
  for (let poll = 0; poll < TABLE_ACTIVE_POLLS; poll++) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: table }));
    if (Table?.TableStatus === 'ACTIVE') return;
    await sleep(1_000);
  }
  throw new Error(`table ${table} did not become ACTIVE within ${TABLE_ACTIVE_POLLS} s`);
}

async function ensureTtl(
  client: DynamoDBClient,
  table: string,
  attribute: string,
  result: SetupItem,
): Promise<void> {
  try {
    const { TimeToLiveDescription } = await client.send(new DescribeTimeToLiveCommand({ TableName: table }));
    const status = TimeToLiveDescription?.TimeToLiveStatus;
    if (
      (status === 'ENABLED' || status === 'ENABLING') &&
      TimeToLiveDescription?.AttributeName === attribute
    ) {
      return;
    }
    if (status === 'ENABLED' || status === 'ENABLING') {
      result.warnings.push(
        `TTL is on "${TimeToLiveDescription?.AttributeName}", not "${attribute}": expired items are never removed; ` +
          `switch it to "${attribute}" (a table has one TTL attribute)`,
      );
      return;
    }
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: table,
        TimeToLiveSpecification: { AttributeName: attribute, Enabled: true },
      }),
    );
    result.details.push(`TTL enabled on ${attribute}`);
    if (result.outcome === 'existed') result.outcome = 'updated';
  } catch (error) {
    const name = awsErrorName(error) ?? '';
    result.warnings.push(
      UNSUPPORTED.has(name)
        ? `TTL could not be enabled on this endpoint (${name}: it has no UpdateTimeToLive); on AWS, enable TTL on "${attribute}"`
        : `TTL on "${attribute}" could not be enabled: ${describeError(error)}`,
    );
  }
}

async function ensureQueues(context: CommandContext, domain: string): Promise<SetupItem[]> {
  const names = domainQueueNames(context.config, domain);
  const dlq = item('dead-letter queue', names.deadLetter, 'existed');
  const queue = item('queue', names.queue, 'existed');
  let dlqArn: string;
  try {
    dlqArn = await ensureDeadLetterQueue(context, names.deadLetter, dlq);
  } catch (error) {
    dlq.outcome = 'failed';
    dlq.details.push(describeError(error));
    queue.outcome = 'failed';
    queue.details.push('not checked: its dead-letter queue is missing');
    return [dlq, queue];
  }
  try {
    await ensureSourceQueue(context, names, dlqArn, queue);
  } catch (error) {
    queue.outcome = 'failed';
    queue.details.push(describeError(error));
  }
  return [dlq, queue];
}

/** Creates the dead-letter queue when missing; returns its ARN. */
async function ensureDeadLetterQueue(
  context: CommandContext,
  name: string,
  result: SetupItem,
): Promise<string> {
  const { sqs } = context.clients;
  let url = await findQueue(sqs, name);
  if (url === undefined) {
    const created = await sqs.send(
      new CreateQueueCommand({
        QueueName: name,
        Attributes: {
          MessageRetentionPeriod: String(DLQ_RETENTION_SECONDS),
          ...(name.endsWith('.fifo') && { FifoQueue: 'true' }),
        },
      }),
    );
    url = created.QueueUrl ?? '';
    result.outcome = 'created';
    result.details.push('messages kept 14 days');
  }
  return (await queueFacts(sqs, url)).arn;
}

/** Creates the domain's queue with its redrive policy, or adds the policy an existing queue lacks. */
async function ensureSourceQueue(
  context: CommandContext,
  names: DomainQueueNames,
  dlqArn: string,
  result: SetupItem,
): Promise<void> {
  const { sqs } = context.clients;
  const maxReceives = context.config.poll.maxReceives;
  const policy = JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: maxReceives });
  const redriveText = `redrive to ${names.deadLetter} after ${maxReceives} receives`;
  const url = await findQueue(sqs, names.queue);
  if (url === undefined) {
    await sqs.send(
      new CreateQueueCommand({
        QueueName: names.queue,
        Attributes: { RedrivePolicy: policy, ...(names.queue.endsWith('.fifo') && { FifoQueue: 'true' }) },
      }),
    );
    result.outcome = 'created';
    result.details.push(redriveText);
    return;
  }
  const facts = await queueFacts(sqs, url);
  if (!facts.redrive) {
    await sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { RedrivePolicy: policy } }));
    result.outcome = 'updated';
    result.details.push(`had no redrive policy: now ${redriveText}`);
    return;
  }
  const target = queueNameFromArn(facts.redrive.deadLetterTargetArn);
  if (target !== names.deadLetter) {
    result.warnings.push(`its redrive policy sends to ${target}, not ${names.deadLetter}: left as it is`);
  }
  if (facts.redrive.maxReceiveCount !== maxReceives) {
    result.warnings.push(
      `redrive maxReceiveCount is ${String(facts.redrive.maxReceiveCount)}, MAX_RECEIVES is ${maxReceives}: left as it is; ` +
        'make them equal (SetQueueAttributes RedrivePolicy, or set MAX_RECEIVES)',
    );
  }
}

async function ensureBucket(context: CommandContext, bucket: string): Promise<SetupItem> {
  const { s3 } = context.clients;
  const result = item('bucket', bucket, 'existed');
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return result;
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status !== 404) {
      result.outcome = 'failed';
      result.details.push(
        status === 403
          ? 'exists but this account may not read it (another account owns the name, or s3:ListBucket is missing)'
          : `HeadBucket failed: ${describeError(error)}`,
      );
      return result;
    }
  }
  const region = context.config.aws.region;
  try {
    await s3.send(
      new CreateBucketCommand({
        Bucket: bucket,
        // us-east-1 is the one region that must not be named.
        ...(region !== 'us-east-1' && {
          CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint },
        }),
      }),
    );
    result.outcome = 'created';
    result.details.push(`in ${region}`);
  } catch (error) {
    result.outcome = 'failed';
    result.details.push(`CreateBucket failed: ${describeError(error)}`);
  }
  return result;
}

function printSetup(context: CommandContext, items: SetupItem[]): void {
  const { out, config } = context;
  out.result({ domains: config.domains, region: config.aws.region, items });
  out.line(`setup for ${config.domains.join(', ')} (region ${config.aws.region})`);
  const width = Math.max(...items.map((i) => `${i.kind} ${i.name}`.length));
  for (const i of items) {
    const details = i.details.length > 0 ? `: ${i.details.join('; ')}` : '';
    out.line(`  ${`${i.kind} ${i.name}`.padEnd(width)}  ${i.outcome}${details}`);
    for (const warning of i.warnings) out.line(`  ${' '.repeat(width)}  ! ${warning}`);
  }
  const count = (outcome: SetupOutcome) => items.filter((i) => i.outcome === outcome).length;
  out.line(
    `${count('created')} created, ${count('updated')} updated, ${count('existed')} already existed, ` +
      `${count('failed')} failed; ${plural(
        items.reduce((n, i) => n + i.warnings.length, 0),
        'warning',
      )}.`,
  );
  if (!config.tables.idempotency) {
    out.line('The idempotency table is switched off (IDEMPOTENCY_TABLE), so it was not created.');
  }
  out.line(
    'Not created by setup: the SES receipt rule with its S3 action and the SNS topic subscribed by each queue ' +
      '(README: "AWS resources, per domain"). Check everything with: unified-worker doctor',
  );
}
