/**
 * The clients only `setup` and `doctor` need, beside the daemon's (aws/clients.ts): STS (who the caller is), SNS
 * (topics and subscriptions) and SES's v1 API (receipt rules exist only there). The daemon never builds them.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent } from 'node:https';

import { SESClient } from '@aws-sdk/client-ses';
import { SNSClient } from '@aws-sdk/client-sns';
import { STSClient } from '@aws-sdk/client-sts';
import { NodeHttpHandler } from '@smithy/node-http-handler';

import type { AwsConfig } from '../config/config.ts';

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

/** Each call also gets its own deadline from the caller (an AbortSignal); these bound a single attempt. */
const CONNECT_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 30_000;

export function createControlClients(config: AwsConfig, options: ControlClientOptions = {}): ControlClients {
  const requestHandler = new NodeHttpHandler({
    httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 10 }),
    httpsAgent: new Agent({ keepAlive: true, maxSockets: 10 }),
    connectionTimeout: CONNECT_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
  });
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
