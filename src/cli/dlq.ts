/**
 * `unified-worker dlq show|redrive|purge`: what waits in each domain's dead-letter queue and whether a redrive can
 * help it (dead-letter.ts), moving it back (dlq-redrive.ts), and removing what never can succeed (dlq-purge.ts).
 */
import { Command } from 'commander';

import { createOperatorQueue } from '../aws/operator-queue.ts';
import { notificationSourcesFor } from '../config/config.ts';
import { command, describeError, type CliApp, type CommandContext, type CommonOptions } from './command.ts';
import { judgeDeadLetter, type Redrivable } from './dead-letter.ts';
import { verdictReader } from './audit.ts';
import { DEFAULT_PURGE_SCAN, purgeDlq, type PurgeOptions } from './dlq-purge.ts';
import { redriveDlq, type RedriveOptions } from './dlq-redrive.ts';
import { EXIT_FAILED, EXIT_OK } from './exit.ts';
import { collect, parseInteger } from './options.ts';
import { plural } from './output.ts';
import { resolveDomainQueues, type DomainQueues } from './queues.ts';

export type { RedrivePath, RedriveReport } from './dlq-redrive.ts';
export type { PurgedReport } from './dlq-purge.ts';

const DEFAULT_SAMPLE = 10;
const MAX_SAMPLE = 100;
/** How long sampled messages stay hidden while `show` reads them (they are released right after). */
const SAMPLE_HOLD_SECONDS = 30;

interface ShowOptions extends CommonOptions {
  sample?: string;
}

export function dlqCommand(app: CliApp): Command {
  const dlq = new Command('dlq').description(
    "what waits in each domain's dead-letter queue, moving it back, and removing what can never succeed",
  );
  dlq.addCommand(
    command(
      app,
      new Command('show')
        .description('count, oldest, and a sample with the SES ids, whether each is redrivable and why')
        .option(
          '--sample <n>',
          `how many messages to look at (default ${DEFAULT_SAMPLE}, at most ${MAX_SAMPLE})`,
        ),
      { domains: 'required', run: (context, options: ShowOptions) => showDlq(context, options) },
    ),
  );
  dlq.addCommand(
    command(
      app,
      new Command('redrive')
        .description(
          "move the dead-letter queue back to the domain's queue (StartMessageMoveTask, or receive/send/delete)",
        )
        .option(
          '--max <n>',
          'with the receive/send/delete fallback: move at most this many (default: the count at start)',
        )
        .option('--no-wait', 'start the SQS move task and return without following it'),
      { domains: 'required', run: (context, options: RedriveOptions) => redriveDlq(context, options) },
    ),
  );
  dlq.addCommand(
    command(
      app,
      new Command('purge')
        .description('remove chosen dead letters for good, after a confirmation; an audit line for each')
        .option('--id <id>', 'an SES or SQS message id to remove (repeatable, or comma-separated)', collect)
        .option('--never-redrivable', 'remove every message a redrive can never help (see dlq show)')
        .option('--yes', 'do not ask (for scripts; without a terminal it is required)')
        .option('--max <n>', `look at this many messages per queue at most (default ${DEFAULT_PURGE_SCAN})`),
      {
        domains: 'required',
        run: (context, options: PurgeOptions) => purgeDlq(context, app.streams, options),
      },
    ),
  );
  return dlq;
}

export interface DlqSample {
  sqsMessageId: string;
  sentAt?: string;
  receiveCount?: number;
  sesMessageId?: string;
  recipients?: string[];
  redrivable: Redrivable;
  reason: string;
}

export interface DlqReport {
  domain: string;
  queue: string;
  deadLetterQueue: string;
  waiting: number;
  inFlight: number;
  /** The oldest send time among the sampled messages; `oldestExact` when the sample is the whole queue. */
  oldest?: string;
  oldestExact: boolean;
  samples: DlqSample[];
}

