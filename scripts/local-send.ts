/**
 * `npm run local:send -- --to alice@example.com --subject Hi`: composes a mail and hands it to a running
 * `npm run local` stack with `unified-worker inject`'s code (raw MIME into the domain's bucket, SNS-enveloped
 * notification onto the domain's queue), waits for the worker's verdict in the S3 audit metadata and lists the
 * files it produced. It reaches the stack through the settings the stack wrote, like any command would.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { SendMessageCommand } from '@aws-sdk/client-sqs';

import { createAwsClients } from '../src/aws/clients.ts';
import { resolveQueueUrl } from '../src/aws/queue.ts';
import { nameFromTemplate } from '../src/aws/resources.ts';
import { describeAudit, waitForAudit } from '../src/cli/audit.ts';
import { buildMime, type MimeAttachment } from '../src/cli/compose-mail.ts';
import { injectMail, MAIL_SHAPES, type MailShape } from '../src/cli/inject.ts';
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
      --no-wait            Do not wait for the worker's verdict
      --malformed          Instead of a mail, put a message on the first domain's queue that is no SES
                           notification: the worker leaves it for the dead-letter queue (try dlq show)
  -h, --help               Show this help`;

const WAIT_MS = 20_000;

function list(values: readonly string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** The bare address of `Name <addr>` or `addr`. */
function addressOf(value: string): string {
  return (/<([^>]*)>/.exec(value)?.[1] ?? value).trim().toLowerCase();
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

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

async function main(): Promise<void> {
  // Node 20 is supported; the SDK's notice that its 2027 releases need Node 22 is in the README.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { values } = parseArgs({
    args: process.argv.slice(2),
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
      'no-wait': { type: 'boolean' },
      malformed: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const state: LocalStackState = await readState(path.resolve(values['mail-dir'] ?? DEFAULT_MAIL_DIR));
  const first = state.domains[0] ?? 'example.com';
  if (values.malformed) {
    await sendMalformed(state, first);
    return;
  }
  const recipients = list(values.to).map(addressOf);
  if (recipients.length === 0) recipients.push(`alice@${first}`);
  const from = values.from ?? 'Someone <someone@external.test>';
  const shape = (values.shape ?? 'sns-s3') as MailShape;
  if (!MAIL_SHAPES.includes(shape)) throw new Error(`--shape must be one of ${MAIL_SHAPES.join(', ')}`);

  const verdicts: Partial<Verdicts> = {};
  for (const item of values.verdict ?? []) {
    const parsed = parseVerdictOption(item);
    if (!parsed) {
      throw new Error(`--verdict ${item}: expected ${VERDICT_NAMES.join('|')}=${VERDICT_VALUES.join('|')}`);
    }
    verdicts[parsed[0]] = parsed[1];
  }

  for (const recipient of recipients) {
    const domain = domainOf(recipient);
    if (!state.domains.includes(domain)) {
      throw new Error(
        `${recipient}: ${domain} is not served by the stack (domains: ${state.domains.join(', ')})`,
      );
    }
  }

  let raw: Buffer;
  if (values.eml !== undefined) {
    raw = await readFile(values.eml);
  } else {
    const headers: Record<string, string> = {};
    for (const header of values.header ?? []) {
      const colon = header.indexOf(':');
      if (colon <= 0) throw new Error(`--header ${header}: expected "Name: value"`);
      headers[header.slice(0, colon).trim()] = header.slice(colon + 1).trim();
    }
    const attachments: MimeAttachment[] = [];
    for (const file of values.attach ?? [])
      attachments.push({ filename: path.basename(file), content: await readFile(file) });
    const cc = list(values.cc);
    raw = await buildMime({
      from,
      to: recipients,
      ...(cc.length > 0 && { cc }),
      subject: values.subject ?? 'Hello from local:send',
      ...(values.html !== undefined && { html: values.html }),
      ...((values.text !== undefined || values.html === undefined) && {
        text: values.text ?? `Sent with npm run local:send at ${new Date().toISOString()}.\r\n`,
      }),
      ...(Object.keys(headers).length > 0 && { headers }),
      ...(attachments.length > 0 && { attachments }),
    });
  }

  // The stack's own settings, as `node --env-file=local-mail/local-stack.env dist/unified-worker.js` gets them.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' }, state.env);
  const config = buildConfig(state.env);
  const clients = createAwsClients(config.aws);
  const before = await mailFiles(state.mailDir);
  try {
    const injected = await injectMail(
      { config, clients },
      { raw, recipients, source: addressOf(from), verdicts, shape },
    );
    const waits: Array<Promise<string>> = [];
    for (const put of injected) {
      const where = put.bucket ? `s3://${put.bucket}/${put.key}` : 'inline in the notification';
      console.log(`queued SES message ${put.sesMessageId} for ${put.recipients.join(', ')} (${where})`);
      if (values['no-wait'] || !put.bucket || !put.key) continue;
      waits.push(
        waitForAudit(
          { config, clients },
          { bucket: put.bucket, key: put.key, domain: put.domain },
          WAIT_MS,
        ).then((r) => `${put.domain}: ${describeAudit(r, WAIT_MS)}`),
      );
    }
    for (const line of await Promise.all(waits)) console.log(line);
  } finally {
    clients.destroy();
  }
  if (values['no-wait']) return;
  // Files the stack wrote since we sent (SES copies are collected every 100 ms). Mail other senders injected
  // meanwhile would show up too.
  await new Promise((resolve) => setTimeout(resolve, 400));
  const files = [...(await mailFiles(state.mailDir))].filter((f) => !before.has(f)).sort();
  if (files.length > 0)
    console.log(`files written:\n${files.map((f) => `  ${path.relative(process.cwd(), f)}`).join('\n')}`);
}

main().catch((error: unknown) => {
  console.error(`local:send: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
