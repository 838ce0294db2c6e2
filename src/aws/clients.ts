import { Agent } from 'node:https';
import { Agent as HttpAgent } from 'node:http';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SESv2Client } from '@aws-sdk/client-sesv2';
import { SQSClient } from '@aws-sdk/client-sqs';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { AwsConfig } from '../config/config.ts';

export interface AwsClients {
  sqs: SQSClient;
  s3: S3Client;
  sesv2: SESv2Client;
  ddb: DynamoDBDocumentClient;
  destroy(): void;
}

/** How many requests one set of clients must carry at once. */
export interface ClientSizing {
  /**
   * Connections per host: a poller thread holds one long poll per domain it serves (more while busy) besides
   * its other calls, and a long poll waiting for a socket is mail waiting up to WAIT_TIME_SECONDS (default 50).
   */
  maxSockets?: number;
}

/**
 * Builds the SDK clients once per thread. Endpoints are passed explicitly: with an explicit endpoint the SQS
 * client does not redirect calls to the QueueUrl's host, which emulators set to names that do not resolve.
 */
export function createAwsClients(config: AwsConfig, sizing: ClientSizing = {}): AwsClients {
  const maxSockets = sizing.maxSockets ?? 50;
  const requestHandler = new NodeHttpHandler({
    httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
    httpsAgent: new Agent({ keepAlive: true, maxSockets }),
    connectionTimeout: 5_000,
    // Long polls hold a request open for up to 20 s; leave headroom above that.
    requestTimeout: 60_000,
  });
  const common = { region: config.region, requestHandler, maxAttempts: 3 };
  const sqs = new SQSClient({ ...common, ...(config.endpoints.sqs && { endpoint: config.endpoints.sqs }) });
  const s3 = new S3Client({
    ...common,
    forcePathStyle: config.s3ForcePathStyle,
    ...(config.endpoints.s3 && { endpoint: config.endpoints.s3 }),
  });
  const sesv2 = new SESv2Client({
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
    s3,
    sesv2,
    ddb,
    destroy() {
      sqs.destroy();
      s3.destroy();
      sesv2.destroy();
      dynamo.destroy();
      requestHandler.destroy();
    },
  };
}
