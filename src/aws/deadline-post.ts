import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** Where one POST goes and what it carries; headers as they are sent, signature included. */
export interface PostTarget {
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface PostDeadlines {
  /** TCP connect to the endpoint, when no kept-alive connection is free. */
  connectMs: number;
  /** From the request's start to the answer's headers. */
  answerMs: number;
  signal?: AbortSignal;
}

/** An answer read whole: header names in lower case, as Node gives them. */
export interface PostAnswer {
  statusCode: number;
  headers: Record<string, string | undefined>;
  text: string;
}

/**
 * Keep-alive connections for one kind of call. `idleMs` is the silence deadline: a connection on which no byte moves
 * for that long once the answer has begun is given up (the call fails), and so is one that sits free in the pool.
 * Before the answer, the answer's own deadline rules: a long poll is silent for up to its wait.
 */
export interface PostAgents {
  http: HttpAgent;
  https: HttpsAgent;
}

export function postAgents(idleMs: number): PostAgents {
  // Callers bound their own concurrency (one long poll per domain), so the pool does not queue them.
  const options = { keepAlive: true, timeout: idleMs, maxSockets: Infinity };
  return { http: new HttpAgent(options), https: new HttpsAgent(options) };
}

/** Named as the SDK's request handler names its deadlines, so that logs and errors.ts read both alike. */
function timeoutError(message: string): Error {
  return Object.assign(new Error(message), { name: 'TimeoutError', code: 'ETIMEDOUT' });
}

function abortError(): Error {
  return Object.assign(new Error('Request aborted'), { name: 'AbortError' });
}

/**
 * One POST with every deadline enforced and nothing else: the SDK's request handler arms five timers a request for
 * the same three deadlines, which for an idle domain's long poll is most of what it costs (BENCHMARKS.md, "Idle calls
 * without the SDK"). Deadlines: connect (a new connection only), the answer's headers, and silence
 * (the agents' `idleMs`, the body's transfer included); an abort ends the call at once.
 */
export function deadlinePost(
  agents: PostAgents,
  target: PostTarget,
  deadlines: PostDeadlines,
): Promise<PostAnswer> {
  const { signal } = deadlines;
  if (signal?.aborted) return Promise.reject(abortError());
  return new Promise<PostAnswer>((resolve, reject) => {
    const https = target.protocol === 'https:';
    const request = (https ? httpsRequest : httpRequest)({
      method: 'POST',
      hostname: target.hostname,
      ...(target.port !== undefined && { port: target.port }),
      path: target.path,
      headers: target.headers,
      agent: https ? agents.https : agents.http,
    });
    const answerTimer = setTimeout(
      () => fail(timeoutError(`no answer within ${deadlines.answerMs} ms`)),
      deadlines.answerMs,
    );
    const onAbort = () => fail(abortError());
    signal?.addEventListener('abort', onAbort, { once: true });
    function settle(): void {
      clearTimeout(answerTimer);
      signal?.removeEventListener('abort', onAbort);
    }
    function fail(error: Error): void {
      settle();
      request.destroy();
      reject(error);
    }
    request.on('socket', (socket) => {
      if (!socket.connecting) return;
      const connectTimer = setTimeout(
        () => fail(timeoutError(`no connection within ${deadlines.connectMs} ms`)),
        deadlines.connectMs,
      );
      socket.once('connect', () => clearTimeout(connectTimer));
      socket.once('close', () => clearTimeout(connectTimer));
    });
    let answered = false;
    request.on('timeout', () => {
      if (answered) fail(timeoutError('the connection went silent during the answer'));
    });
    // Once the answer has begun, a failure is not the request's: a retry must know that an answer had begun.
    const cutShort = (cause?: unknown) =>
      fail(new Error('the connection closed before the whole answer', { cause }));
    request.on('error', (error) => (answered ? cutShort(error) : fail(error)));
    request.on('response', (response) => {
      answered = true;
      clearTimeout(answerTimer);
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      // Node hands the request one socket timeout; one that came (and was ignored) before the answer, while the
      // answer's own deadline ruled, reaches only the response after that.
      response.on('timeout', () => fail(timeoutError('the connection went silent during the answer')));
      response.on('error', cutShort);
      response.on('close', () => {
        if (!response.complete) cutShort();
      });
      response.on('end', () => {
        settle();
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ statusCode: response.statusCode ?? 0, headers: flatHeaders(response), text });
      });
    });
    request.end(target.body);
  });
}

function flatHeaders(response: IncomingMessage): Record<string, string | undefined> {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(response.headers)) {
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
}
