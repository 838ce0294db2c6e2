/**
 * An SES endpoint for sends of any size: aws-ses-v2-local refuses request bodies over its parser's limit (413), and a
 * forward of a large mail is a body of tens of MB. It answers SESv2 SendEmail after reading the whole request,
 * keeps only who each send was for and its size, and answers everything else 404 (put `startSesQuota` in front
 * for GetAccount and SES's rate limit).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';

export interface LargeSend {
  /** Destination.ToAddresses of the request. */
  to: string[];
  /** Bytes of the request body. */
  bytes: number;
  /** Epoch ms when the request had been read. */
  at: number;
}

export interface SesSink {
  readonly endpoint: string;
  readonly sends: readonly LargeSend[];
  stop(): Promise<void>;
}

/** The SDK puts Destination after Content (the large part): the addresses are found in the body's last bytes. */
const TAIL_BYTES = 64 * 1024;

export async function startSesSink(): Promise<SesSink> {
  const sends: LargeSend[] = [];
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'POST' || path !== '/v2/email/outbound-emails') {
      req.resume();
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"message":"not here"}');
      return;
    }
    let bytes = 0;
    let head = Buffer.alloc(0);
    let tail = Buffer.alloc(0);
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (head.length < TAIL_BYTES) head = Buffer.concat([head, chunk]).subarray(0, TAIL_BYTES);
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES);
    });
    req.on('end', () => {
      sends.push({
        to: destinations(head.toString('latin1') + tail.toString('latin1')),
        bytes,
        at: Date.now(),
      });
      const body = JSON.stringify({ MessageId: `large-${randomUUID()}` });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sends,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function destinations(text: string): string[] {
  const list = /"ToAddresses":\[([^\]]*)\]/.exec(text)?.[1] ?? '';
  return [...list.matchAll(/"([^"]+)"/g)].map((m) => m[1] ?? '');
}
