/**
 * An HTTP proxy that holds every request for a fixed time before forwarding it: what a worker outside the AWS region
 * sees (20 ms per call). Every consumer under test talks to the emulators through one of these; the preload does not.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { forwardHttp } from '../../test/harness/http-forward.ts';

export interface LatencyProxy {
  readonly endpoint: string;
  /** Requests forwarded so far. */
  readonly requests: number;
  stop(): Promise<void>;
}

export async function startLatencyProxy(upstream: string, latencyMs: number): Promise<LatencyProxy> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    // The body stays paused in the socket while we wait, so nothing is buffered twice.
    void (latencyMs > 0 ? delay(latencyMs) : Promise.resolve()).then(() => {
      forwardHttp(req, res, { target, agent, proxy: 'latency proxy' });
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        agent.destroy();
      }),
  };
}
