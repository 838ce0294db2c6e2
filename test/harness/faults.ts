/**
 * Fault-injection helpers for the "never lose, never duplicate" suite:
 *
 * - {@link startFaultProxy}: a small HTTP proxy in front of an emulator (fauxqs for S3/SQS, dynalite for DynamoDB)
 *   that counts requests per AWS operation and answers chosen operations with AWS-style errors (S3 `SlowDown` 503,
 *   `InternalError` 500, DynamoDB `ProvisionedThroughputExceededException` / `ThrottlingException`, ...). This is a
 *   mock only where the emulators cannot produce the fault: neither fauxqs nor dynalite ever throttles or fails.
 *   Everything else is passed through to the real emulator, streamed (40 MB objects go through unbuffered).
 * - {@link outcomeLines}: the per-message outcome lines of a built daemon's log (the child process itself is
 *   `./daemon-process.ts`).
 * - {@link rawMail}: a tiny hand-made MIME message (MailComposer is too slow for batches of hundreds).
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  HeadBucketCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { EMULATOR_KEEP_ALIVE_MS, domainQueueName } from './emulators.ts';
import type { LogLine } from './pipeline-rig.ts';
import { sesMessageId, sesNotification, snsEnvelope } from './ses-events.ts';

// ---------------------------------------------------------------------------------------------------------------------
// Fault-injecting proxy
// ---------------------------------------------------------------------------------------------------------------------

/** What the proxy knows about a request before deciding to pass it on or to fail it. */
export interface ProxiedRequest {
  method: string;
  /** Path without the query string, e.g. `/bucket/key` for S3. */
  path: string;
  query: URLSearchParams;
  /**
   * AWS operation: from `X-Amz-Target` for JSON protocols (`PutItem`, `ReceiveMessage`, ...), else inferred from the
   * S3 REST shape (`GetObject`, `HeadObject`, `CopyObject`, `PutObject`, `DeleteObject`, `HeadBucket`, ...).
   */
  operation: string;
  /** `json` (DynamoDB, SQS) or `s3` (REST/XML): decides the shape of an injected error. */
  protocol: 'json' | 's3';
  /** `Date.now()` when the request arrived. */
  at: number;
  /** The request body, for JSON protocols only (small; S3 bodies are streamed, never buffered). */
  body?: string;
  /** HTTP status answered (the upstream's or the injected fault's); unset until the answer's head was sent. */
  status?: number;
}

/** An AWS error the proxy answers with. */
export interface AwsFault {
  /** HTTP status: 503 for S3 SlowDown, 500 for InternalError, 400 for DynamoDB throttling. */
  status: number;
  /** AWS error code, e.g. `SlowDown`, `InternalError`, `ProvisionedThroughputExceededException`. */
  code: string;
  message?: string;
}

