import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { AwsDeadlines } from './deadlines.ts';

/**
 * An SDK request handler whose deadlines are enforced: `throwOnRequestTimeout` turns the request deadline into an
 * error (without it @smithy/node-http-handler only logs a warning), and `socketTimeout` gives up a connection that
 * goes silent at any point, a body's transfer included.
 */
export function deadlineRequestHandler(deadlines: AwsDeadlines, maxSockets: number): NodeHttpHandler {
  return new NodeHttpHandler({
    httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
    httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    connectionTimeout: deadlines.connectMs,
    requestTimeout: deadlines.callMs,
    throwOnRequestTimeout: true,
    socketTimeout: deadlines.idleMs,
  });
}
