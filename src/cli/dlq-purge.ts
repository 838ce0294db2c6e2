/**
 * `unified-worker dlq purge`: removes chosen dead letters for good — by SES or SQS message id, or every one that
 * can never be redriven (dead-letter.ts) — after listing them and a confirmation on the terminal (`--yes` for
 * scripts). Each removal leaves an audit line on stderr and, where the mail's S3 object exists, `dlq_purged_at` and
 * `dlq_purge_reason` in its metadata. The chosen messages stay hidden in the queue while the question is open.
 */
import { purgedMetadata } from '../aws/audit-metadata.ts';
import { createS3MailStore } from '../aws/mail-store.ts';
import { createOperatorQueue, type HeldMessage, type OperatorQueue } from '../aws/operator-queue.ts';
import { systemClock } from '../clock.ts';
import { notificationSourcesFor } from '../config/config.ts';
import { describeError, type CommandContext, type CommonOptions } from './command.ts';
import { confirm, requireTerminal } from './confirm.ts';
import { judgeDeadLetter, type Judgement } from './dead-letter.ts';
import { verdictReader } from './audit.ts';
import { EXIT_FAILED, EXIT_OK, UsageError } from './exit.ts';
import { listOption, parseInteger } from './options.ts';
import { plural, type CliStreams } from './output.ts';
import { resolveDomainQueues, type DomainQueues } from './queues.ts';

/** How long the looked-at messages stay hidden: longer than the question may stay open. */
const PURGE_HOLD_SECONDS = 300;
const PROMPT_TIMEOUT_MS = 240_000;
export const DEFAULT_PURGE_SCAN = 1000;
const MAX_PURGE_SCAN = 10_000;
/** HeadObject calls in flight while judging. */
const JUDGE_CONCURRENCY = 8;

export interface PurgeOptions extends CommonOptions {
  id?: string[];
  neverRedrivable?: boolean;
  yes?: boolean;
  max?: string;
}

/** A dead letter chosen for removal. */
interface Chosen {
  queues: DomainQueues;
  dlq: OperatorQueue;
  message: HeldMessage;
  judgement: Judgement;
}

export interface PurgedReport {
  domain: string;
  deadLetterQueue: string;
  sqsMessageId: string;
  sesMessageId?: string;
  recipients?: string[];
  redrivable: Judgement['redrivable'];
  reason: string;
  /** False when SQS did not delete it (it stays in the queue). */
  removed: boolean;
  /** The S3 audit mark: `written`, `no object` to write it on, or why it was not written. */
  audit: string;
}

export async function purgeDlq(
  context: CommandContext,
  streams: CliStreams,
  options: PurgeOptions,
): Promise<number> {
  const ids = new Set(listOption(options.id));
  if (ids.size === 0 && !options.neverRedrivable) {
    throw new UsageError('say which: --id <SES or SQS message id> (repeatable), or --never-redrivable');
  }
  const scan = parseInteger('--max', options.max, { min: 1, max: MAX_PURGE_SCAN }, DEFAULT_PURGE_SCAN);
  requireTerminal(streams, options.yes, 'dlq purge');
  const { out } = context;
  const chosen: Chosen[] = [];
  const errors: Array<{ domain: string; error: string }> = [];
  const found = new Set<string>();
  for (const domain of context.config.domains) {
    try {
      chosen.push(
        ...(await chooseInDomain(context, domain, ids, options.neverRedrivable === true, scan, found)),
      );
    } catch (error) {
      errors.push({ domain, error: describeError(error) });
    }
  }
  const notFound = [...ids].filter((id) => !found.has(id));
  for (const id of notFound) out.warn(`--id ${id}: not in the dead-letter queues looked at`);
  for (const { domain, error } of errors) out.warn(`${domain}: ${error}`);
  for (const c of chosen) out.line(`  ${describeChosen(c)}`);
  if (chosen.length === 0) {
    out.line('nothing to remove');
    out.result({ purged: [], notFound, errors });
    return notFound.length > 0 || errors.length > 0 ? EXIT_FAILED : EXIT_OK;
  }
  const question = `Remove ${plural(chosen.length, 'message')} from the dead-letter queue for good?`;
  if (!(options.yes === true || (await confirm(streams, question, PROMPT_TIMEOUT_MS)))) {
    await releaseAll(chosen);
    out.line('nothing removed');
    out.result({ purged: [], declined: chosen.length, notFound, errors });
    return EXIT_FAILED;
  }
  const purged = await removeAll(context, chosen);
  out.result({ purged, notFound, errors });
  const removed = purged.filter((p) => p.removed).length;
  out.line(
    `removed ${plural(removed, 'message')}${removed < purged.length ? `; ${purged.length - removed} could not be deleted` : ''}`,
  );
  const failed = purged.some((p) => !p.removed || (p.audit !== 'written' && p.audit !== 'no object'));
  return failed || notFound.length > 0 || errors.length > 0 ? EXIT_FAILED : EXIT_OK;
}

