/**
 * `unified-worker inject [file.eml] --to a@x,b@x`: hands a mail to the daemon exactly as SES would — SES's trace
 * headers on top, the object in the domain's bucket, the "Received" notification (verdicts PASS unless
 * `--verdict` says otherwise) in an SNS envelope on the domain's queue — against whatever AWS the settings point
 * to. Without a file it sends a small test mail.
 */
import { open } from 'node:fs/promises';

import { PutObjectCommand } from '@aws-sdk/client-s3';
import { SendMessageCommand, type MessageAttributeValue } from '@aws-sdk/client-sqs';
import { Command, Option } from 'commander';

import type { AwsClients } from '../aws/clients.ts';
import { resolveQueueUrl } from '../aws/queue.ts';
import { nameFromTemplate } from '../aws/resources.ts';
import type { Config } from '../config/config.ts';
import { awsError } from '../errors.ts';
import { splitMessage } from '../mail/header-block.ts';
import { headerView } from '../pipeline/parse.ts';
import { detectEol } from '../pipeline/verdicts.ts';
import { domainPart, parseMailbox } from './addresses.ts';
import { describeAudit, waitForAudit, type AuditResult } from './audit.ts';
import {
  EXIT_FAILED,
  EXIT_OK,
  UsageError,
  collect,
  listOption,
  runWithContext,
  withCommonOptions,
  type CliApp,
  type CommandContext,
  type CommonOptions,
} from './command.ts';
import { buildMime } from './compose-mail.ts';
import {
  DEFAULT_ACCOUNT_ID,
  sesMessageId as newSesMessageId,
  sesNotification,
  snsEnvelope,
} from './ses-notification.ts';
import { allPass, hasSesTrace, parseVerdictOption, sesTraceHeaders, type Verdicts } from './ses-trace.ts';

/**
 * How the notification reaches the queue: S3 action behind an SNS subscription (`sns-s3`, the usual setup),
 * the same with SNS raw message delivery (`raw-s3`), or an SNS action with the mail inline (`sns-inline`).
 */
export type MailShape = 'sns-s3' | 'raw-s3' | 'sns-inline';
export const MAIL_SHAPES: readonly MailShape[] = ['sns-s3', 'raw-s3', 'sns-inline'];

/** What is read into memory at most; SES itself accepts 40 MB. */
export const MAX_INJECT_BYTES = 100 * 1024 * 1024;
/** SES's limit for mail inside an SNS notification. */
export const MAX_INLINE_BYTES = 150 * 1024;
/** --wait bound. */
const MAX_WAIT_SECONDS = 600;

export interface InjectRequest {
  /** The mail as the sender's server sent it; SES's trace headers are added unless it already has them. */
  raw: Buffer;
  recipients: readonly string[];
  /** Envelope sender; '' for a null sender (a bounce). */
  source: string;
  verdicts?: Partial<Verdicts>;
  shape?: MailShape;
  /** Default: a fresh SES-style id. */
  sesMessageId?: string;
}

/** One notification per domain, as per-domain receipt rules produce. */
export interface InjectedMail {
  domain: string;
  sesMessageId: string;
  recipients: string[];
  queueUrl: string;
  sqsMessageId: string;
  /** Undefined for `sns-inline`. */
  bucket?: string;
  key?: string;
}

/** Stores the mail and enqueues its notification for every domain of its recipients. */
export async function injectMail(
  target: { config: Config; clients: AwsClients },
  request: InjectRequest,
): Promise<InjectedMail[]> {
  const { config, clients } = target;
  const sesMessageId = request.sesMessageId ?? newSesMessageId();
  const shape = request.shape ?? 'sns-s3';
  const verdicts: Verdicts = { ...allPass(), ...request.verdicts };
  const stored = hasSesTrace(request.raw)
    ? request.raw
    : Buffer.concat([
        sesTraceHeaders(
          {
            sesMessageId,
            source: request.source,
            recipients: request.recipients,
            verdicts,
            region: config.aws.region,
            timestamp: new Date(),
          },
          detectEol(request.raw),
        ),
        request.raw,
      ]);
  if (shape === 'sns-inline' && stored.length > MAX_INLINE_BYTES) {
    throw new UsageError(
      `an SNS action carries at most ${MAX_INLINE_BYTES / 1024} KB of mail; this one is ${stored.length} bytes`,
    );
  }
  const injected: InjectedMail[] = [];
  for (const [domain, recipients] of groupByDomain(request.recipients)) {
    const receipt: ReceiptToEnqueue = {
      domain,
      sesMessageId,
      source: request.source,
      recipients,
      destination: [...request.recipients],
      verdicts,
      mail: stored,
      rawDelivery: shape === 'raw-s3',
    };
    if (shape !== 'sns-inline') {
      receipt.location = { bucket: nameFromTemplate(config.bucketNameTemplate, domain), key: sesMessageId };
      try {
        await clients.s3.send(
          new PutObjectCommand({ Bucket: receipt.location.bucket, Key: receipt.location.key, Body: stored }),
        );
      } catch (error) {
        throw awsError(
          'S3_ERROR',
          `PutObject s3://${receipt.location.bucket}/${receipt.location.key}`,
          error,
        );
      }
    }
    const sent = await enqueueReceipt(target, receipt);
    injected.push({ domain, sesMessageId, recipients, ...sent, ...receipt.location });
  }
  return injected;
}

