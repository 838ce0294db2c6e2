import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Route = (
  request: IncomingMessage,
  url: URL,
) => Promise<HttpReply | undefined> | HttpReply | undefined;

export interface HttpReply {
  status: number;
  body: string;
  contentType?: string;
}

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

/** A tiny router: health and metrics need two or three GET routes, not a framework. */
export async function startHttpServer(host: string, port: number, route: Route): Promise<RunningServer> {
  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    Promise.resolve(route(request, url))
      .then((reply) => send(response, reply ?? { status: 404, body: 'not found\n' }))
      .catch((error: unknown) => send(response, { status: 500, body: `${String(error)}\n` }));
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function send(response: ServerResponse, reply: HttpReply): void {
  response.writeHead(reply.status, {
    'content-type': reply.contentType ?? 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
  });
  response.end(reply.body);
}