export interface FaultRule {
  /** Which requests this rule fails (or delays). */
  match: (request: ProxiedRequest) => boolean;
  /** The error to answer with; absent for a delay rule. */
  fault?: AwsFault;
  /** Hold the request this long, then pass it on (latency injection: reorders concurrent calls). */
  delayMs?: number;
  /** Read the request and never answer it: the connection stays open until the client gives up on it. */
  silent?: boolean;
  /** How many more requests to fail; `Infinity` until removed. */
  remaining: number;
  /** Requests failed by this rule so far. */
  hits: number;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT`: use it as the endpoint of the faulted service. */
  readonly endpoint: string;
  /** Every request seen (passed on or failed), in arrival order. */
  readonly requests: readonly ProxiedRequest[];
  /** Requests seen per operation. */
  count(operation: string, filter?: (request: ProxiedRequest) => boolean): number;
  /** Adds a rule; the first matching rule with `remaining > 0` decides. Returns it, to remove or inspect it. */
  fail(match: ((request: ProxiedRequest) => boolean) | string, fault: AwsFault, times?: number): FaultRule;
  /** Holds matching requests for `ms` before passing them on (e.g. to let a later call overtake an earlier one). */
  delay(match: ((request: ProxiedRequest) => boolean) | string, ms: number, times?: number): FaultRule;
  /** Reads matching requests and never answers them, as a silent network path does. */
  silence(match: ((request: ProxiedRequest) => boolean) | string, times?: number): FaultRule;
  /** Connections holding an unanswered (silenced) request the client has not closed yet. */
  openSilentConnections(): number;
  /** Removes one rule, or all of them. */
  clear(rule?: FaultRule): void;
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade']);

function s3Operation(method: string, path: string, headers: http.IncomingHttpHeaders): string {
  const segments = path.split('/').filter((s) => s !== '');
  const object = segments.length >= 2;
  switch (method) {
    case 'GET':
      return object ? 'GetObject' : segments.length === 1 ? 'ListObjects' : 'ListBuckets';
    case 'HEAD':
      return object ? 'HeadObject' : 'HeadBucket';
    case 'PUT':
      if (!object) return 'CreateBucket';
      return headers['x-amz-copy-source'] !== undefined ? 'CopyObject' : 'PutObject';
    case 'DELETE':
      return object ? 'DeleteObject' : 'DeleteBucket';
    default:
      return `${method} ${object ? 'object' : 'bucket'}`;
  }
}

function describeRequest(req: http.IncomingMessage): ProxiedRequest {
  const url = new URL(req.url ?? '/', 'http://proxy.invalid');
  const method = req.method ?? 'GET';
  const target = req.headers['x-amz-target'];
  if (typeof target === 'string' && target.includes('.')) {
    return {
      method,
      path: url.pathname,
      query: url.searchParams,
      operation: target.slice(target.lastIndexOf('.') + 1),
      protocol: 'json',
      at: Date.now(),
    };
  }
  return {
    method,
    path: decodeURIComponent(url.pathname),
    query: url.searchParams,
    operation: s3Operation(method, url.pathname, req.headers),
    protocol: 's3',
    at: Date.now(),
  };
}

function xmlEscape(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function writeFault(res: http.ServerResponse, request: ProxiedRequest, fault: AwsFault): void {
  const requestId = randomUUID();
  request.status = fault.status;
  const message = fault.message ?? `Injected ${fault.code} by the test fault proxy`;
  if (request.protocol === 'json') {
    // awsJson1_0 (DynamoDB, SQS): the SDK takes the error name from `__type` after the `#`.
    const body = JSON.stringify({ __type: `com.amazonaws.injected#${fault.code}`, message });
    res.writeHead(fault.status, {
      'content-type': 'application/x-amz-json-1.0',
      'content-length': Buffer.byteLength(body),
      'x-amzn-requestid': requestId,
      'x-amzn-errortype': fault.code,
    });
    res.end(body);
    return;
  }
  // S3 REST: an <Error> document; HEAD responses carry no body, so the SDK falls back to the status code.
  const body =
    request.method === 'HEAD'
      ? ''
      : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(fault.code)}</Code>` +
        `<Message>${xmlEscape(message)}</Message><RequestId>${requestId}</RequestId></Error>`;
  res.writeHead(fault.status, {
    'content-type': 'application/xml',
    'content-length': Buffer.byteLength(body),
    'x-amz-request-id': requestId,
  });
  res.end(body);
}

/**
 * Starts a streaming proxy on 127.0.0.1:0 in front of `upstream` (`http://127.0.0.1:PORT`). Requests are passed on
 * unchanged (SigV4 is not checked by the emulators, so the changed Host does not matter) unless a rule says to fail
 * or delay them. A failed request's body is read and dropped, as a real service would. (A delayed S3 request's
 * body is paused, not buffered, meanwhile.)
 */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true });
  const requests: ProxiedRequest[] = [];
  const rules: FaultRule[] = [];
  const silent = new Set<http.ServerResponse>();

  function passOn(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    request: ProxiedRequest,
    body: Buffer | undefined,
  ): void {
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
    }
    if (body === undefined && req.headers['transfer-encoding'] !== undefined) {
      headers['transfer-encoding'] = req.headers['transfer-encoding'];
    }
    if (body !== undefined) headers['content-length'] = body.length;
    const upstreamReq = http.request(
      { host: target.hostname, port: Number(target.port), method: req.method, path: req.url, headers, agent },
      (upstreamRes) => {
        const resHeaders: http.OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries(upstreamRes.headers)) {
          if (!HOP_BY_HOP.has(name) && value !== undefined) resHeaders[name] = value;
        }
        if (upstreamRes.headers['transfer-encoding'] !== undefined) {
          resHeaders['transfer-encoding'] = upstreamRes.headers['transfer-encoding'];
        }
        request.status = upstreamRes.statusCode ?? 502;
        res.writeHead(request.status, resHeaders);
        upstreamRes.pipe(res);
        upstreamRes.once('error', () => res.destroy());
      },
    );
    upstreamReq.once('error', () => {
      if (res.headersSent) res.destroy();
      else {
        request.status = 502;
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('fault proxy: upstream unreachable');
      }
    });
    // The client going away (aborted long poll, killed daemon) must not leave the upstream request hanging.
    res.once('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    if (body !== undefined) upstreamReq.end(body);
    else req.pipe(upstreamReq);
  }

  function decide(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    request: ProxiedRequest,
    body?: Buffer,
  ): void {
    requests.push(request);
    const rule = rules.find((r) => r.remaining > 0 && r.match(request));
    if (!rule) {
      passOn(req, res, request, body);
      return;
    }
    rule.remaining -= 1;
    rule.hits += 1;
    const fault = rule.fault;
    if (rule.silent) {
      req.resume();
      silent.add(res);
      res.once('close', () => silent.delete(res));
      return;
    }
    if (fault === undefined) {
      setTimeout(() => passOn(req, res, request, body), rule.delayMs ?? 0);
      return;
    }
    if (body !== undefined) writeFault(res, request, fault);
    else {
      req.resume();
      req.once('end', () => writeFault(res, request, fault));
    }
  }

  const server = http.createServer((req, res) => {
    const request = describeRequest(req);
    if (request.protocol === 's3') {
      decide(req, res, request);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => {
      const body = Buffer.concat(chunks);
      decide(req, res, { ...request, body: body.toString('utf8') }, body);
    });
  });
  // As the emulators behind it: an idle connection closed by the proxy would race the daemon's next call.
  server.keepAliveTimeout = EMULATOR_KEEP_ALIVE_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let stopped: Promise<void> | undefined;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    count(operation, filter) {
      return requests.filter((r) => r.operation === operation && (!filter || filter(r))).length;
    },
    fail(match, fault, times = Infinity) {
      const matcher = typeof match === 'string' ? (r: ProxiedRequest) => r.operation === match : match;
      const rule: FaultRule = { match: matcher, fault, remaining: times, hits: 0 };
      rules.push(rule);
      return rule;
    },
    delay(match, ms, times = Infinity) {
      const matcher = typeof match === 'string' ? (r: ProxiedRequest) => r.operation === match : match;
      const rule: FaultRule = { match: matcher, delayMs: ms, remaining: times, hits: 0 };
      rules.push(rule);
      return rule;
    },
    silence(match, times = Infinity) {
      const matcher = typeof match === 'string' ? (r: ProxiedRequest) => r.operation === match : match;
      const rule: FaultRule = { match: matcher, silent: true, remaining: times, hits: 0 };
      rules.push(rule);
      return rule;
    },
    openSilentConnections: () => silent.size,
    clear(rule) {
      if (rule === undefined) rules.length = 0;
      else {
        const index = rules.indexOf(rule);
        if (index >= 0) rules.splice(index, 1);
      }
    },
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      })),
  };
}

