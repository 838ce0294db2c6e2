/**
 * `npm run local:send -- --to alice@example.com --subject Hi`: composes a mail and hands it to a running
 * `npm run local` stack with `unified-worker inject`'s code (raw MIME into the domain's bucket, SNS-enveloped
 * notification onto the domain's queue), waits for the worker's verdict in the S3 audit metadata and lists the
 * files it produced. It reaches the stack through the settings the stack wrote, like any command would.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { SendMessageCommand } from '@aws-sdk/client-sqs';

import { createAwsClients } from '../src/aws/clients.ts';
import { resolveQueueUrl } from '../src/aws/queue.ts';
import { nameFromTemplate } from '../src/aws/resources.ts';
import { domainPart, parseMailbox, parseMailboxes } from '../src/cli/addresses.ts';
import { describeOutcome, isFinal, verdictReader, waitForOutcome } from '../src/cli/audit.ts';
import { buildMime, type MimeAttachment } from '../src/cli/compose-mail.ts';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError } from '../src/cli/exit.ts';
import { MAX_INJECT_BYTES } from '../src/cli/inject.ts';
import { readInputFile } from '../src/cli/input-file.ts';
import { listOption, parseChoice, parseDuration } from '../src/cli/options.ts';
import { injectMail, MAIL_SHAPES } from '../src/cli/ses-inbound.ts';
import { parseVerdictOption, VERDICT_NAMES, VERDICT_VALUES, type Verdicts } from '../src/cli/ses-trace.ts';
import { buildConfig } from '../src/config/config.ts';
import { DEFAULT_MAIL_DIR, readState, type LocalStackState } from './local-stack-state.ts';

const USAGE = `Usage: npm run local:send -- --to <address>[,<address>...] [options]

Injects a mail into the running local stack (\`npm run local\`) as SES would deliver it.

Options:
      --to <list>          Envelope recipients, comma-separated or repeated (default: alice@<first domain>)
      --cc <list>          Cc header (header only; list Cc recipients in --to too to deliver to them)
      --from <address>     Sender, header and envelope (default: Someone <someone@external.test>)
      --subject <text>     Subject (default: "Hello from local:send")
      --text <text>        Plain-text body
      --html <html>        HTML body
      --attach <file>      Attach a file (repeatable)
      --header <"N: v">    Add a header (repeatable), e.g. --header "Auto-Submitted: auto-replied"
      --eml <file>         Send this .eml file as is (--to/--from give the envelope)
      --verdict <k=v>      SES verdict, k in spam|virus|spf|dkim|dmarc, v in PASS|FAIL|GRAY|... (repeatable)
      --shape <shape>      sns-s3 (default) | raw-s3 (SNS raw delivery) | sns-inline (SNS action, no S3)
      --mail-dir <dir>     Mail directory of the stack (default: ./${DEFAULT_MAIL_DIR})
      --wait <seconds>     How long to wait for the worker's verdict (default 20; 90, 90s, 2m)
      --no-wait            Do not wait for the worker's verdict
      --malformed          Instead of a mail, put a message on the first domain's queue that is no SES
                           notification: the worker leaves it for the dead-letter queue (try dlq show)
  -h, --help               Show this help

Exit codes: 0 delivered or otherwise final, 1 the stack is not running or the outcome is not final (or AWS
failed), 2 bad usage (an unknown option, an address that is not one, a domain the stack does not serve).`;

const USAGE_LINE = 'Usage: npm run local:send -- --to <address>[,<address>...] [options]   (more: --help)';

const DEFAULT_WAIT_SECONDS = 20;
const MAX_WAIT_SECONDS = 600;
/** An attachment is read whole; SES itself takes 40 MB of mail in all. */
const MAX_ATTACHMENT_BYTES = 40 * 1024 * 1024;

/** Every `.eml` under the mail directory (one folder per recipient). */
async function mailFiles(dir: string): Promise<Set<string>> {
  const found = new Set<string>();
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return found;
  }
  for (const entry of entries) {
    if (entry.startsWith('.')) continue;
    const files = await readdir(path.join(dir, entry)).catch(() => [] as string[]);
    for (const file of files) if (file.endsWith('.eml')) found.add(path.join(dir, entry, file));
  }
  return found;
}

