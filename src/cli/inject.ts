/**
 * `unified-worker inject [file.eml] --to a@x,b@x`: hands a mail to the daemon exactly as SES would (see
 * ses-inbound.ts) against whatever AWS the settings point to; the domains are those of `--to`. Without a file it
 * sends a small test mail. `--wait` reads the daemon's verdict back from the S3 metadata and says every effect it
 * records; the exit code is 1 when a verdict is not final within the wait.
 */
import { Command, Option } from 'commander';

import { splitMessage } from '../mail/header-block.ts';
import { headerView } from '../pipeline/parse.ts';
import { domainPart, parseMailbox, parseMailboxes } from './addresses.ts';
import { anyVerdict, awaitOutcomes, verdictReader } from './audit.ts';
import { command, type CliApp, type CommandContext, type CommonOptions } from './command.ts';
import { buildMime } from './compose-mail.ts';
import { EXIT_FAILED, EXIT_OK, UsageError } from './exit.ts';
import { readInputFile } from './input-file.ts';
import { collect, listOption, parseDuration } from './options.ts';
import { MAIL_SHAPES, injectMail, type MailShape } from './ses-inbound.ts';
import { VERDICT_NAMES, VERDICT_VALUES, parseVerdictOption, type Verdicts } from './ses-trace.ts';

/** What is read into memory at most; SES itself accepts 40 MB. */
export const MAX_INJECT_BYTES = 100 * 1024 * 1024;
/** --wait bound. */
const MAX_WAIT_SECONDS = 600;

interface InjectOptions extends CommonOptions {
  to?: string[];
  from?: string;
  subject?: string;
  verdict?: string[];
  shape?: MailShape;
  wait?: string;
}

export function injectCommand(app: CliApp): Command {
  return command(
    app,
    new Command('inject')
      .description('hand a mail to the daemon as SES would (S3 object + notification on the queue)')
      .argument('[file]', 'the mail (.eml); without it a short test mail is sent')
      .option(
        '--to <list>',
        'envelope recipients, comma-separated or repeated (required); their domains are the queues used',
        collect,
      )
      .option(
        '--from <address>',
        "envelope sender; <> for a bounce (default: the mail's Return-Path or From)",
      )
      .option('--subject <text>', 'subject of the test mail (without a file)')
      .option(
        '--verdict <name=status>',
        `SES verdict, ${VERDICT_NAMES.join('|')} = ${VERDICT_VALUES.join('|')} (repeatable)`,
        collect,
      )
      .addOption(
        new Option('--shape <shape>', 'how SES delivers the notification')
          .choices(MAIL_SHAPES)
          .default('sns-s3'),
      )
      .option(
        '--wait <seconds>',
        "wait this long (90, 90s, 5m) for the daemon's verdict and say every effect; exit 1 if not final",
      ),
    {
      domains: 'optional',
      run: (context, options: InjectOptions, file: string | undefined) => runInject(context, file, options),
    },
  );
}

async function runInject(
  context: CommandContext,
  file: string | undefined,
  options: InjectOptions,
): Promise<number> {
  const { out } = context;
  const recipients = parseMailboxes(listOption(options.to), '--to');
  if (recipients.length === 0) {
    throw new UsageError('--to is required: the envelope recipients, e.g. --to alice@example.com');
  }
  checkServed(context.config.domains, recipients);
  const verdicts = parseVerdicts(listOption(options.verdict));
  const waitSeconds = parseDuration('--wait', options.wait, MAX_WAIT_SECONDS);
  const shape = options.shape ?? 'sns-s3';
  if (waitSeconds !== undefined && shape === 'sns-inline') {
    throw new UsageError('--wait reads the verdict from the S3 object, and --shape sns-inline stores none');
  }
  const raw =
    file === undefined
      ? undefined
      : await readInputFile(file, { option: '', maxBytes: MAX_INJECT_BYTES, what: 'mail' });
  const source = senderOf(options.from, raw, recipients);
  const mail =
    raw ??
    (await buildMime({
      from: source === '' ? `postmaster@${domainPart(recipients[0] ?? '')}` : source,
      to: recipients,
      subject: options.subject ?? 'Test mail from unified-worker inject',
      text: `This mail was injected with unified-worker inject at ${new Date().toISOString()}.\r\n`,
    }));
  const injected = await injectMail(context, { raw: mail, recipients, source, verdicts, shape });
  for (const item of injected) {
    const where = item.bucket ? `s3://${item.bucket}/${item.key}` : 'inline in the notification';
    out.line(`injected SES message ${item.sesMessageId} for ${item.recipients.join(', ')} (${where})`);
  }
  if (waitSeconds === undefined) {
    out.result({ injected });
    return EXIT_OK;
  }
  const awaited = injected.flatMap((item) =>
    item.bucket && item.key
      ? [{ label: item.domain, bucket: item.bucket, key: item.key, domain: item.domain }]
      : [],
  );
  const { outcomes, allFinal } = await awaitOutcomes(
    verdictReader(context),
    out,
    awaited,
    waitSeconds * 1000,
    anyVerdict,
  );
  out.result({
    injected,
    outcomes: outcomes.map(({ label, outcome }) => ({ domain: label, ...outcome })),
  });
  return allFinal ? EXIT_OK : EXIT_FAILED;
}

/**
 * With domains configured (DOMAINS or --domains), a recipient outside them is refused: the daemon serving those
 * domains would never see the mail. Without any, `--to` alone decides.
 */
function checkServed(domains: readonly string[], recipients: readonly string[]): void {
  if (domains.length === 0) return;
  for (const recipient of recipients) {
    const domain = domainPart(recipient);
    if (!domains.includes(domain)) {
      throw new UsageError(
        `--to ${recipient}: ${domain} is not in the domains (${domains.join(', ')}); ` +
          `--domains ${domain} injects into its queue anyway`,
      );
    }
  }
}

function parseVerdicts(texts: readonly string[]): Partial<Verdicts> {
  const verdicts: Partial<Verdicts> = {};
  for (const text of texts) {
    const parsed = parseVerdictOption(text);
    if (!parsed) {
      throw new UsageError(
        `--verdict ${text}: expected ${VERDICT_NAMES.join('|')}=${VERDICT_VALUES.join('|')}, e.g. spam=FAIL`,
      );
    }
    verdicts[parsed[0]] = parsed[1];
  }
  return verdicts;
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
