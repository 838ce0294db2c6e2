/**
 * `unified-worker doctor`: a checklist of the whole deployment, one line per check, and for every failure the
 * fix. It reads what the daemon would use (same settings) and changes nothing: the mail server check stops
 * after RCPT (RSET, QUIT), no mail is sent.
 */
import { hostname } from 'node:os';

import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import { GetAccountCommand, GetEmailIdentityCommand } from '@aws-sdk/client-sesv2';
import { Command } from 'commander';

import { createSqsQueue } from '../aws/queue.ts';
import { TABLES, nameFromTemplate } from '../aws/resources.ts';
import { checkTable } from '../aws/table-check.ts';
import { awsErrorName } from '../errors.ts';
import { parseMailbox } from './addresses.ts';
import {
  EXIT_FAILED,
  EXIT_OK,
  collect,
  describeError,
  listOption,
  runWithContext,
  withCommonOptions,
  type CliApp,
  type CommandContext,
  type CommonOptions,
} from './command.ts';
import { plural } from './output.ts';
import { domainQueueNames, findQueue, queueFacts, queueNameFromArn } from './queues.ts';
import { tableName } from './setup.ts';
import { probeMailServer } from './smtp-probe.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  check: string;
  status: CheckStatus;
  detail: string;
  /** What to do about a failure or a warning. */
  fix?: string;
}

interface DoctorOptions extends CommonOptions {
  rcpt?: string[];
}

/** Below this the heartbeat (every third of the timeout) has seconds, not minutes, to land. */
const MIN_VISIBILITY_SECONDS = 10;
/** Above this a mail whose worker crashed waits that long before another worker may take it. */
const MAX_SENSIBLE_VISIBILITY_SECONDS = 900;
/** A loop-marker key shorter than this can be guessed. */
const MIN_SECRET_LENGTH = 16;
/** Mail server answers are not worth waiting for longer in a check. */
const PROBE_TIMEOUT_MS = 10_000;

export function doctorCommand(app: CliApp): Command {
  return withCommonOptions(
    new Command('doctor')
      .description('check the deployment: settings, queues, buckets, tables, SES identities, the mail server')
      .option(
        '--rcpt <address>',
        'hosted address the mail server must accept in RCPT TO (repeatable; default postmaster@<each domain>)',
        collect,
      ),
  ).action(
    app.action('doctor', (options: DoctorOptions) =>
      runWithContext(app.streams, options, { domains: true }, async (context) => {
        const recipients = listOption(options.rcpt).map((r) => parseMailbox(r, '--rcpt'));
        const checks = await runDoctor(context, recipients);
        printChecks(context, checks);
        return checks.some((c) => c.status === 'fail') ? EXIT_FAILED : EXIT_OK;
      }),
    ),
  );
}

export async function runDoctor(
  context: CommandContext,
  recipients: readonly string[] = [],
): Promise<CheckResult[]> {
  const { config } = context;
  const groups = await Promise.all([
    Promise.resolve(settingsChecks(context)),
    ...config.domains.map((domain) => queueChecks(context, domain)),
    ...config.domains.map((domain) => bucketCheck(context, domain)),
    tableChecks(context),
    sesChecks(context),
    mailServerChecks(
      context,
      recipients.length > 0 ? recipients : config.domains.map((d) => `postmaster@${d}`),
    ),
  ]);
  return groups.flat();
}

function settingsChecks(context: CommandContext): CheckResult[] {
  const { config } = context;
  const checks: CheckResult[] = [
    {
      check: 'settings',
      status: 'ok',
      detail:
        `valid: ${plural(config.domains.length, 'domain')} (${config.domains.join(', ')}), ` +
        `delivery ${config.smtp.protocol.toUpperCase()} to ${config.smtp.host}, region ${config.aws.region}`,
    },
  ];
  if (config.smtp.protocol === 'lmtp') {
    // Doctor cannot count replicas; it can say what LMTP asks of them (README, "Exactly once").
    checks.push({
      check: 'DELIVERY_PROTOCOL',
      status: 'warn',
      detail:
        'lmtp: a second copy is recognised in the mailbox only while one worker process delivers to it ' +
        "(Dovecot's per-user limit does not serialise two workers' connections)",
      fix: 'run one replica, or deliver through Postfix with DELIVERY_PROTOCOL=smtp',
    });
  }
  const secret = config.inbound.loopMarkerSecret;
  if (secret === '') {
    checks.push({
      check: 'LOOP_MARKER_SECRET',
      status: 'warn',
      detail:
        'not set: anyone can put X-SES-Worker-Processed on a mail and so switch off forwards and auto-replies for it',
      fix: 'set LOOP_MARKER_SECRET to a long random string, the same on every replica (e.g. openssl rand -hex 32)',
    });
  } else if (secret.length < MIN_SECRET_LENGTH) {
    checks.push({
      check: 'LOOP_MARKER_SECRET',
      status: 'warn',
      detail: `only ${secret.length} characters: a short key can be guessed`,
      fix: `use at least ${MIN_SECRET_LENGTH} random characters (e.g. openssl rand -hex 32)`,
    });
  } else {
    checks.push({
      check: 'LOOP_MARKER_SECRET',
      status: 'ok',
      detail: 'set: forged loop markers are ignored',
    });
  }
  return checks;
}