/** S3 throttling, as S3 answers when a prefix is hot. */
export const S3_SLOW_DOWN: AwsFault = {
  status: 503,
  code: 'SlowDown',
  message: 'Please reduce your request rate.',
};
/** S3 internal error. */
export const S3_INTERNAL_ERROR: AwsFault = {
  status: 500,
  code: 'InternalError',
  message: 'We encountered an internal error. Please try again.',
};
/** DynamoDB provisioned-capacity throttling. */
export const DDB_THROUGHPUT_EXCEEDED: AwsFault = {
  status: 400,
  code: 'ProvisionedThroughputExceededException',
  message: 'The level of configured provisioned throughput for the table was exceeded.',
};
/** DynamoDB on-demand / control-plane throttling. */
export const DDB_THROTTLING: AwsFault = {
  status: 400,
  code: 'ThrottlingException',
  message: 'Rate exceeded',
};

// ---------------------------------------------------------------------------------------------------------------------
// The built daemon's log (the child process itself: ./daemon-process.ts)
// ---------------------------------------------------------------------------------------------------------------------

/** The per-message outcome lines of a daemon's log (one per receive). */
export function outcomeLines(logs: readonly LogLine[]): LogLine[] {
  return logs.filter((l) => typeof l.disposition === 'string' && typeof l.sesMessageId === 'string');
}