/** What a misconfigured publisher might put on the queue: the worker cannot read it and leaves it to the DLQ. */
async function sendMalformed(state: LocalStackState, domain: string): Promise<void> {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' }, state.env);
  const config = buildConfig(state.env);
  const clients = createAwsClients(config.aws);
  try {
    const url = await resolveQueueUrl(clients.sqs, nameFromTemplate(config.queueNameTemplate, domain));
    await clients.sqs.send(
      new SendMessageCommand({ QueueUrl: url, MessageBody: '{"this is": "not an SES notification"}' }),
    );
    console.log(
      `queued a malformed message on ${url}: the worker logs it and leaves it; after MAX_RECEIVES receives ` +
        `(${config.poll.maxReceives}, ${config.poll.maxReceives === 1 ? 'half a minute' : 'that many visibility timeouts'}) ` +
        'SQS moves it to the dead-letter queue: node --env-file=local-mail/local-stack.env dist/unified-worker.js dlq show',
    );
  } finally {
    clients.destroy();
  }
}

interface SendRequest {
  recipients: string[];
  from: string;
  shape: (typeof MAIL_SHAPES)[number];
  verdicts: Partial<Verdicts>;
  headers: Record<string, string>;
  waitSeconds: number | undefined;
}

function parseCommandLine(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      options: {
        to: { type: 'string', multiple: true },
        cc: { type: 'string', multiple: true },
        from: { type: 'string' },
        subject: { type: 'string' },
        text: { type: 'string' },
        html: { type: 'string' },
        attach: { type: 'string', multiple: true },
        header: { type: 'string', multiple: true },
        eml: { type: 'string' },
        verdict: { type: 'string', multiple: true },
        shape: { type: 'string' },
        'mail-dir': { type: 'string' },
        wait: { type: 'string' },
        'no-wait': { type: 'boolean' },
        malformed: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

type Values = ReturnType<typeof parseCommandLine>;

/** Everything that can be checked before the stack is looked up: bad usage is found without a running stack. */
function checkRequest(values: Values): SendRequest {
  const recipients = parseMailboxes(listOption(values.to), '--to');
  const from = values.from ?? 'Someone <someone@external.test>';
  parseMailbox(from, '--from');
  const verdicts: Partial<Verdicts> = {};
  for (const item of values.verdict ?? []) {
    const parsed = parseVerdictOption(item);
    if (!parsed) {
      throw new UsageError(
        `--verdict ${item}: expected ${VERDICT_NAMES.join('|')}=${VERDICT_VALUES.join('|')}`,
      );
    }
    verdicts[parsed[0]] = parsed[1];
  }
  const headers: Record<string, string> = {};
  for (const header of values.header ?? []) {
    const colon = header.indexOf(':');
    if (colon <= 0) throw new UsageError(`--header ${header}: expected "Name: value"`);
    headers[header.slice(0, colon).trim()] = header.slice(colon + 1).trim();
  }
  if (values.wait !== undefined && values['no-wait'])
    throw new UsageError('--wait and --no-wait: choose one');
  return {
    recipients,
    from,
    shape: parseChoice('--shape', values.shape ?? 'sns-s3', MAIL_SHAPES),
    verdicts,
    headers,
    waitSeconds: values['no-wait']
      ? undefined
      : (parseDuration('--wait', values.wait, MAX_WAIT_SECONDS) ?? DEFAULT_WAIT_SECONDS),
  };
}

async function composeMail(values: Values, request: SendRequest): Promise<Buffer> {
  if (values.eml !== undefined) {
    return readInputFile(values.eml, { option: '--eml', maxBytes: MAX_INJECT_BYTES, what: 'mail' });
  }
  const attachments: MimeAttachment[] = [];
  for (const file of values.attach ?? []) {
    const content = await readInputFile(file, {
      option: '--attach',
      maxBytes: MAX_ATTACHMENT_BYTES,
      what: 'data',
    });
    attachments.push({ filename: path.basename(file), content });
  }
  const cc = listOption(values.cc);
  return buildMime({
    from: request.from,
    to: request.recipients,
    ...(cc.length > 0 && { cc }),
    subject: values.subject ?? 'Hello from local:send',
    ...(values.html !== undefined && { html: values.html }),
    ...((values.text !== undefined || values.html === undefined) && {
      text: values.text ?? `Sent with npm run local:send at ${new Date().toISOString()}.\r\n`,
    }),
    ...(Object.keys(request.headers).length > 0 && { headers: request.headers }),
    ...(attachments.length > 0 && { attachments }),
  });
}

async function main(argv: readonly string[]): Promise<number> {
  // Node 20 is supported; the SDK's notice that its 2027 releases need Node 22 is in the README.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const values = parseCommandLine(argv);
  if (values.help) {
    console.log(USAGE);
    return EXIT_OK;
  }
  const request = checkRequest(values);
  const state: LocalStackState = await readState(path.resolve(values['mail-dir'] ?? DEFAULT_MAIL_DIR));
  const first = state.domains[0] ?? 'example.com';
  if (values.malformed) {
    await sendMalformed(state, first);
    return EXIT_OK;
  }
  if (request.recipients.length === 0) request.recipients.push(`alice@${first}`);
  for (const recipient of request.recipients) {
    if (!state.domains.includes(domainPart(recipient))) {
      throw new UsageError(
        `--to ${recipient}: ${domainPart(recipient)} is not served by the stack (domains: ${state.domains.join(', ')})`,
      );
    }
  }
  const raw = await composeMail(values, request);
  return sendAndReport(state, raw, request);
}

async function sendAndReport(state: LocalStackState, raw: Buffer, request: SendRequest): Promise<number> {
  // The stack's own settings, as `node --env-file=local-mail/local-stack.env dist/unified-worker.js` gets them.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' }, state.env);
  const config = buildConfig(state.env);
  const clients = createAwsClients(config.aws);
  const reader = verdictReader({ config, clients });
  const before = await mailFiles(state.mailDir);
  let final = true;
  try {
    const injected = await injectMail(
      { config, clients },
      {
        raw,
        recipients: request.recipients,
        source: parseMailbox(request.from, '--from'),
        verdicts: request.verdicts,
        shape: request.shape,
      },
    );
    const waits: Array<Promise<string[]>> = [];
    for (const put of injected) {
      const where = put.bucket ? `s3://${put.bucket}/${put.key}` : 'inline in the notification';
      console.log(`queued SES message ${put.sesMessageId} for ${put.recipients.join(', ')} (${where})`);
      if (request.waitSeconds === undefined || !put.bucket || !put.key) continue;
      const location = { bucket: put.bucket, key: put.key, domain: put.domain };
      waits.push(
        waitForOutcome(reader, location, request.waitSeconds * 1000).then((outcome) => {
          final &&= isFinal(outcome);
          const [verdict, ...effects] = describeOutcome(outcome);
          return [`${put.domain}: ${verdict ?? ''}`, ...effects];
        }),
      );
    }
    for (const lines of await Promise.all(waits)) for (const line of lines) console.log(line);
  } finally {
    clients.destroy();
  }
  if (request.waitSeconds === undefined) return EXIT_OK;
  // Files the stack wrote since we sent (SES copies are collected every 100 ms). Mail other senders injected
  // meanwhile would show up too.
  await new Promise((resolve) => setTimeout(resolve, 400));
  const files = [...(await mailFiles(state.mailDir))].filter((f) => !before.has(f)).sort();
  if (files.length > 0)
    console.log(`files written:\n${files.map((f) => `  ${path.relative(process.cwd(), f)}`).join('\n')}`);
  return final ? EXIT_OK : EXIT_FAILED;
}

// The same exit codes as unified-worker: 2 and the usage line for bad usage, 1 for anything that failed.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const text = error instanceof Error ? error.message : String(error);
    console.error(`local:send: ${text.replace(/\s*\n\s*/g, ' ')}`);
    if (error instanceof UsageError) console.error(USAGE_LINE);
    process.exitCode = error instanceof UsageError ? EXIT_USAGE : EXIT_FAILED;
  },
);