async function queueChecks(context: CommandContext, domain: string): Promise<CheckResult[]> {
  const { sqs } = context.clients;
  const names = domainQueueNames(context.config, domain);
  const check = `queue ${names.queue}`;
  const setupFix = `unified-worker setup --domains ${domain}`;
  let url: string | undefined;
  try {
    url = await findQueue(sqs, names.queue);
  } catch (error) {
    return [
      {
        check,
        status: 'fail',
        detail: describeError(error),
        fix: 'check the region, credentials and sqs:GetQueueUrl',
      },
    ];
  }
  if (url === undefined) {
    return [
      {
        check,
        status: 'fail',
        detail: `does not exist (QUEUE_NAME_TEMPLATE=${context.config.queueNameTemplate}): ${domain}'s mail is not received`,
        fix: `${setupFix}, or set QUEUE_NAME_TEMPLATE to your queue's name`,
      },
    ];
  }
  try {
    const attributes = await createSqsQueue(sqs, url).attributes();
    const facts = await queueFacts(sqs, url);
    return [
      visibilityCheck(check, attributes.visibilityTimeoutSeconds),
      await redriveCheck(context, names.queue, facts.redrive, setupFix),
    ];
  } catch (error) {
    return [
      {
        check,
        status: 'fail',
        detail: describeError(error),
        fix: 'grant sqs:GetQueueAttributes on the queue',
      },
    ];
  }
}

function visibilityCheck(check: string, seconds: number): CheckResult {
  const beat = Math.max(1, Math.floor(seconds / 3));
  if (seconds < MIN_VISIBILITY_SECONDS) {
    return {
      check,
      status: 'fail',
      detail: `visibility timeout ${seconds} s: the heartbeat (every ${beat} s) has too little margin, a slow call and a second worker gets the mail`,
      fix: "set the queue's VisibilityTimeout to 30 s (SetQueueAttributes)",
    };
  }
  const detail = `exists, visibility timeout ${seconds} s (heartbeat every ${beat} s)`;
  if (seconds > MAX_SENSIBLE_VISIBILITY_SECONDS) {
    return {
      check,
      status: 'warn',
      detail: `${detail}: after a crash, mail waits ${Math.round(seconds / 60)} min before another worker takes it`,
      fix: 'a visibility timeout of 30 s is enough: the heartbeat extends it while a mail is worked on',
    };
  }
  return { check, status: 'ok', detail };
}

async function redriveCheck(
  context: CommandContext,
  queue: string,
  redrive: { deadLetterTargetArn: string; maxReceiveCount: number | undefined } | undefined,
  setupFix: string,
): Promise<CheckResult> {
  const check = `redrive ${queue}`;
  const maxReceives = context.config.poll.maxReceives;
  if (!redrive) {
    return {
      check,
      status: 'fail',
      detail: 'no redrive policy: a malformed or always-failing message circulates until its retention ends',
      fix: `${setupFix} (adds a dead-letter queue and the policy)`,
    };
  }
  const dlq = queueNameFromArn(redrive.deadLetterTargetArn);
  if ((await findQueue(context.clients.sqs, dlq)) === undefined) {
    return {
      check,
      status: 'fail',
      detail: `the redrive policy names ${dlq}, which does not exist: failing mail has nowhere to go`,
      fix: `create the queue ${dlq}, or point the redrive policy at an existing dead-letter queue`,
    };
  }
  if (redrive.maxReceiveCount !== maxReceives) {
    return {
      check,
      status: 'fail',
      detail: `maxReceiveCount is ${String(redrive.maxReceiveCount)} but MAX_RECEIVES is ${maxReceives}: the worker marks mail failed at a different count than SQS moves it`,
      fix: `set MAX_RECEIVES=${String(redrive.maxReceiveCount)}, or the policy's maxReceiveCount to ${maxReceives}`,
    };
  }
  return { check, status: 'ok', detail: `to ${dlq} after ${maxReceives} receives (= MAX_RECEIVES)` };
}

