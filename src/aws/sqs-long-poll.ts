import { createHash } from 'node:crypto';
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Endpoint, HttpRequest, HttpResponse } from '@smithy/types';

/** What one ReceiveMessage asks for, in the SDK's own names. */
export interface LongPollRequest {
  QueueUrl: string;
  MaxNumberOfMessages: number;
  WaitTimeSeconds: number;
  MessageSystemAttributeNames: string[];
  MessageAttributeNames: string[];
}

export interface LongPollOptions {
  /** The whole call's deadline: the wait plus an ordinary call's (aws/deadlines.ts). */
  requestTimeoutMs: number;
  signal?: AbortSignal;
}

export type LongPoll = (request: LongPollRequest, options: LongPollOptions) => Promise<Message[]>;

/** An SQS failure shaped as the SDK shapes its own, so that errors.ts classifies both alike. */
export class SqsServiceError extends Error {
  readonly $metadata: { httpStatusCode: number };
  readonly $fault: 'client' | 'server';
  /** The legacy (query protocol) error code, where the answer gave one. */
  Code?: string;

  constructor(name: string, message: string, status: number) {
    super(message);
    this.name = name;
    this.$metadata = { httpStatusCode: status };
    this.$fault = status >= 500 ? 'server' : 'client';
  }
}

/**
 * ReceiveMessage without the SDK's middleware stack. An idle domain costs nothing but its long polls (three a
 * minute), and for such a small request the stack (endpoint rules, retry tokens, user agent, schema serde) costs about
 * as much again as the request itself (BENCHMARKS.md, "The long poll without the SDK's stack"). What matters is kept:
 * the client's credentials, region, hash, endpoint and request handler, whose deadlines are enforced
 * (aws/request-handler.ts); its clock offset, corrected from the answers' Date as the SDK corrects it; the protocol the
 * SDK speaks to SQS (AWS JSON 1.0, query-compatible errors); the bodies' MD5 check; one quiet retry where the SDK's
 * would matter (a kept-alive connection reset before any answer, a signature refused for a clock just corrected).
 * Anything else fails the poll: the poller backs off and polls again.
 */
export function sqsLongPoll(sqs: SQSClient): LongPoll {
  let longPoll = longPolls.get(sqs);
  if (!longPoll) longPolls.set(sqs, (longPoll = buildLongPoll(sqs)));
  return longPoll;
}

/** One per client, shared by its queues: one signer (and signing-key cache), endpoints resolved once. */
const longPolls = new WeakMap<SQSClient, LongPoll>();

function buildLongPoll(sqs: SQSClient): LongPoll {
  const { config } = sqs;
  const endpoints = new Map<string, Promise<Endpoint>>();
  const signer = new SignatureV4({
    service: 'sqs',
    region: config.region,
    credentials: config.credentials,
    sha256: config.sha256,
  });
  const attempt = async (request: LongPollRequest, { requestTimeoutMs, signal }: LongPollOptions) => {
    const body = JSON.stringify(request);
    let resolving = endpoints.get(request.QueueUrl);
    if (!resolving) endpoints.set(request.QueueUrl, (resolving = endpointFor(sqs, request.QueueUrl)));
    const endpoint = await resolving;
    const unsigned = {
      method: 'POST',
      protocol: endpoint.protocol,
      hostname: endpoint.hostname,
      ...(endpoint.port !== undefined && { port: endpoint.port }),
      path: endpoint.path.endsWith('/') ? endpoint.path : `${endpoint.path}/`,
      query: {},
      headers: {
        host: endpoint.port === undefined ? endpoint.hostname : `${endpoint.hostname}:${endpoint.port}`,
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'AmazonSQS.ReceiveMessage',
        'x-amzn-query-mode': 'true',
        'content-length': String(Buffer.byteLength(body)),
      },
      body,
    } satisfies HttpRequest;
    const signed = await signer.sign(unsigned, {
      signingDate: new Date(Date.now() + config.systemClockOffset),
    });
    const { response } = await config.requestHandler.handle(signed as HttpRequest, {
      requestTimeout: requestTimeoutMs,
      ...(signal && { abortSignal: signal }),
    });
    const answer = response as HttpResponse;
    const skewCorrected = correctClockOffset(sqs, answer.headers.date);
    return { answer, text: await readBody(answer), skewCorrected };
  };
  return async (request, options) => {
    let result;
    try {
      result = await attempt(request, options);
    } catch (error) {
      if (options.signal?.aborted || !isResetBeforeAnswer(error)) throw error;
      result = await attempt(request, options);
    }
    try {
      return parseAnswer(result.answer, result.text);
    } catch (error) {
      if (
        !result.skewCorrected ||
        !(error instanceof SqsServiceError) ||
        error.$metadata.httpStatusCode !== 403
      ) {
        throw error;
      }
      const again = await attempt(request, options);
      return parseAnswer(again.answer, again.text);
    }
  };
}

