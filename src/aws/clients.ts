import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SESv2Client } from '@aws-sdk/client-sesv2';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { AwsConfig } from '../config/config.ts';
import { MAX_WAIT_TIME_SECONDS, longPollDeadlineMs } from './deadlines.ts';
import { deadlineRequestHandler } from './request-handler.ts';

export interface AwsClients {
  sqs: SQSClient;
  s3: S3Client;
  sesv2: SESv2Client;
  ddb: DynamoDBDocumentClient;
  destroy(): void;
}

/**
 * Builds the SDK clients once per thread. Endpoints are passed explicitly: with an explicit endpoint the SQS
 * client does not redirect calls to the QueueUrl's host, which emulators set to names that do not resolve.
 */
export function createAwsClients(config: AwsConfig): AwsClients {
  const { deadlines } = config;
  const requestHandler = deadlineRequestHandler(deadlines, 50);
  // A long poll is silent for up to its wait: the SQS connection's idle deadline leaves room for the longest.
  const sqsHandler = deadlineRequestHandler(
    deadlines,
    50,
    Math.max(deadlines.idleMs, longPollDeadlineMs(MAX_WAIT_TIME_SECONDS, deadlines)),
  );
  const common = { region: config.region, requestHandler, maxAttempts: 3 };
  const sqs = new SQSClient({
    ...common,
    requestHandler: sqsHandler,
    ...(config.endpoints.sqs && { endpoint: config.endpoints.sqs }),
  });
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
      sqsHandler.destroy();
    },
  };
}