async function bucketCheck(context: CommandContext, domain: string): Promise<CheckResult> {
  const bucket = nameFromTemplate(context.config.bucketNameTemplate, domain);
  const check = `bucket ${bucket}`;
  try {
    await context.clients.s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return { check, status: 'ok', detail: 'exists and is readable' };
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 404) {
      return {
        check,
        status: 'fail',
        detail: `does not exist (BUCKET_NAME_TEMPLATE=${context.config.bucketNameTemplate})`,
        fix: `unified-worker setup --domains ${domain}, or set BUCKET_NAME_TEMPLATE to the bucket your SES receipt rule writes to`,
      };
    }
    return {
      check,
      status: 'fail',
      detail: status === 403 ? 'access denied' : describeError(error),
      fix: 'grant s3:ListBucket on the bucket (and s3:GetObject on its objects), or check that this account owns it',
    };
  }
}

async function tableChecks(context: CommandContext): Promise<CheckResult[]> {
  const client = context.clients.ddb as unknown as DynamoDBClient;
  const results: CheckResult[] = [];
  for (const spec of TABLES) {
    const table = tableName(context, spec);
    if (table === undefined) {
      results.push({
        check: `table (${spec.setting})`,
        status: 'warn',
        detail: 'switched off: a retried message may deliver again to recipients that already got it',
        fix: `set ${spec.setting} (and run unified-worker setup to create it)`,
      });
      continue;
    }
    const check = `table ${table}`;
    const result = await checkTable(client, spec, table);
    if (result.inconclusive !== undefined) {
      results.push({
        check,
        status: 'fail',
        detail: `not checked: ${result.inconclusive}`,
        fix: 'run doctor again',
      });
    } else if (!result.ok) {
      results.push({ check, status: 'fail', ...splitRemedy(result.problems) });
    } else if (result.warnings.length > 0) {
      results.push({ check, status: 'warn', ...splitRemedy(result.warnings) });
    } else {
      results.push({
        check,
        status: 'ok',
        detail: `key ${spec.partitionKey}${spec.ttlAttribute ? `, TTL on ${spec.ttlAttribute}` : ''} (${spec.purpose})`,
      });
    }
  }
  return results;
}

/** checkTable's messages end with the remedy after their last colon: the finding goes on the check line, the remedy on the fix line. */
function splitRemedy(messages: readonly string[]): { detail: string; fix: string } {
  const cut = (m: string) => m.lastIndexOf(': ');
  return {
    detail: messages.map((m) => (cut(m) > 0 ? m.slice(0, cut(m)) : m)).join('; '),
    fix: messages.map((m) => (cut(m) > 0 ? m.slice(cut(m) + 2) : 'see the message')).join('; '),
  };
}

async function sesChecks(context: CommandContext): Promise<CheckResult[]> {
  const { sesv2 } = context.clients;
  const results: CheckResult[] = [];
  try {
    const account = await sesv2.send(new GetAccountCommand({}));
    if (account.SendingEnabled === false) {
      results.push({
        check: 'SES account',
        status: 'fail',
        detail: 'sending is disabled: forwards and auto-replies to outside addresses fail',
        fix: 'see the SES console (account-level sending paused; a review may be open)',
      });
    } else if (account.ProductionAccessEnabled === false) {
      results.push({
        check: 'SES account',
        status: 'warn',
        detail: 'in the SES sandbox: forwards and auto-replies reach only verified addresses',
        fix: 'request production access in the SES console',
      });
    } else {
      results.push({ check: 'SES account', status: 'ok', detail: 'sending enabled, production access' });
    }
  } catch (error) {
    results.push(sesNotChecked('SES account', 'GetAccount', error));
  }
  for (const domain of context.config.domains) {
    const check = `SES identity ${domain}`;
    try {
      const identity = await sesv2.send(new GetEmailIdentityCommand({ EmailIdentity: domain }));
      if (identity.VerifiedForSendingStatus === true) {
        results.push({
          check,
          status: 'ok',
          detail: 'verified: forwards and auto-replies may be sent from it',
        });
      } else {
        results.push({
          check,
          status: 'fail',
          detail: `not verified for sending (${identity.VerificationStatus ?? 'unknown status'}): SES refuses forwards and auto-replies from ${domain}`,
          fix: `finish the domain verification of ${domain} in SES (DKIM records)`,
        });
      }
    } catch (error) {
      if (awsErrorName(error) === 'NotFoundException') {
        results.push({
          check,
          status: 'fail',
          detail: `${domain} is not an SES identity in ${context.config.aws.region}: SES refuses forwards and auto-replies from it`,
          fix: `create and verify the domain identity ${domain} in SES (${context.config.aws.region})`,
        });
      } else {
        results.push(sesNotChecked(check, 'GetEmailIdentity', error));
      }
    }
  }
  return results;
}