/** As the SDK's signer: an answer whose Date is five minutes or more from ours resets the client's clock offset. */
function correctClockOffset(sqs: SQSClient, serverDate: string | undefined): boolean {
  const serverTime = serverDate === undefined ? Number.NaN : Date.parse(serverDate);
  if (Number.isNaN(serverTime)) return false;
  if (Math.abs(Date.now() + sqs.config.systemClockOffset - serverTime) < 300_000) return false;
  sqs.config.systemClockOffset = serverTime - Date.now();
  return true;
}

/** A kept-alive connection the other side closed as the request went out: no answer came, so none was lost. */
function isResetBeforeAnswer(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

/**
 * Where the SDK would send it: the client's endpoint when one is configured, else the queue URL's host (the SQS
 * client's `useQueueUrlAsEndpoint`, on by default).
 */
async function endpointFor(sqs: SQSClient, queueUrl: string): Promise<Endpoint> {
  if (sqs.config.endpoint) return sqs.config.endpoint();
  const url = new URL(queueUrl);
  return {
    protocol: url.protocol,
    hostname: url.hostname,
    ...(url.port !== '' && { port: Number(url.port) }),
    path: '/',
  };
}

async function readBody(response: HttpResponse): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response.body as AsyncIterable<Buffer | string>) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseAnswer(response: HttpResponse, text: string): Message[] {
  const status = response.statusCode;
  const parsed = parseJson(text);
  if (status < 200 || status > 299) throw serviceError(response, parsed, text);
  // An empty answer is no message, as the SDK reads it.
  if (text.trim() === '') return [];
  if (parsed === undefined) {
    throw new SqsServiceError('InvalidResponse', `ReceiveMessage answered ${status} without JSON`, 502);
  }
  const messages = (parsed as { Messages?: unknown }).Messages;
  if (messages === undefined) return [];
  if (!Array.isArray(messages)) throw new SqsServiceError('InvalidResponse', 'Messages is not a list', 502);
  verifyBodies(messages as Message[]);
  return messages as Message[];
}

function parseJson(text: string): object | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Named as the SDK names it: the `__type`'s shape name, else the legacy code of `x-amzn-query-error` (the SDK keeps
 * that one as `Code`), else `x-amzn-errortype`.
 */
function serviceError(response: HttpResponse, parsed: object | undefined, text: string): SqsServiceError {
  const fields = (parsed ?? {}) as { __type?: unknown; message?: unknown; Message?: unknown };
  const type = typeof fields.__type === 'string' ? fields.__type.split('#').pop() : undefined;
  const queryError = response.headers['x-amzn-query-error']?.split(';')[0];
  const errorType = response.headers['x-amzn-errortype']?.split(':')[0];
  const name = type || queryError || errorType || `Http${response.statusCode}`;
  const message = fields.message ?? fields.Message;
  const error = new SqsServiceError(
    name,
    typeof message === 'string' ? message : text.slice(0, 200) || name,
    response.statusCode,
  );
  if (queryError) error.Code = queryError;
  return error;
}

/** As the SDK's SQS middleware: a body that does not match its MD5 fails the whole receive. */
function verifyBodies(messages: readonly Message[]): void {
  const broken = messages.filter(
    (m) =>
      m.Body !== undefined &&
      m.MD5OfBody !== undefined &&
      createHash('md5').update(m.Body).digest('hex') !== m.MD5OfBody,
  );
  if (broken.length > 0) {
    throw new Error(`Invalid MD5 checksum on messages: ${broken.map((m) => m.MessageId).join(', ')}`);
  }
}
