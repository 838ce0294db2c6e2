/**
 * How fast the operator commands are against the emulators: the built binary's start (`--help`, `doctor`), a
 * replay scan of a bucket, enqueueing the replays, and the receive → send → delete redrive.
 * Run: `npm run build && node --import tsx bench/cli.bench.ts [--objects 2000] [--runs 3]`.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { PutObjectCommand } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SendMessageBatchCommand } from '@aws-sdk/client-sqs';

import { runBuiltCli, runCommand } from '../test/harness/cli-runner.ts';
import { drainQueue, startStack } from '../test/harness/emulators.ts';
import { sesMessageId } from '../src/cli/ses-notification.ts';
import { startSmtpSink } from '../test/harness/smtp-sink.ts';

const { values } = parseArgs({
  options: { objects: { type: 'string', default: '2000' }, runs: { type: 'string', default: '3' } },
});
const OBJECTS = Number(values.objects);
const RUNS = Number(values.runs);
const DOMAIN = 'bench.test';

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function timed(what: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await what();
  return performance.now() - start;
}

const stack = await startStack();
const mailbox = await startSmtpSink();
const env = {
  ...stack.env,
  DOMAINS: DOMAIN,
  SMTP_HOST: '127.0.0.1',
  SMTP_PORT: String(mailbox.port),
  INTERNAL_SMTP_PORT: String(mailbox.port),
  IDEMPOTENCY_TABLE: 'email-worker-idempotency',
  LOOP_MARKER_SECRET: 'bench-secret-0123456789abcdef',
};
try {
  if ((await runCommand(['setup'], env)).code !== 0) throw new Error('setup failed');
  const raw = Buffer.from(
    'Return-Path: <a@external.test>\r\nFrom: a@external.test\r\nSubject: b\r\n\r\nbody\r\n',
  );
  for (let i = 0; i < OBJECTS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, OBJECTS - i) }, (_, j) =>
        stack.s3.send(
          new PutObjectCommand({
            Bucket: 'bench-test-emails',
            Key: sesMessageId(),
            Body: raw,
            Metadata:
              (i + j) % 2 === 0
                ? { processed: 'true', status: 'invalid', invalid_inboxes: `u${i + j}@${DOMAIN}` }
                : { processed: 'true', status: 'delivered' },
          }),
        ),
      ),
    );
  }
  const queue =
    (await stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'bench-test-queue' }))).QueueUrl ?? '';
  const dlq =
    (await stack.sqs.send(new GetQueueUrlCommand({ QueueName: 'bench-test-queue-dlq' }))).QueueUrl ?? '';

  const help: number[] = [];
  const doctor: number[] = [];
  const scan: number[] = [];
  const replay: number[] = [];
  const redrive: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    help.push(await timed(() => runBuiltCli(['--help'], env)));
    doctor.push(await timed(() => runBuiltCli(['doctor'], env)));
    scan.push(
      await timed(() => runCommand(['replay', '--status', 'invalid', '--dry-run', '--limit', '100000'], env)),
    );
    replay.push(await timed(() => runCommand(['replay', '--status', 'invalid', '--limit', '100000'], env)));
    await drainQueue(stack.sqs, queue);
    for (let i = 0; i < OBJECTS / 2; i += 10) {
      await stack.sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: dlq,
          Entries: Array.from({ length: 10 }, (_, j) => ({ Id: String(j), MessageBody: `dead ${i + j}` })),
        }),
      );
    }
    redrive.push(await timed(() => runCommand(['dlq', 'redrive'], env)));
    await drainQueue(stack.sqs, queue);
  }
  const half = OBJECTS / 2;
  console.log(`| what | median (${RUNS} runs) | rate |`);
  console.log('|---|---:|---:|');
  console.log(`| \`node dist/unified-worker.js --help\` (process start) | ${median(help).toFixed(0)} ms | |`);
  console.log(`| \`doctor\` (process, 14 checks) | ${median(doctor).toFixed(0)} ms | |`);
  console.log(
    `| \`replay --status invalid --dry-run\`, ${OBJECTS} objects scanned | ${median(scan).toFixed(0)} ms | ${(OBJECTS / (median(scan) / 1000)).toFixed(0)} objects/s |`,
  );
  console.log(
    `| \`replay --status invalid\`, ${half} replayed | ${median(replay).toFixed(0)} ms | ${(half / (median(replay) / 1000)).toFixed(0)} mails/s |`,
  );
  console.log(
    `| \`dlq redrive\` (receive → send → delete), ${half} messages | ${median(redrive).toFixed(0)} ms | ${(half / (median(redrive) / 1000)).toFixed(0)} messages/s |`,
  );
} finally {
  await mailbox.stop();
  await stack.stop();
}