function sesNotChecked(check: string, operation: string, error: unknown): CheckResult {
  const name = awsErrorName(error) ?? '';
  if (name === 'AccessDeniedException') {
    return { check, status: 'fail', detail: `${operation} denied`, fix: `grant ses:${operation}` };
  }
  return {
    check,
    status: 'warn',
    detail: `not checked: this SES endpoint does not answer ${operation} (${(describeError(error).split('\n')[0] ?? '').slice(0, 80)})`,
  };
}

async function mailServerChecks(
  context: CommandContext,
  recipients: readonly string[],
): Promise<CheckResult[]> {
  const { smtp } = context.config;
  const lmtp = smtp.protocol === 'lmtp';
  const targets = [
    {
      name: lmtp ? `LMTP ${smtp.host}:${smtp.lmtpPort}` : `SMTP ${smtp.host}:${smtp.port}`,
      port: lmtp ? smtp.lmtpPort : smtp.port,
      lmtp,
      setting: lmtp ? 'LMTP_PORT' : 'SMTP_PORT',
    },
    {
      name: `internal SMTP ${smtp.host}:${smtp.internalPort}`,
      port: smtp.internalPort,
      lmtp: false,
      setting: 'INTERNAL_SMTP_PORT',
    },
  ];
  return Promise.all(
    targets.map(async (target): Promise<CheckResult> => {
      const result = await probeMailServer({
        host: smtp.host,
        port: target.port,
        lmtp: target.lmtp,
        recipients,
        timeoutMs: Math.min(smtp.timeoutMs, PROBE_TIMEOUT_MS),
        clientName: hostname() || 'unified-worker-doctor',
      });
      const check = `mail server ${target.name}`;
      if (result.error !== undefined) {
        return {
          check,
          status: 'fail',
          detail: result.error,
          fix:
            target.setting === 'INTERNAL_SMTP_PORT'
              ? 'the internal port comes from docker/mailserver/user-patches.sh (postconf -M 2525/inet must show it); check SMTP_HOST and INTERNAL_SMTP_PORT'
              : `is the mail server running and reachable from here? check SMTP_HOST and ${target.setting}${lmtp ? ' (Dovecot LMTP listener: docker/mailserver/dovecot.cf)' : ''}`,
        };
      }
      if (result.refused.length > 0) {
        return {
          check,
          status: 'fail',
          detail: `refused ${result.refused.map((r) => `${r.recipient} (${r.reply})`).join(', ')}`,
          fix: 'the domain must be hosted by the mail server and the address exist; name a real mailbox with --rcpt',
        };
      }
      return {
        check,
        status: 'ok',
        detail: `accepts RCPT TO ${recipients.join(', ')} (then RSET, nothing sent)`,
      };
    }),
  );
}

const MARK: Record<CheckStatus, string> = { ok: '[ok]  ', warn: '[warn]', fail: '[FAIL]' };

function printChecks(context: CommandContext, checks: CheckResult[]): void {
  const { out, config } = context;
  const failed = checks.filter((c) => c.status === 'fail').length;
  const warnings = checks.filter((c) => c.status === 'warn').length;
  out.result({ domains: config.domains, ok: failed === 0, failed, warnings, checks });
  out.line(`doctor for ${config.domains.join(', ')}`);
  const width = Math.max(...checks.map((c) => c.check.length));
  for (const c of checks) {
    out.line(`${MARK[c.status]} ${c.check.padEnd(width)}  ${c.detail}`);
    if (c.fix && c.status !== 'ok') out.line(`       ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  out.line(
    failed === 0
      ? `All ${checks.length} checks passed${warnings > 0 ? ` (${plural(warnings, 'warning')})` : ''}.`
      : `${plural(failed, 'check')} failed, ${plural(warnings, 'warning')}.`,
  );
}
