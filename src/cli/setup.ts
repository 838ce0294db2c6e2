/**
 * `unified-worker setup`: creates, idempotently, everything on the AWS side the mail path needs — the DynamoDB
 * tables; per domain the queue (dead-letter queue, redrive at MAX_RECEIVES), the bucket and the policy letting SES
 * write into it, the topic, the queue's subscription and the policy letting the topic send, the receipt rule, and
 * the SES identity; once, the configuration set with its event destination and the outbound events queue. What
 * exists is never changed except to add what is missing (a redrive policy, TTL, a policy statement, a rule); a
 * resource in a shape the daemon cannot use is reported as failed, not replaced. DNS (MX, DKIM) is printed, not
 * touched. Progress shows on stderr; the steps live in ./setup/.
 */
import { Command } from 'commander';

import {
  CREDENTIALS_HELP,
  classifyCallerError,
  getCallerIdentity,
  type CallerIdentity,
} from '../aws/caller-identity.ts';
import { createControlClients, type ControlClients } from '../aws/control-clients.ts';
import { TABLES, nameFromTemplate, notificationTopicName, sesInboundHost } from '../aws/resources.ts';
import { configuredTableName } from '../aws/table-check.ts';
import { ConfigError, WorkerError } from '../errors.ts';
import { command, describeError, type CliApp, type CommandContext } from './command.ts';
import { EXIT_FAILED, EXIT_OK } from './exit.ts';
import { plural } from './output.ts';
import { domainQueueNames } from './queues.ts';
import { ensureBucket, ensureBucketPolicy } from './setup/buckets.ts';
import { ensureIdentity } from './setup/identity.ts';
import { SetupProgress, type SetupContext, type SetupItem, type SetupOutcome } from './setup/item.ts';
import { ensureSubscription, ensureTopic } from './setup/notifications.ts';
import { OUTBOUND_STEPS, setupOutboundEvents } from './setup/outbound-events.ts';
import { ensureQueues } from './setup/queues.ts';
import {
  ensureReceiptRule,
  existingTopic,
  loadRuleSetState,
  type RuleSetState,
} from './setup/receipt-rule.ts';
import { ensureTable } from './setup/tables.ts';

export type { SetupItem, SetupKind, SetupOutcome } from './setup/item.ts';

/** Progress steps per domain: queue, bucket, bucket policy, topic, subscription, queue policy, rule, identity. */
const DOMAIN_STEPS = 8;

export function setupCommand(app: CliApp): Command {
  const definition = new Command('setup').description(
    'create what the mail path needs (idempotent): tables; per domain queue, bucket, topic, subscription, policies, receipt rule, SES identity; the configuration set and events queue',
  );
  return command(app, definition, {
    domains: 'required',
    async run(context) {
      const control = createControlClients(context.config.aws);
      try {
        const items = await runSetup({ ...context, control });
        printSetup(context, items);
        return items.some((i) => i.outcome === 'failed') ? EXIT_FAILED : EXIT_OK;
      } finally {
        control.destroy();
      }
    },
  });
}

export async function runSetup(context: CommandContext & { control: ControlClients }): Promise<SetupItem[]> {
  const { config, out } = context;
  const caller = await callerOrStop(context.control);
  const total = TABLES.length + config.domains.length * DOMAIN_STEPS + OUTBOUND_STEPS;
  const setup: SetupContext = { ...context, caller, progress: new SetupProgress(out, total) };
  try {
    const items: SetupItem[] = [];
    for (const spec of TABLES) {
      const table = configuredTableName(config, spec);
      if (table !== undefined) items.push(await ensureTable(setup, spec, table));
    }
    const rules = await loadRuleSetState(setup);
    for (const domain of config.domains) items.push(...(await setupDomain(setup, rules, domain)));
    items.push(...(await setupOutboundEvents(setup)));
    return items;
  } finally {
    setup.progress.finish();
  }
}

/** Setup cannot write a bucket policy or name a topic without the account: no caller, no setup. */
async function callerOrStop(control: ControlClients): Promise<CallerIdentity> {
  try {
    return await getCallerIdentity(control.sts);
  } catch (error) {
    const kind = classifyCallerError(error);
    if (kind === 'no-credentials')
      throw new ConfigError('AWS credentials', `none found: ${CREDENTIALS_HELP}`);
    if (kind === 'refused') {
      throw new ConfigError(
        'AWS credentials',
        `refused by AWS (${describeError(error)}): use a current access key`,
      );
    }
    throw new WorkerError(
      'CONFIG_INVALID',
      `cannot tell which AWS account this is (STS: ${describeError(error)})`,
      {
        temporary: true,
        cause: error,
      },
    );
  }
}

async function setupDomain(context: SetupContext, rules: RuleSetState, domain: string): Promise<SetupItem[]> {
  const { config } = context;
  const names = domainQueueNames(config, domain);
  const bucketName = nameFromTemplate(config.bucketNameTemplate, domain);
  const queues = await ensureQueues(context, names);
  const bucket = await ensureBucket(context, bucketName);
  const items = [...queues.items, bucket];
  if (bucket.outcome !== 'failed') items.push(await ensureBucketPolicy(context, bucketName));
  let topicArn = existingTopic(rules, domain);
  if (topicArn === undefined) {
    const topic = await ensureTopic(context, notificationTopicName(names.queue));
    items.push(topic);
    topicArn = topic.arn;
  }
  if (topicArn !== undefined && queues.queue !== undefined) {
    items.push(...(await ensureSubscription(context, topicArn, { name: names.queue, ...queues.queue })));
  }
  if (topicArn !== undefined && bucket.outcome !== 'failed') {
    items.push(...(await ensureReceiptRule(context, rules, { domain, bucket: bucketName, topicArn })));
  }
  items.push(await ensureIdentity(context, domain));
  return items;
}

function printSetup(context: CommandContext, items: SetupItem[]): void {
  const { out, config } = context;
  const region = config.aws.region;
  const mx = config.domains.map((d) => `${d}. MX 10 ${sesInboundHost(region)}`);
  const records = [...mx, ...items.flatMap((i) => i.records ?? [])];
  out.result({ domains: config.domains, region, items, dnsRecords: records });
  out.line(`setup for ${config.domains.join(', ')} (region ${region})`);
  const width = Math.max(...items.map((i) => `${i.kind} ${i.name}`.length));
  for (const i of items) {
    const details = i.details.length > 0 ? `: ${i.details.join('; ')}` : '';
    out.line(`  ${`${i.kind} ${i.name}`.padEnd(width)}  ${i.outcome}${details}`);
    for (const warning of i.warnings) out.line(`  ${' '.repeat(width)}  ! ${warning}`);
  }
  const count = (outcome: SetupOutcome) => items.filter((i) => i.outcome === outcome).length;
  const warnings = items.reduce((n, i) => n + i.warnings.length, 0);
  out.line(
    `${count('created')} created, ${count('updated')} updated, ${count('existed')} already existed, ` +
      `${count('failed')} failed; ${plural(warnings, 'warning')}.`,
  );
  if (!config.tables.idempotency) {
    out.line('The idempotency table is switched off (IDEMPOTENCY_TABLE), so it was not created.');
  }
  out.line('DNS, which setup does not touch (publish these; doctor checks the MX):');
  for (const record of records) out.line(`  ${record}`);
  out.line('Check everything with: unified-worker doctor');
}
