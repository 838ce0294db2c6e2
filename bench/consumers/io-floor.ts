/**
 * The yardsticks the daemon is measured against, as a separate process so its CPU and memory are its own:
 *
 * - the I/O floor (`--loops 4`): the least a consumer of this stack can do per mail, with the daemon's own AWS SDK
 *   clients (src/aws/clients.ts) and a nodemailer pool like the daemon's (5 connections, maxMessages Infinity):
 *   concurrent loops of ReceiveMessage (10) → unwrap SNS → GetObject → sendMail raw → one DeleteMessageBatch,
 *   each receive's messages handled at once. No rules, no ledger, no audit, no parsing.
 * - one at a time (`--loops 1 --sequential`): the original daemon's design, one loop that handles the messages of
 *   each receive one by one and deletes each when it is done.
 *
 * Run by bench/run.ts: `node --import tsx bench/consumers/io-floor.ts '<json config>'`; stops on SIGTERM/SIGKILL.
 */
import {
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  ReceiveMessageCommand,
  type Message,
} from '@aws-sdk/client-sqs';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import nodemailer from 'nodemailer';
import { DEFAULT_AWS_DEADLINES } from '../../src/aws/deadlines.ts';
import { createAwsClients } from '../../src/aws/clients.ts';

export interface FloorConfig {
  queueUrls: string[];
  region: string;
  endpoints: { sqs: string; s3: string };
  smtpPort: number;
  loops: number;
  sequential: boolean;
}

const config = JSON.parse(process.argv[2] ?? '{}') as FloorConfig;
const clients = createAwsClients({
  region: config.region,
  endpoints: { sqs: config.endpoints.sqs, s3: config.endpoints.s3 },
  s3ForcePathStyle: true,
  deadlines: DEFAULT_AWS_DEADLINES,
});
const transport = nodemailer.createTransport({
  pool: true,
  host: '127.0.0.1',
  port: config.smtpPort,
  maxConnections: 5,
  maxMessages: Infinity,
  ignoreTLS: true,
});

let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});

interface Receipt {
  source: string;
  recipients: string[];
  bucket: string;
  key: string;
}

function unwrap(message: Message): Receipt {
  const envelope = JSON.parse(message.Body ?? '{}') as { Message: string };
  const notification = JSON.parse(envelope.Message) as {
    mail: { source: string };
    receipt: { recipients: string[]; action: { bucketName: string; objectKey: string } };
  };
  return {
    source: notification.mail.source,
    recipients: notification.receipt.recipients,
    bucket: notification.receipt.action.bucketName,
    key: notification.receipt.action.objectKey,
  };
}

async function handle(message: Message): Promise<void> {
  const receipt = unwrap(message);
  const object = await clients.s3.send(new GetObjectCommand({ Bucket: receipt.bucket, Key: receipt.key }));
  const bytes = await object.Body!.transformToByteArray();
  await transport.sendMail({
    envelope: { from: receipt.source, to: receipt.recipients },
    raw: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  });
}

async function loop(queueUrl: string): Promise<void> {
  while (!stopping) {
    const { Messages = [] } = await clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 20 }),
    );
    if (config.sequential) {
      for (const message of Messages) {
        await handle(message);
        await clients.sqs.send(
          new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }),
        );
      }
      continue;
    }
    await Promise.all(Messages.map(handle));
    if (Messages.length > 0) {
      await clients.sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: Messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
        }),
      );
    }
  }
}

await Promise.all(config.queueUrls.flatMap((url) => Array.from({ length: config.loops }, () => loop(url))));
transport.close();
clients.destroy();