/** Looks at up to `scan` dead letters of the domain; keeps the chosen hidden and releases the rest. */
async function chooseInDomain(
  context: CommandContext,
  domain: string,
  ids: ReadonlySet<string>,
  neverRedrivable: boolean,
  scan: number,
  found: Set<string>,
): Promise<Chosen[]> {
  const queues = await resolveDomainQueues(context.clients.sqs, context.config, domain);
  const dlq = createOperatorQueue(context.clients.sqs, queues.dlqUrl);
  const held = await dlq.hold(scan, PURGE_HOLD_SECONDS);
  if (held.length >= scan) {
    context.out.warn(
      `${queues.dlqName}: looked at the first ${scan} messages only (--max): run purge again for the rest`,
    );
  }
  const sources = notificationSourcesFor(context.config, domain);
  const chosen: Chosen[] = [];
  const others: HeldMessage[] = [];
  const reader = verdictReader(context);
  try {
    for (let i = 0; i < held.length; i += JUDGE_CONCURRENCY) {
      const batch = held.slice(i, i + JUDGE_CONCURRENCY);
      const judged = await Promise.all(batch.map((m) => judgeDeadLetter(reader, domain, m.body, sources)));
      batch.forEach((message, index) => {
        const judgement = judged[index] as Judgement;
        const byId = [message.messageId, judgement.sesMessageId].filter(
          (id) => id !== undefined && ids.has(id),
        );
        for (const id of byId) found.add(id as string);
        if (byId.length > 0 || (neverRedrivable && judgement.redrivable === 'no')) {
          chosen.push({ queues, dlq, message, judgement });
        } else {
          others.push(message);
        }
      });
    }
  } catch (error) {
    await dlq.release(held).catch(() => undefined);
    throw error;
  }
  await dlq.release(others).catch(() => undefined);
  return chosen;
}

function describeChosen(c: Chosen): string {
  const { judgement: j, message } = c;
  const who = j.sesMessageId ? `SES ${j.sesMessageId} to ${(j.recipients ?? []).join(', ')}` : 'no SES id';
  const kind = j.redrivable === 'no' ? 'never redrivable' : j.redrivable === 'yes' ? 'redrivable' : 'unknown';
  return `${c.queues.dlqName}: SQS ${message.messageId} (${who}), ${kind}: ${j.reason}`;
}

async function releaseAll(chosen: readonly Chosen[]): Promise<void> {
  for (const c of chosen) await c.dlq.release([c.message]).catch(() => undefined);
}

async function removeAll(context: CommandContext, chosen: readonly Chosen[]): Promise<PurgedReport[]> {
  const store = createS3MailStore(context.clients.s3, { maxAttempts: 1, clock: systemClock });
  const notDeleted = new Set<string>();
  for (const dlq of new Set(chosen.map((c) => c.dlq))) {
    const messages = chosen.filter((c) => c.dlq === dlq).map((c) => c.message);
    for (const m of await dlq.remove(messages)) notDeleted.add(m.messageId);
  }
  const reports: PurgedReport[] = [];
  for (const c of chosen) {
    const { judgement: j, message, queues } = c;
    const removed = !notDeleted.has(message.messageId);
    let audit = 'no object';
    if (removed) {
      context.out.audit(`unified-worker dlq purge: removed ${describeChosen(c)}`);
      if (j.stored) {
        audit = await store
          .updateMetadata(j.stored, purgedMetadata(Date.now(), j.reason))
          .then(() => 'written')
          .catch((error: unknown) => describeError(error));
        if (audit !== 'written') {
          context.out.warn(
            `the audit mark on s3://${j.stored.bucket}/${j.stored.key} was not written: ${audit}`,
          );
        }
      }
    } else {
      context.out.warn(
        `${queues.dlqName}: SQS ${message.messageId} could not be deleted: it stays in the queue`,
      );
    }
    reports.push({
      domain: queues.domain,
      deadLetterQueue: queues.dlqName,
      sqsMessageId: message.messageId,
      ...(j.sesMessageId !== undefined && { sesMessageId: j.sesMessageId }),
      ...(j.recipients !== undefined && { recipients: j.recipients }),
      redrivable: j.redrivable,
      reason: j.reason,
      removed,
      audit,
    });
  }
  return reports;
}