async function showDlq(context: CommandContext, options: ShowOptions): Promise<number> {
  const sample = parseInteger('--sample', options.sample, { min: 0, max: MAX_SAMPLE }, DEFAULT_SAMPLE);
  const reports: DlqReport[] = [];
  const errors: Array<{ domain: string; error: string }> = [];
  for (const domain of context.config.domains) {
    try {
      const queues = await resolveDomainQueues(context.clients.sqs, context.config, domain);
      reports.push(await inspectDlq(context, queues, sample));
    } catch (error) {
      errors.push({ domain, error: describeError(error) });
    }
  }
  context.out.result({ deadLetterQueues: reports, errors });
  for (const report of reports) printReport(context, report);
  for (const { domain, error } of errors) context.out.line(`${domain}: ${error}`);
  return errors.length > 0 ? EXIT_FAILED : EXIT_OK;
}

async function inspectDlq(context: CommandContext, queues: DomainQueues, sample: number): Promise<DlqReport> {
  const dlq = createOperatorQueue(context.clients.sqs, queues.dlqUrl);
  const attributes = await dlq.attributes();
  const messages = sample > 0 ? await dlq.hold(sample, SAMPLE_HOLD_SECONDS) : [];
  const sources = notificationSourcesFor(context.config, queues.domain);
  const samples: DlqSample[] = [];
  const reader = verdictReader(context);
  try {
    for (const message of messages) {
      const judgement = await judgeDeadLetter(reader, queues.domain, message.body, sources);
      samples.push({
        sqsMessageId: message.messageId,
        ...(message.sentAt !== undefined && { sentAt: new Date(message.sentAt).toISOString() }),
        ...(message.receiveCount !== undefined && { receiveCount: message.receiveCount }),
        ...(judgement.sesMessageId !== undefined && { sesMessageId: judgement.sesMessageId }),
        ...(judgement.recipients !== undefined && { recipients: judgement.recipients }),
        redrivable: judgement.redrivable,
        reason: judgement.reason,
      });
    }
  } finally {
    await dlq.release(messages).catch(() => undefined);
  }
  const times = samples.flatMap((s) => (s.sentAt ? [s.sentAt] : [])).sort();
  return {
    domain: queues.domain,
    queue: queues.queueName,
    deadLetterQueue: queues.dlqName,
    waiting: attributes.visible,
    inFlight: attributes.inFlight,
    ...(times[0] !== undefined && { oldest: times[0] }),
    oldestExact: messages.length > 0 && messages.length >= attributes.visible,
    samples,
  };
}

const VERDICT_WORDS: Record<Redrivable, string> = {
  yes: 'redrivable',
  no: 'never redrivable',
  unknown: 'redrivable?',
};

function printReport(context: CommandContext, report: DlqReport): void {
  const { out } = context;
  const oldest = report.oldest
    ? `, oldest ${report.oldest}${report.oldestExact ? '' : ' (of the sample)'}`
    : '';
  out.line(
    `${report.domain}: ${plural(report.waiting, 'message')} waiting in ${report.deadLetterQueue}` +
      `${report.inFlight > 0 ? ` (+${report.inFlight} being received)` : ''}${oldest}`,
  );
  const count = (r: Redrivable) => report.samples.filter((s) => s.redrivable === r).length;
  if (report.samples.length > 0) {
    const unknown = count('unknown') > 0 ? `, ${count('unknown')} not readable` : '';
    out.line(
      `  of the ${plural(report.samples.length, 'message')} looked at: ${count('yes')} redrivable, ` +
        `${count('no')} never redrivable${unknown}`,
    );
  }
  for (const s of report.samples) {
    const who = s.sesMessageId
      ? `${s.sesMessageId} to ${(s.recipients ?? []).join(', ')}`
      : `SQS ${s.sqsMessageId}`;
    out.line(`  ${s.sentAt ?? '?'}  ${who}  ${VERDICT_WORDS[s.redrivable]}: ${s.reason}`);
  }
  if (report.waiting === 0) return;
  if (count('no') > 0) {
    out.line(
      `  remove what can never succeed: unified-worker dlq purge --domains ${report.domain} --never-redrivable`,
    );
  }
  if (count('no') < report.samples.length || report.samples.length === 0) {
    out.line(
      `  move them back once the cause is fixed: unified-worker dlq redrive --domains ${report.domain}` +
        (count('no') > 0 ? ' (it moves every message: purge the never redrivable first)' : ''),
    );
  }
}
