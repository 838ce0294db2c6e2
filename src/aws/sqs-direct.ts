import { createHash } from 'node:crypto';
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import type { Endpoint } from '@smithy/types';
import {
  deadlinePost,
  postAgents,
  type PostAgents,
  type PostAnswer,
  type PostTarget,
} from './deadline-post.ts';
import { longPollDeadlineMs, type AwsDeadlines } from './deadlines.ts';
import { createSigner, sha256Hex, type SignableRequest } from './sigv4.ts';
import { backoffMs } from '../clock.ts';
import { isTemporaryAwsError } from '../errors.ts';

/** What one ReceiveMessage asks for, in the SDK's own names. */
export interface LongPollRequest {
  QueueUrl: string;
  MaxNumberOfMessages: number;
  WaitTimeSeconds: number;
  MessageSystemAttributeNames: string[];
  MessageAttributeNames: string[];
}

/** What one GetQueueAttributes asks for, in the SDK's own names. */
export interface AttributesRequest {
  QueueUrl: string;
  AttributeNames: string[];
}

export interface DirectCallOptions {
  /** An answer is due by an ordinary call's deadline, a long poll's by its wait on top (aws/deadlines.ts). */
  deadlines: AwsDeadlines;
  signal?: AbortSignal;
}

/**
 * The SQS calls an idle domain repeats, sent without the SDK. A frozen request object is prepared once, when first
 * sent (aws/queue.ts freezes the ones it sends again and again); any other is prepared at each call.
 */
