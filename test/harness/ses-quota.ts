/**
 * SES's sending quota, which aws-ses-v2-local does not have: a proxy in front of the SES endpoint that answers
 * GetAccount with a MaxSendRate and, like SES, throttles sends beyond that rate (429 TooManyRequestsException,
 * "Maximum sending rate exceeded."). Everything else passes through to the emulator (or its recording proxy).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { forwardHttp } from './http-forward.ts';

export interface SesQuotaProxy {
  readonly endpoint: string;
  /** Epoch ms of every send SES took. */
  readonly accepted: number[];
  /** Sends answered with a throttle. */
  readonly throttled: number;
  /** Epoch ms of every throttled send. */
  readonly throttledAt: number[];
  stop(): Promise<void>;
}

export async function startSesQuota(upstream: string, maxSendRate: number): Promise<SesQuotaProxy> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true });
  const accepted: number[] = [];
  const throttledAt: number[] = [];
  // SES's own limiter: at most maxSendRate sends in any one second.
  const recent: number[] = [];
  const overQuota = (now: number) => {
    while (recent.length > 0 && recent[0]! <= now - 1000) recent.shift();
    if (recent.length >= maxSendRate) return true;
    recent.push(now);
    return false;
  };

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/v2/email/account') {
      const body = JSON.stringify({
        SendingEnabled: true,
        ProductionAccessEnabled: true,
        SendQuota: { Max24HourSend: 50_000, MaxSendRate: maxSendRate, SentLast24Hours: 0 },
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const isSend = req.method === 'POST' && path === '/v2/email/outbound-emails';
    const now = Date.now();
    if (isSend && overQuota(now)) {
      throttledAt.push(now);
      const body = JSON.stringify({ message: 'Maximum sending rate exceeded.' });
      req.resume();
      res.writeHead(429, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'x-amzn-errortype': 'TooManyRequestsException',
      });
      res.end(body);
      return;
    }
    forwardHttp(req, res, {
      target,
      agent,
      proxy: 'ses quota proxy',
      onAnswer: (status) => {
        if (isSend && status < 300) accepted.push(now);
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted,
    throttledAt,
    get throttled() {
      return throttledAt.length;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        agent.destroy();
      }),
  };
}
