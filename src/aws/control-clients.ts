/**
 * The clients only `setup` and `doctor` need, beside the daemon's (aws/clients.ts): STS (who the caller is), SNS
 * (topics and subscriptions) and SES's v1 API (receipt rules exist only there). The daemon never builds them.
 */
import { SESClient } from '@aws-sdk/client-ses';
import { SNSClient } from '@aws-sdk/client-sns';
import { STSClient } from '@aws-sdk/client-sts';

import type { AwsConfig } from '../config/config.ts';
import { deadlineRequestHandler } from './request-handler.ts';

export interface ControlClients {
  sts: STSClient;
  sns: SNSClient;
  /** SES v1: receipt rule sets and rules. */
  ses: SESClient;
  destroy(): void;
}

export interface ControlClientOptions {
  /** Explicit credentials (the local stack's dummy ones); default: the SDK's chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export function createControlClients(config: AwsConfig, options: ControlClientOptions = {}): ControlClients {
  const requestHandler = deadlineRequestHandler(config.deadlines, 10);
  const common = {
    region: config.region,
    requestHandler,
    maxAttempts: 2,
    ...(options.credentials && { credentials: options.credentials }),
  };
  const sts = new STSClient({ ...common, ...(config.endpoints.sts && { endpoint: config.endpoints.sts }) });
  const sns = new SNSClient({ ...common, ...(config.endpoints.sns && { endpoint: config.endpoints.sns }) });
  const ses = new SESClient({ ...common, ...(config.endpoints.ses && { endpoint: config.endpoints.ses }) });
  return {
    sts,
    sns,
    ses,
    destroy() {
      sts.destroy();
      sns.destroy();
      ses.destroy();
      requestHandler.destroy();
    },
  };
}