export interface DirectSqs {
  receiveMessage(request: LongPollRequest, options: DirectCallOptions): Promise<Message[]>;
  getQueueAttributes(request: AttributesRequest, options: DirectCallOptions): Promise<Record<string, string>>;
}

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
 * The calls an idle domain repeats (its long poll, three a minute, and its queue gauges' reads) without the SDK's
 * middleware stack, signer and request handler: for such small requests the stack (endpoint rules, retry tokens,
 * user agent, schema serde), the SDK's general-purpose signer and its handler's timers cost several times the request
 * itself (BENCHMARKS.md, "Idle calls without the SDK"). What matters is kept: the client's credentials, region,
 * endpoint and clock offset, corrected from the answers' Date as the SDK corrects it; SigV4 as the SDK signs it
 * (aws/sigv4.ts, checked against the SDK's signer); the same deadlines (aws/deadline-post.ts); the protocol the SDK speaks to SQS
 * (AWS JSON 1.0, query-compatible errors); the bodies' MD5 check; one quiet retry where the SDK's would matter (a
 * kept-alive connection reset before any answer, a signature refused for a clock just corrected). Anything else
 * fails the call: the poller backs off and polls again, a gauge keeps its last reading.
 */
export function directSqs(sqs: SQSClient): DirectSqs {
  let direct = directClients.get(sqs);
  if (!direct) directClients.set(sqs, (direct = buildDirectSqs(sqs)));
  return direct;
}

/**
 * One per client, shared by its queues: a pool of connections per silence deadline, each queue's endpoint resolved
 * once, each request object prepared once.
 */
const directClients = new WeakMap<SQSClient, DirectSqs>();

type Action = 'ReceiveMessage' | 'GetQueueAttributes';

function buildDirectSqs(sqs: SQSClient): DirectSqs {
  const { config } = sqs;
  const pools = new Map<number, PostAgents>();
  const endpoints = new Map<string, Promise<Endpoint>>();
  const prepared = new WeakMap<object, PreparedPost>();
  let region: Promise<string> | undefined;
  const sign = createSigner();
  /** The request as SQS must get it: the SDK's protocol, signed with the client's credentials, region and clock. */
  const signedPost = async (action: Action, request: { QueueUrl: string }): Promise<PostTarget> => {
    let resolving = endpoints.get(request.QueueUrl);
    if (!resolving) endpoints.set(request.QueueUrl, (resolving = endpointFor(sqs, request.QueueUrl)));
    const endpoint = await resolving;
    let post = Object.isFrozen(request) ? prepared.get(request) : undefined;
    if (post?.action !== action) {
      post = preparePost(action, request, endpoint);
      if (Object.isFrozen(request)) prepared.set(request, post);
    }
    const headers = sign(post.signable, {
      service: 'sqs',
      region: await (region ??= config.region().catch((error: unknown) => {
        region = undefined;
        throw error;
      })),
      credentials: await config.credentials(),
      epochMs: Date.now() + config.systemClockOffset,
    });
    return { ...post.target, headers };
  };
  const attempt = async (
    action: Action,
    request: { QueueUrl: string },
    answerMs: number,
    { deadlines, signal }: DirectCallOptions,
  ) => {
    let agents = pools.get(deadlines.idleMs);
    if (!agents) pools.set(deadlines.idleMs, (agents = postAgents(deadlines.idleMs)));
    const answer = await deadlinePost(agents, await signedPost(action, request), {
      connectMs: deadlines.connectMs,
      answerMs,
      ...(signal && { signal }),
    });
    return { answer, skewCorrected: correctClockOffset(sqs, answer.headers.date) };
  };
  /** One call, its answer read as JSON (undefined for an empty one) or its failure named as the SDK names it. */
  const call = async (
    action: Action,
    request: { QueueUrl: string },
    answerMs: number,
    options: DirectCallOptions,
  ): Promise<object | undefined> => {
    let result;
    try {
      result = await attempt(action, request, answerMs, options);
    } catch (error) {
      if (options.signal?.aborted || !isResetBeforeAnswer(error)) throw error;
      result = await attempt(action, request, answerMs, options);
    }
    try {
      return readAnswer(action, result.answer);
    } catch (error) {
      // As the SDK: any refusal that came with a clock it had to correct is worth one more try.
      if (!result.skewCorrected || !(error instanceof SqsServiceError)) throw error;
      return readAnswer(action, (await attempt(action, request, answerMs, options)).answer);
    }
  };
  return {
    async receiveMessage(request, options) {
      const answerMs = longPollDeadlineMs(request.WaitTimeSeconds, options.deadlines);
      return receivedMessages(await call('ReceiveMessage', request, answerMs, options));
    },
    async getQueueAttributes(request, options) {
      const answer = await withRetries(() =>
        call('GetQueueAttributes', request, options.deadlines.callMs, options),
      );
      const attributes = (answer as { Attributes?: unknown } | undefined)?.Attributes ?? {};
      if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) {
        throw new SqsServiceError('InvalidResponse', 'Attributes is not a map', 502);
      }
      return attributes as Record<string, string>;
    },
  };
}

/** A request as it goes out every time, all but its date and signature. */
interface PreparedPost {
  action: Action;
  signable: SignableRequest;
  target: Omit<PostTarget, 'headers'>;
}

/**
 * Done once per frozen request object: a poller sends the same request three times a minute (aws/queue.ts keeps one
 * per shape), so its body, the body's hash and the headers' canonical form (aws/sigv4.ts) are kept with it.
 */
function preparePost(action: Action, request: { QueueUrl: string }, endpoint: Endpoint): PreparedPost {
  const body = JSON.stringify(request);
  const bodyHash = sha256Hex(body);
  const path = endpoint.path.endsWith('/') ? endpoint.path : `${endpoint.path}/`;
  const headers = Object.freeze({
    host: endpoint.port === undefined ? endpoint.hostname : `${endpoint.hostname}:${endpoint.port}`,
    'content-type': 'application/x-amz-json-1.0',
    'content-length': String(Buffer.byteLength(body)),
    'x-amz-target': `AmazonSQS.${action}`,
    'x-amzn-query-mode': 'true',
    // As the SDK signs: the payload's hash as a header.
    'x-amz-content-sha256': bodyHash,
  });
  return {
    action,
    signable: { method: 'POST', path, bodyHash, headers },
    target: {
      protocol: endpoint.protocol,
      // An IPv6 literal is bracketed in the Host header only.
      hostname: endpoint.hostname.replace(/^\[(.*)\]$/, '$1'),
      ...(endpoint.port !== undefined && { port: endpoint.port }),
      path,
      body,
    },
  };
}

/**
 * Up to three attempts while the failure is temporary, as the SDK client would make (its `maxAttempts`): a queue's
 * attributes at start decide its lease and retry schedule, and a throttle there must not put defaults in their place.
 * A long poll gets no such retry: its poller backs off and polls again.
 */
async function withRetries<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (attempt >= 3 || !isTemporaryAwsError(error)) throw error;
      await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt - 1, 100, 1_000)));
    }
  }
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

function readAnswer(action: Action, response: PostAnswer): object | undefined {
  const { statusCode: status, text } = response;
  const parsed = parseJson(text);
  if (status < 200 || status > 299) throw serviceError(response, parsed, text);
  // An empty answer is an empty result, as the SDK reads it.
  if (text.trim() === '') return undefined;
  if (parsed === undefined) {
    throw new SqsServiceError('InvalidResponse', `${action} answered ${status} without JSON`, 502);
  }
  return parsed;
}

function receivedMessages(answer: object | undefined): Message[] {
  const messages = (answer as { Messages?: unknown } | undefined)?.Messages;
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
function serviceError(response: PostAnswer, parsed: object | undefined, text: string): SqsServiceError {
  const fields = (parsed ?? {}) as { __type?: unknown; message?: unknown; Message?: unknown };
  // As the SDK's sanitizeErrorCode: the shape name, without a namespace or a `:`-suffix.
  const type = typeof fields.__type === 'string' ? fields.__type.split('#').pop()?.split(':')[0] : undefined;
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