/** A receipt for one domain's queue: the mail in S3 (`location`) or inline in the notification. */
export interface ReceiptToEnqueue {
  domain: string;
  sesMessageId: string;
  source: string;
  /** This domain's envelope recipients (`receipt.recipients`). */
  recipients: readonly string[];
  /** Every envelope recipient of the transaction (`mail.destination`). */
  destination: readonly string[];
  verdicts: Verdicts;
  /** The stored mail, or at least its header block (`mail.headers` is read off it). */
  mail: Buffer;
  /** S3 action; without it the mail goes inline (SNS action). */
  location?: { bucket: string; key: string };
  /** SNS raw message delivery: the bare notification, no SNS envelope. */
  rawDelivery?: boolean;
  messageAttributes?: Record<string, MessageAttributeValue>;
}

/** Sends the SES "Received" notification for `receipt` to the domain's queue, as SNS delivers it. */
export async function enqueueReceipt(
  target: { config: Config; clients: AwsClients },
  receipt: ReceiptToEnqueue,
): Promise<{ queueUrl: string; sqsMessageId: string }> {
  const { config, clients } = target;
  const queueUrl = await resolveQueueUrl(
    clients.sqs,
    nameFromTemplate(config.queueNameTemplate, receipt.domain),
  );
  const topicArn = `arn:aws:sns:${config.aws.region}:${DEFAULT_ACCOUNT_ID}:ses-inbound`;
  const notification = sesNotification({
    messageId: receipt.sesMessageId,
    source: receipt.source,
    recipients: [...receipt.recipients],
    destination: [...receipt.destination],
    verdicts: receipt.verdicts,
    topicArn,
    ...(receipt.location ? { ...receipt.location, raw: receipt.mail } : { inlineContent: receipt.mail }),
  });
  const json = JSON.stringify(notification);
  const body = receipt.rawDelivery && receipt.location ? json : snsEnvelope(json, topicArn);
  try {
    const sent = await clients.sqs.send(
      new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: body,
        ...(receipt.messageAttributes && { MessageAttributes: receipt.messageAttributes }),
      }),
    );
    return { queueUrl, sqsMessageId: sent.MessageId ?? '' };
  } catch (error) {
    throw awsError('SQS_ERROR', `SendMessage ${queueUrl}`, error);
  }
}

function groupByDomain(recipients: readonly string[]): Map<string, string[]> {
  const byDomain = new Map<string, string[]>();
  for (const recipient of recipients) {
    const domain = domainPart(recipient);
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), recipient]);
  }
  return byDomain;
}

interface InjectOptions extends CommonOptions {
  to?: string[];
  from?: string;
  subject?: string;
  verdict?: string[];
  shape?: MailShape;
  wait?: string;
}

export function injectCommand(app: CliApp): Command {
  return withCommonOptions(
    new Command('inject')
      .description('hand a mail to the daemon as SES would (S3 object + notification on the queue)')
      .argument('[file]', 'the mail (.eml); without it a short test mail is sent')
      .option('--to <list>', 'envelope recipients, comma-separated or repeated (required)', collect)
      .option(
        '--from <address>',
        "envelope sender; <> for a bounce (default: the mail's Return-Path or From)",
      )
      .option('--subject <text>', 'subject of the test mail (without a file)')
      .option(
        '--verdict <name=status>',
        'SES verdict, spam|virus|spf|dkim|dmarc = PASS|FAIL|GRAY|PROCESSING_FAILED|DISABLED (repeatable)',
        collect,
      )
      .addOption(
        new Option('--shape <shape>', 'how SES delivers the notification')
          .choices(MAIL_SHAPES)
          .default('sns-s3'),
      )
      .option('--wait <seconds>', "wait this long for the daemon's verdict in the S3 metadata"),
  ).action(
    app.action('inject', (file: string | undefined, options: InjectOptions) =>
      runWithContext(app.streams, options, { domains: true }, (context) => runInject(context, file, options)),
    ),
  );
}