// ---------------------------------------------------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------------------------------------------------

/** Header carrying a test's own id for a mail, so deliveries can be counted per mail at the sink. */
export const SEQ_HEADER = 'X-Test-Seq';

/** A small, valid CRLF message with `X-Test-Seq: <seq>`. */
export function rawMail(
  seq: string,
  to: string,
  options: { from?: string; bodyBytes?: number } = {},
): Buffer {
  const from = options.from ?? 'sender@external.test';
  const body = 'x'.repeat(Math.max(0, (options.bodyBytes ?? 64) - 2)).replace(/(.{76})/g, '$1\r\n');
  return Buffer.from(
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: fault test ${seq}\r\nMessage-ID: <${seq}@external.test>\r\n` +
      `Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n${SEQ_HEADER}: ${seq}\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: text/plain; charset=us-ascii\r\n\r\n${body}\r\n`,
    'latin1',
  );
}

/** The `X-Test-Seq` value of a delivered mail (searched in the first 8 KB only: the header block). */
export function seqOf(raw: Buffer): string | undefined {
  const head = raw.subarray(0, 8192).toString('latin1');
  return new RegExp(`^${SEQ_HEADER}: (\\S+)\\r?$`, 'm').exec(head)?.[1];
}

/** Deliveries per seq at a sink: `Map<seq, count>`, each accepted transaction counted once per recipient. */
export function countBySeq(messages: ReadonlyArray<{ raw: Buffer; to: string[] }>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of messages) {
    const seq = seqOf(m.raw);
    if (seq === undefined) continue;
    counts.set(seq, (counts.get(seq) ?? 0) + m.to.length);
  }
  return counts;
}

/** Missing and duplicated seqs among `expected`. */
export function tally(
  expected: readonly string[],
  counts: ReadonlyMap<string, number>,
): { missing: string[]; duplicated: Array<[string, number]>; extraCopies: number } {
  const missing = expected.filter((s) => !counts.has(s));
  const duplicated = expected.flatMap((s): Array<[string, number]> => {
    const n = counts.get(s) ?? 0;
    return n > 1 ? [[s, n]] : [];
  });
  return { missing, duplicated, extraCopies: duplicated.reduce((sum, [, n]) => sum + n - 1, 0) };
}

interface LargeMailInput {
  domain: string;
  raw: Buffer;
  recipients: string[];
  source: string;
  messageId?: string;
}

interface LargeMailPut {
  messageId: string;
  bucket: string;
  key: string;
  queueUrl: string;
}

/**
 * `putMail` for mails over fauxqs's 11 MiB request body limit (SES stores up to 40 MB): the object is uploaded in
 * 8 MiB multipart parts, then the same SNS-wrapped S3 notification is enqueued. Returns the SES message id.
 */
export async function putLargeMail(
  stack: { s3: S3Client; sqs: SQSClient },
  input: LargeMailInput,
): Promise<LargeMailPut> {
  const [put] = await putLargeMails(stack, [input]);
  if (!put) throw new Error('putLargeMail: nothing was put');
  return put;
}

/**
 * Several large mails, all uploaded before the first notification is sent: the worker then sees them arrive
 * together, whatever the uploads took, so tests of concurrent large mails do not depend on upload timing.
 */
export async function putLargeMails(
  stack: { s3: S3Client; sqs: SQSClient },
  inputs: readonly LargeMailInput[],
): Promise<LargeMailPut[]> {
  const uploaded = await Promise.all(inputs.map((input) => uploadLargeMail(stack, input)));
  await Promise.all(
    uploaded.map(({ put, notification }) =>
      stack.sqs.send(new SendMessageCommand({ QueueUrl: put.queueUrl, MessageBody: notification })),
    ),
  );
  return uploaded.map(({ put }) => put);
}

async function uploadLargeMail(
  stack: { s3: S3Client; sqs: SQSClient },
  input: LargeMailInput,
): Promise<{ put: LargeMailPut; notification: string }> {
  const messageId = input.messageId ?? sesMessageId();
  const bucket = `${input.domain.toLowerCase().replaceAll('.', '-')}-emails`;
  const key = messageId;
  await stack.s3
    .send(new HeadBucketCommand({ Bucket: bucket }))
    .catch(() => stack.s3.send(new CreateBucketCommand({ Bucket: bucket })));
  const upload = await stack.s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const parts: Array<{ ETag: string; PartNumber: number }> = [];
  const partSize = 8 * 1024 * 1024;
  for (let offset = 0, n = 1; offset < input.raw.length; offset += partSize, n++) {
    const part = await stack.s3.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: upload.UploadId,
        PartNumber: n,
        Body: input.raw.subarray(offset, offset + partSize),
      }),
    );
    parts.push({ ETag: part.ETag ?? '', PartNumber: n });
  }
  await stack.s3.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId: upload.UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
  const queueUrl = (
    await stack.sqs.send(new GetQueueUrlCommand({ QueueName: domainQueueName(input.domain) }))
  ).QueueUrl;
  if (!queueUrl) throw new Error(`putLargeMail: no queue for ${input.domain}`);
  const notification = sesNotification({
    raw: input.raw,
    messageId,
    source: input.source,
    recipients: input.recipients,
    bucket,
    key,
  });
  return {
    put: { messageId, bucket, key, queueUrl },
    notification: snsEnvelope(JSON.stringify(notification)),
  };
}

/**
 * Valid MIME of (just under) `size` bytes with `X-Test-Seq: <seq>`: a short text part and a base64 attachment of
 * pseudo-random bytes in 76-character lines, CRLF throughout — the shape of a large mail SES receives.
 */
export function bigMail(seq: string, to: string, size: number, from = 'sender@external.test'): Buffer {
  const head =
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: large ${seq}\r\nMessage-ID: <${seq}@external.test>\r\n` +
    `Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n${SEQ_HEADER}: ${seq}\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n` +
    `--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n` +
    `Content-Disposition: attachment; filename="blob.bin"\r\n\r\n`;
  const tail = '--b1--\r\n';
  const lines = Math.floor((size - head.length - tail.length) / 78);
  const bytes = Buffer.allocUnsafe(lines * 57);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  const b64 = bytes.toString('base64');
  const out = Buffer.allocUnsafe(head.length + lines * 78 + tail.length);
  let at = out.write(head, 0, 'latin1');
  for (let i = 0; i < lines; i++) {
    at += out.write(b64.slice(i * 76, i * 76 + 76), at, 'latin1');
    at += out.write('\r\n', at, 'latin1');
  }
  at += out.write(tail, at, 'latin1');
  return out.subarray(0, at);
}
