import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

/** What a route sees of a request: only what health and metrics need. */
export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST';
  url: URL;
}

export type Route = (request: HttpRequest) => Promise<HttpReply | undefined> | HttpReply | undefined;

export interface HttpReply {
  status: number;
  body: string;
  contentType?: string;
}

/** Why a request was not served normally; the `reason` label of `ses_worker_http_errors_total`. */
export type HttpErrorReason =
  | 'bad-request'
  | 'bad-target'
  | 'header-overflow'
  | 'timeout'
  | 'method-not-allowed'
  | 'body-not-accepted'
  | 'not-found'
  | 'handler-error'
  | 'connection-limit'
  | 'connection-reset'
  | 'server-error';

export interface HttpLimits {
  /** Request line plus headers (Node's default is 16 KB; probes and scrapers send a few hundred bytes). */
  maxHeaderBytes: number;
  /** A client must have sent its headers within this (slow-header clients). */
  headersTimeoutMs: number;
  /** ... and its whole request within this. */
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** Open connections per server; more are closed at once. */
  maxConnections: number;
  maxRequestsPerSocket: number;
  /** How often Node checks the two timeouts above (its default, 30 s, would let a slow client sit that long). */
  timeoutCheckMs: number;
}

export const HTTP_LIMITS: HttpLimits = {
  maxHeaderBytes: 8 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 128,
  maxRequestsPerSocket: 100,
  timeoutCheckMs: 1_000,
};

export interface HttpServerOptions {
  host: string;
  port: number;
  route: Route;
  /** Every request not served normally, once; `error` is set for a handler that threw. */
  onError?: (reason: HttpErrorReason, error?: unknown) => void;
  limits?: Partial<HttpLimits>;
}

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

const METHODS = new Set(['GET', 'HEAD', 'POST']);

/**
 * A tiny router for health and metrics: two or three GET routes, not a framework. Anything may arrive on these
 * ports, so nothing a client sends can throw out of here: malformed request lines, absolute-form or garbage
 * targets, oversized headers, bodies, slow clients and connection floods get a 4xx or a closed socket, a route that
 * throws gets a 500, and every one of them is reported through `onError`.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<RunningServer> {
  const limits = { ...HTTP_LIMITS, ...options.limits };
  const report = options.onError ?? (() => undefined);
  const server: Server = createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: limits.timeoutCheckMs,
      // An HTTP/1.0 probe without Host is still a fine probe; Node would answer it 400 without telling us.
      requireHostHeader: false,
    },
    (request, response) => void serve(request, response, options.route, report),
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxConnections = limits.maxConnections;
  server.maxRequestsPerSocket = limits.maxRequestsPerSocket;
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) =>
    answerClientError(error, socket, report),
  );
  server.on('drop', () => report('connection-limit'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // A listening server's own errors (e.g. EMFILE on accept) are transient; they must not reach the process.
  server.on('error', () => report('server-error'));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function serve(
  request: IncomingMessage,
  response: ServerResponse,
  route: Route,
  report: (reason: HttpErrorReason, error?: unknown) => void,
): Promise<void> {
  // A client that resets mid-request makes these emit 'error'; unheard, that would be an uncaught exception.
  request.on('error', () => undefined);
  response.on('error', () => undefined);
  const refuse = (reason: HttpErrorReason, status: number, body: string, close = false): void => {
    report(reason);
    send(response, { status, body }, close);
  };
  const method = request.method ?? '';
  if (!METHODS.has(method)) return refuse('method-not-allowed', 405, 'method not allowed\n');
  if (hasBody(request)) return refuse('body-not-accepted', 413, 'request bodies are not accepted\n', true);
  const url = requestUrl(request.url);
  if (!url) return refuse('bad-target', 400, 'bad request target\n', true);
  let reply: HttpReply | undefined;
  try {
    reply = await route({ method: method as HttpRequest['method'], url });
  } catch (error) {
    report('handler-error', error);
    return send(response, { status: 500, body: 'internal error\n' });
  }
  if (!reply) return refuse('not-found', 404, 'not found\n');
  send(response, reply);
}

function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Origin-form (`/health`) or absolute-form (`http://host/health`, RFC 9112 §3.2.2); anything else is refused. */
function requestUrl(target: string | undefined): URL | undefined {
  if (target === undefined || target === '') return undefined;
  try {
    if (target.startsWith('/')) return new URL(target, 'http://localhost');
    const url = new URL(target);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : undefined;
  } catch {
    return undefined;
  }
}

function send(response: ServerResponse, reply: HttpReply, close = false): void {
  if (response.headersSent || response.destroyed) return;
  response.writeHead(reply.status, {
    'content-type': reply.contentType ?? 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
    ...(close && { connection: 'close' }),
  });
  response.end(reply.body);
}

/** The parser's verdict on what the client sent, as a status line written straight to the socket. */
function answerClientError(
  error: NodeJS.ErrnoException,
  socket: Duplex,
  report: (reason: HttpErrorReason) => void,
): void {
  const [reason, status] = clientErrorReply(error.code);
  report(reason);
  if (status === undefined || !socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function clientErrorReply(code: string | undefined): [HttpErrorReason, string | undefined] {
  if (code === 'HPE_HEADER_OVERFLOW') return ['header-overflow', '431 Request Header Fields Too Large'];
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ['timeout', '408 Request Timeout'];
  // The client went away, possibly mid-request: nobody is left to answer.
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'HPE_INVALID_EOF_STATE')
    return ['connection-reset', undefined];
  return ['bad-request', '400 Bad Request'];
}
