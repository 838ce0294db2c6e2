/**
 * A proxy in front of the SQS/S3 emulator that counts SQS requests by action and, for ReceiveMessage, by queue: how
 * many long polls each domain costs. S3 requests (same emulator) pass through uncounted.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SqsCounter {
  readonly endpoint: string;
  /** Requests per SQS action (`ReceiveMessage`, `GetQueueAttributes`, ...) since the last reset. */
  byAction(): Record<string, number>;
  /** ReceiveMessage requests per queue name since the last reset. */
  receivesByQueue(): Map<string, number>;
  reset(): void;
  stop(): Promise<void>;
}

export async function startSqsCounter(upstream: string): Promise<SqsCounter> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4096 });
  let actions = new Map<string, number>();
  let receives = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      count(String(req.headers['x-amz-target'] ?? ''), body);
      const forward = http.request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
          agent,
        },
        (upstreamRes) => {
          res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
          upstreamRes.pipe(res);
        },
      );
      forward.on('error', (error) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`sqs counter: ${error.message}`);
      });
      forward.end(body);
    });
  });
  server.keepAliveTimeout = 60_000;
  server.headersTimeout = 65_000;
  server.requestTimeout = 0;

  function count(targetHeader: string, body: Buffer): void {
    // The SDK speaks SQS's JSON protocol: `X-Amz-Target: AmazonSQS.<Action>`, the queue URL in the body.
    if (!targetHeader.startsWith('AmazonSQS.')) return;
    const action = targetHeader.slice('AmazonSQS.'.length);
    actions.set(action, (actions.get(action) ?? 0) + 1);
    if (action !== 'ReceiveMessage') return;
    try {
      const queueUrl = String((JSON.parse(body.toString('utf8')) as { QueueUrl?: unknown }).QueueUrl);
      const name = queueUrl.slice(queueUrl.lastIndexOf('/') + 1);
      receives.set(name, (receives.get(name) ?? 0) + 1);
    } catch {
      receives.set('?', (receives.get('?') ?? 0) + 1);
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    byAction: () => Object.fromEntries(actions),
    receivesByQueue: () => new Map(receives),
    reset() {
      actions = new Map();
      receives = new Map();
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        agent.destroy();
      }),
  };
}