async function runInject(
  context: CommandContext,
  file: string | undefined,
  options: InjectOptions,
): Promise<number> {
  const { config, out } = context;
  const recipients = [...new Set(listOption(options.to).map((r) => parseMailbox(r, '--to')))];
  if (recipients.length === 0) throw new UsageError('--to is required: the envelope recipients');
  for (const recipient of recipients) {
    if (!config.domains.includes(domainPart(recipient))) {
      throw new UsageError(
        `--to ${recipient}: ${domainPart(recipient)} is not served (DOMAINS: ${config.domains.join(', ')})`,
      );
    }
  }
  const verdicts: Partial<Verdicts> = {};
  for (const text of listOption(options.verdict)) {
    const parsed = parseVerdictOption(text);
    if (!parsed)
      throw new UsageError(
        `--verdict ${text}: expected spam|virus|spf|dkim|dmarc=PASS|FAIL|GRAY|PROCESSING_FAILED|DISABLED`,
      );
    verdicts[parsed[0]] = parsed[1];
  }
  const waitSeconds = options.wait === undefined ? undefined : Number(options.wait);
  if (
    waitSeconds !== undefined &&
    !(Number.isInteger(waitSeconds) && waitSeconds > 0 && waitSeconds <= MAX_WAIT_SECONDS)
  ) {
    throw new UsageError(`--wait ${options.wait}: a number of seconds, 1..${MAX_WAIT_SECONDS}`);
  }
  const raw = file === undefined ? undefined : await readMailFile(file);
  const source = senderOf(options.from, raw, recipients);
  const mail =
    raw ??
    (await buildMime({
      from: source === '' ? `postmaster@${domainPart(recipients[0] ?? '')}` : source,
      to: recipients,
      subject: options.subject ?? 'Test mail from unified-worker inject',
      text: `This mail was injected with unified-worker inject at ${new Date().toISOString()}.\r\n`,
    }));
  const injected = await injectMail(context, {
    raw: mail,
    recipients,
    source,
    verdicts,
    shape: options.shape ?? 'sns-s3',
  });
  const outcomes: Array<{ domain: string; audit: AuditResult | undefined }> = [];
  for (const item of injected) {
    const where = item.bucket ? `s3://${item.bucket}/${item.key}` : 'inline in the notification';
    out.line(`injected SES message ${item.sesMessageId} for ${item.recipients.join(', ')} (${where})`);
  }
  if (waitSeconds !== undefined) {
    await Promise.all(
      injected.map(async (item) => {
        if (!item.bucket || !item.key) return;
        const location = { bucket: item.bucket, key: item.key, domain: item.domain };
        const audit = await waitForAudit(context, location, waitSeconds * 1000);
        outcomes.push({ domain: item.domain, audit });
        out.line(`${item.domain}: ${describeAudit(audit, waitSeconds * 1000)}`);
      }),
    );
  }
  out.result({
    injected,
    ...(waitSeconds !== undefined && {
      outcomes: outcomes.map(({ domain, audit }) => ({
        domain,
        status:
          audit === undefined
            ? 'pending'
            : audit.kind === 'removed'
              ? 'blocked'
              : (audit.metadata.status ?? ''),
        ...(audit?.kind === 'final' && { metadata: audit.metadata }),
      })),
    }),
  });
  return outcomes.some((o) => o.audit === undefined) ? EXIT_FAILED : EXIT_OK;
}

async function readMailFile(file: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    throw new UsageError(`${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  try {
    const { size } = await handle.stat();
    if (size > MAX_INJECT_BYTES)
      throw new UsageError(`${file} is ${size} bytes, over ${MAX_INJECT_BYTES / 1024 / 1024} MiB`);
    if (size === 0) throw new UsageError(`${file} is empty`);
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** `--from`, else what the mail says (SES's Return-Path, then From), else the test mail's postmaster. */
function senderOf(from: string | undefined, raw: Buffer | undefined, recipients: readonly string[]): string {
  if (from !== undefined) return from.trim() === '<>' ? '' : parseMailbox(from, '--from');
  if (raw === undefined) return `postmaster@${domainPart(recipients[0] ?? '')}`;
  const view = headerView(splitMessage(raw));
  const returnPath = view.headers.get('return-path')?.[0];
  const candidate =
    returnPath !== undefined ? (/<([^<>]*)>/.exec(returnPath)?.[1] ?? returnPath).trim() : view.from?.address;
  if (candidate === undefined || candidate === '') {
    if (returnPath !== undefined) return '';
    throw new UsageError('the mail has no From address: give the envelope sender with --from');
  }
  return parseMailbox(candidate, "the mail's sender");
}
