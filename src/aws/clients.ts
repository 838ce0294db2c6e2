import { createRequire } from 'node:module';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SESv2Client } from '@aws-sdk/client-sesv2';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { AwsConfig } from '../config/config.ts';
import { deadlineRequestHandler } from './request-handler.ts';

export interface AwsClients {
  sqs: SQSClient;
  /** Built (and its SDK package loaded) on first use: a poller thread needs it only once mail arrives. */
  readonly s3: S3Client;
  /** Built (and its SDK package loaded) on first use: only forwards and auto-replies need it. */
  readonly sesv2: SESv2Client;
  ddb: DynamoDBDocumentClient;
  destroy(): void;
}

// The S3 and SESv2 packages are a third of what a poller thread loads (BENCHMARKS.md, "Many domains"); they are
// required synchronously when first used, so the clients keep their plain properties.
const require = createRequire(import.meta.url);
const loadS3 = () => require('@aws-sdk/client-s3') as typeof import('@aws-sdk/client-s3');
const loadSesV2 = () => require('@aws-sdk/client-sesv2') as typeof import('@aws-sdk/client-sesv2');

/** How many requests one set of clients must carry at once. */
export interface ClientSizing {
  /**
   * Connections per host for the SDK's calls (default 50): a busy domain's deletes, visibility changes, S3 and
   * DynamoDB calls waiting for a socket are mail waiting. The long polls have a pool of their own (aws/sqs-direct.ts).
   */
  maxSockets?: number;
}

/**
 * Builds the SDK clients once per thread. Endpoints are passed explicitly: with an explicit endpoint the SQS
 * client does not redirect calls to the QueueUrl's host, which emulators set to names that do not resolve.
 */
export function createAwsClients(config: AwsConfig, sizing: ClientSizing = {}): AwsClients {
  const { deadlines } = config;
  const maxSockets = sizing.maxSockets ?? 50;
  const requestHandler = deadlineRequestHandler(deadlines, maxSockets);
  const common = { region: config.region, requestHandler, maxAttempts: 3 };
  // The long polls go without the SDK (aws/sqs-direct.ts); the SDK's own SQS calls never long-poll, so one handler serves.
  const sqs = new SQSClient({
    ...common,
    ...(config.endpoints.sqs && { endpoint: config.endpoints.sqs }),
  });
  let s3: S3Client | undefined;
  let sesv2: SESv2Client | undefined;
  const buildS3 = () =>
    new (loadS3().S3Client)({
      ...common,
      forcePathStyle: config.s3ForcePathStyle,
      ...(config.endpoints.s3 && { endpoint: config.endpoints.s3 }),
    });
  const buildSesV2 = () =>
    new (loadSesV2().SESv2Client)({
      ...common,
      // A send the SDK repeats after a timeout may be a second mail: aws/ses-sender.ts retries only what provably
      // did not reach SES.
      maxAttempts: 1,
      ...(config.endpoints.ses && { endpoint: config.endpoints.ses }),
    });
  const dynamo = new DynamoDBClient({
    ...common,
    ...(config.endpoints.dynamodb && { endpoint: config.endpoints.dynamodb }),
  });
  const ddb = DynamoDBDocumentClient.from(dynamo, { marshallOptions: { removeUndefinedValues: true } });
  return {
    sqs,
    get s3() {
      return (s3 ??= buildS3());
    },
    get sesv2() {
      return (sesv2 ??= buildSesV2());
    },
    ddb,
    destroy() {
      sqs.destroy();
      s3?.destroy();
      sesv2?.destroy();
      dynamo.destroy();
      requestHandler.destroy();
    },
  };
}
