/**
 * A proxy in front of the SQS/S3 emulator that counts SQS requests by action and, for ReceiveMessage, by queue: how
 * many long polls each domain costs. S3 requests (same emulator) pass through uncounted.
 *
 * `spreadMs`: each queue's first ReceiveMessage is held for a random time up to this long before it goes on, so the
 * domains' long polls end out of step, as they do after a day of mail (each mail restarts its domain's poll); a
 * daemon started all at once would otherwise poll its idle domains in a few bursts for as long as it stays idle.
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

export async function startSqsCounter(upstream: string, spreadMs = 0): Promise<SqsCounter> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4096 });
  let actions = new Map<string, number>();
  let receives = new Map<string, number>();
  const seen = new Set<string>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const queue = count(String(req.headers['x-amz-target'] ?? ''), body);
      const holdMs = queue !== undefined && spreadMs > 0 && !seen.has(queue) ? Math.random() * spreadMs : 0;
      if (queue !== undefined) seen.add(queue);
      if (holdMs > 0) setTimeout(() => forwardRequest(body), holdMs);
      else forwardRequest(body);
    });
    function forwardRequest(body: Buffer): void {
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
    }
  });
  server.keepAliveTimeout = 60_000;
  server.headersTimeout = 65_000;
  server.requestTimeout = 0;

  /** Counts one request; returns the queue a ReceiveMessage polls. */
  function count(targetHeader: string, body: Buffer): string | undefined {
    // The SDK speaks SQS's JSON protocol: `X-Amz-Target: AmazonSQS.<Action>`, the queue URL in the body.
    if (!targetHeader.startsWith('AmazonSQS.')) return undefined;
    const action = targetHeader.slice('AmazonSQS.'.length);
    actions.set(action, (actions.get(action) ?? 0) + 1);
    if (action !== 'ReceiveMessage') return undefined;
    let name = '?';
    try {
      const queueUrl = String((JSON.parse(body.toString('utf8')) as { QueueUrl?: unknown }).QueueUrl);
      name = queueUrl.slice(queueUrl.lastIndexOf('/') + 1);
    } catch {
      // Counted as '?'.
    }
    receives.set(name, (receives.get(name) ?? 0) + 1);
    return name;
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
