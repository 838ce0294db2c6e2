/**
 * Protocol emulators for integration tests: SQS + SNS + S3 + STS GetCallerIdentity (fauxqs, plus bucket policies),
 * DynamoDB (dynalite) and SES v1/v2 (aws-ses-v2-local behind a recording, fault-injecting proxy that also answers
 * SES's control plane: identities, receipt rules, configuration sets).
 *
 * Every server listens on 127.0.0.1 with an ephemeral port (port 0), so test files can run in parallel, and every
 * `stop()` closes all sockets and agents it created so `node --test` exits on its own. Start a stack once per test
 * file (`before`/`after`), not once per test: startup costs a few hundred milliseconds, most of it module loading.
 *
 * @example
 * ```ts
 * let stack: TestStack;
 * before(async () => {
 *   stack = await startStack({ tables: true });
 * });
 * after(() => stack.stop());
 * ```
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';

import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { S3Client } from '@aws-sdk/client-s3';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { SESv2Client } from '@aws-sdk/client-sesv2';
import { SNSClient } from '@aws-sdk/client-sns';
import { buildApp, type BuildAppOptions } from 'fauxqs';
import { TABLES } from '../../src/aws/resources.ts';
import { serveBucketPolicies, type HookableServer } from './s3-bucket-policy.ts';
import { createSesControlPlane, type SesControlPlane } from './ses-control-plane.ts';

const require = createRequire(import.meta.url);

/** Region every emulator and client in the harness uses. */
export const TEST_REGION = 'us-east-1';
/** Dummy credentials: the emulators only check that a SigV4 `Authorization` header is present. */
export const TEST_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' } as const;

// ---------------------------------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------------------------------

/**
 * Polls `predicate` every `intervalMs` until it returns true, or rejects after `timeoutMs` with `what` in the message.
 * Handy for asserting on state the daemon changes asynchronously (queue counts, table items, ...).
 */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what = 'condition',
  intervalMs = 10,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

function portOf(server: http.Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string')
    throw new Error('server is not listening on a TCP port');
  return (address as AddressInfo).port;
}

/**
 * How long the emulators keep an idle keep-alive connection. Node's default (5 s) races the clients: a request sent on a
 * connection just as the server closes it fails with ECONNRESET, and the test clients make a single attempt. A slow
 * machine leaves connections idle for seconds between a test's set-up and its first call; 10 minutes outlasts a test.
 */
export const EMULATOR_KEEP_ALIVE_MS = 600_000;

function listen(server: http.Server): Promise<number> {
  server.keepAliveTimeout = EMULATOR_KEEP_ALIVE_MS;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(portOf(server));
    });
  });
}

/** Closes an http server without waiting for keep-alive clients to hang up (they would keep the test alive). */
function closeHttpServer(server: http.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}

function readBody(stream: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

// ---------------------------------------------------------------------------------------------------------------------
// fauxqs (SQS + S3)
// ---------------------------------------------------------------------------------------------------------------------

type FauxqsApp = ReturnType<typeof buildApp>;
type FauxqsStores = NonNullable<BuildAppOptions['stores']>;
/** fauxqs's in-memory SQS store (queues, messages). */
export type FauxqsSqsStore = FauxqsStores['sqsStore'];
/** fauxqs's in-memory S3 store (buckets, objects). */
export type FauxqsS3Store = FauxqsStores['s3Store'];

/**
 * fauxqs only exports `buildApp` from its package entry, but the queue-URL fix below needs our own store instances.
 * The store classes live next to app.js; they are loaded by file URL because the package `exports` map hides them.
 */
async function loadFauxqsClass<T>(relativePath: string, exportName: string): Promise<new () => T> {
  const url = new URL(relativePath, import.meta.resolve('fauxqs'));
  const mod: unknown = await import(url.href);
  const ctor = isRecord(mod) ? mod[exportName] : undefined;
  if (typeof ctor !== 'function') {
    throw new Error(
      `fauxqs changed layout: ${url.href} no longer exports ${exportName} (see test/harness/emulators.ts)`,
    );
  }
  return ctor as new () => T;
}

/** Control surface of a running fauxqs, for test setup and white-box assertions. */
export interface FauxqsControl {
  /** The Fastify app serving SQS (JSON protocol), S3 (REST) and SNS (query protocol). */
  readonly app: FauxqsApp;
  readonly sqsStore: FauxqsSqsStore;
  readonly s3Store: FauxqsS3Store;
  /** Bucket policies by bucket name (fauxqs has none; see s3-bucket-policy.ts). */
  readonly bucketPolicies: Map<string, string>;
  /** Non-destructive look at a queue (ready, delayed and in-flight messages), or undefined if it does not exist. */
  inspectQueue(name: string): ReturnType<FauxqsSqsStore['inspectQueue']>;
  /** Drops all messages and objects but keeps queues and buckets. */
  reset(): void;
}

/** A running fauxqs (SQS + S3 + SNS) bound to 127.0.0.1. */
export interface FauxqsHandle {
  /** `http://127.0.0.1:PORT`, the endpoint for both the SQS and the S3 client (S3 needs `forcePathStyle: true`). */
  readonly endpoint: string;
  readonly port: number;
  readonly server: FauxqsControl;
  stop(): Promise<void>;
}

/**
 * Starts fauxqs in-process on 127.0.0.1:0.
 *
 * Queue URLs: fauxqs's SqsStore defaults to `host = 'localhost'` and then hands out
 * `http://sqs.us-east-1.localhost:PORT/000000000000/<name>`, a name that does not resolve here. An SQS client with
 * an explicit `endpoint` ignores the QueueUrl host, but one configured only through `AWS_ENDPOINT_URL_SQS` does not
 * (the SDK's queueUrlMiddleware only stays out of the way when `config.endpoint` is set) and would try to connect to
 * that name. With `host = ''` fauxqs builds the URL from the request's Host header instead, so queues created through
 * this endpoint get `http://127.0.0.1:PORT/000000000000/<name>`, which works in either configuration.
 * `buildApp({ host })` ignores an empty string, hence the stores are constructed here.
 */
export async function startFauxqs(): Promise<FauxqsHandle> {
  const [SqsStore, SnsStore, S3Store] = await Promise.all([
    loadFauxqsClass<FauxqsStores['sqsStore']>('./sqs/sqsStore.js', 'SqsStore'),
    loadFauxqsClass<FauxqsStores['snsStore']>('./sns/snsStore.js', 'SnsStore'),
    loadFauxqsClass<FauxqsStores['s3Store']>('./s3/s3Store.js', 'S3Store'),
  ]);
  const sqsStore = new SqsStore();
  sqsStore.host = '';
  const s3Store = new S3Store();
  const app = buildApp({ logger: false, stores: { sqsStore, snsStore: new SnsStore(), s3Store } });
  const bucketPolicies = serveBucketPolicies(app as unknown as HookableServer, (name) =>
    s3Store.hasBucket(name),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.keepAliveTimeout = EMULATOR_KEEP_ALIVE_MS;
  const port = portOf(app.server);
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    server: {
      app,
      sqsStore,
      s3Store,
      bucketPolicies,
      inspectQueue: (name) => sqsStore.inspectQueue(name),
      reset: () => {
        sqsStore.clearMessages();
        s3Store.clearObjects();
      },
    },
    // app.close() also cancels pending long polls (preClose hook) and, thanks to forceCloseConnections, drops
    // keep-alive sockets.
    stop: () => (stopped ??= app.close().then(() => undefined)),
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// dynalite (DynamoDB)
// ---------------------------------------------------------------------------------------------------------------------

/** Options of dynalite we use (it ships no type declarations). */
interface DynaliteOptions {
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
  maxItemSizeKb?: number;
}

/** A running dynalite bound to 127.0.0.1. */
export interface DynaliteHandle {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly port: number;
  readonly server: http.Server;
  stop(): Promise<void>;
}

/**
 * Starts an in-memory dynalite on 127.0.0.1:0. Table state transitions are instant (CREATING → ACTIVE in 0 ms), so
 * `createTables` needs no real waiting; `createTableMs` makes new tables take that long, as on AWS.
 */
export async function startDynalite(
  overrides: Pick<DynaliteOptions, 'createTableMs'> = {},
): Promise<DynaliteHandle> {
  const factory: unknown = require('dynalite');
  if (typeof factory !== 'function') throw new Error('dynalite did not export a factory function');
  const options: DynaliteOptions = { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0, ...overrides };
  const server: unknown = factory(options);
  if (!(server instanceof http.Server)) throw new Error('dynalite did not return an http.Server');
  const port = await listen(server);
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    server,
    // dynalite's close() also closes its LevelDB store; closeAllConnections() keeps idle keep-alive sockets from
    // delaying it.
    stop: () => (stopped ??= closeHttpServer(server)),
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// SES (aws-ses-v2-local behind a recording proxy)
// ---------------------------------------------------------------------------------------------------------------------

/** One raw mail the SES endpoint accepted. */
export interface RecordedSesMail {
  /** `v2` for SESv2 `SendEmail` with `Content.Raw`, `v1` for SES `SendRawEmail`. */
  api: 'v1' | 'v2';
  /** The exact bytes the client sent (decoded from base64). */
  raw: Buffer;
  /**
   * Envelope recipients as given in the request: v2 `Destination.{To,Cc,Bcc}Addresses`, v1 `Destinations.member.N`.
   * Empty when the caller let SES take them from the headers.
   */
  destinations: string[];
  /** v2 `FromEmailAddress` / v1 `Source`, when given. */
  from?: string;
  /** v2 / v1 `ConfigurationSetName`, when given: SES publishes the send's events to that set's destinations. */
  configurationSet?: string;
  /** SES message id the emulator answered with. */
  messageId?: string;
  /** `Date.now()` when the emulator accepted it. */
  at: number;
}

/** An AWS-style error the SES endpoint answers with instead of forwarding the request. */
export interface SesFault {
  /** HTTP status, e.g. 429 (v2 throttling), 400 (v1 throttling, MessageRejected), 500. */
  status: number;
  /**
   * AWS error code; becomes the SDK error `name`. v2: `x-amzn-errortype` header (e.g. `TooManyRequestsException`,
   * `MessageRejected`, `SendingPausedException`); v1: `<Code>` (e.g. `Throttling`, `MessageRejected`).
   */
  code: string;
  message?: string;
}

/** A running SES emulator, reached through a recording proxy. */
export interface SesHandle {
  /** `http://127.0.0.1:PORT` of the proxy: give this to SESv2Client / SESClient. */
  readonly endpoint: string;
  readonly port: number;
  /** The emulator itself, for its web UI / `/store` while debugging. */
  readonly upstreamEndpoint: string;
  /** Identities, receipt rules, configuration sets and the account, answered on this endpoint (ses-control-plane.ts). */
  readonly control: SesControlPlane;
  /** Raw mails accepted so far, in order. The array is cleared in place, so keeping a reference is fine. */
  readonly sent: RecordedSesMail[];
  /** Send requests received so far (raw or not, including those answered with an injected fault). */
  readonly sendAttempts: number;
  /** Forgets recorded mails and pending faults; the attempt counter restarts at 0. */
  clear(): void;
  /** Answers the next `count` send requests (v1 SendRawEmail/SendEmail, v2 outbound-emails) with `fault`. */
  failNext(count: number, fault: SesFault): void;
  /** Resolves once at least `count` mails were recorded. */
  waitForSent(count: number, timeoutMs?: number): Promise<RecordedSesMail[]>;
  /**
   * Runs `listener` for every raw mail the emulator accepted, before the sender gets its answer (SES publishes a
   * send's events while it answers; test/harness/ses-outbound.ts publishes them this way). Returns a remover.
   */
  onSent(listener: (mail: RecordedSesMail) => Promise<void>): () => void;
  stop(): Promise<void>;
}

type SesServerFactory = (config: { host: string; port: number }) => Promise<http.Server>;

function loadSesServerFactory(): SesServerFactory {
  // aws-ses-v2-local is CommonJS with `exports.default = server`; a native ESM default import yields the whole
  // exports object, so take `.default` explicitly.
  const mod: unknown = require('aws-ses-v2-local');
  const factory = isRecord(mod) ? mod.default : undefined;
  if (typeof factory !== 'function')
    throw new Error('aws-ses-v2-local did not export a default server factory');
  return factory as SesServerFactory;
}

function xmlEscape(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

interface ParsedSend {
  api: 'v1' | 'v2';
  /** Only raw sends are recorded; Simple/Template v2 sends and v1 SendEmail only count as attempts. */
  record?: Omit<RecordedSesMail, 'messageId' | 'at'>;
}

function parseSendRequest(req: http.IncomingMessage, body: Buffer): ParsedSend | undefined {
  if (req.method !== 'POST') return undefined;
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/v2/email/outbound-emails') {
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      return { api: 'v2' };
    }
    if (!isRecord(json)) return { api: 'v2' };
    const content = isRecord(json.Content) ? json.Content : {};
    const rawPart = isRecord(content.Raw) ? content.Raw : undefined;
    if (!rawPart || typeof rawPart.Data !== 'string') return { api: 'v2' };
    const destination = isRecord(json.Destination) ? json.Destination : {};
    return {
      api: 'v2',
      record: {
        api: 'v2',
        raw: Buffer.from(rawPart.Data, 'base64'),
        destinations: [
          ...stringArray(destination.ToAddresses),
          ...stringArray(destination.CcAddresses),
          ...stringArray(destination.BccAddresses),
        ],
        ...(typeof json.FromEmailAddress === 'string' ? { from: json.FromEmailAddress } : {}),
        ...(typeof json.ConfigurationSetName === 'string'
          ? { configurationSet: json.ConfigurationSetName }
          : {}),
      },
    };
  }
  if (path === '/' && (req.headers['content-type'] ?? '').includes('application/x-www-form-urlencoded')) {
    const form = new URLSearchParams(body.toString('utf8'));
    const action = form.get('Action');
    if (action === 'SendEmail') return { api: 'v1' };
    if (action !== 'SendRawEmail') return undefined;
    const data = form.get('RawMessage.Data');
    if (data === null) return { api: 'v1' };
    // Destinations.member.N is 1-based and dense.
    const destinations: string[] = [];
    for (let i = 1; ; i++) {
      const member = form.get(`Destinations.member.${i}`);
      if (member === null) break;
      destinations.push(member);
    }
    const source = form.get('Source');
    const configurationSet = form.get('ConfigurationSetName');
    return {
      api: 'v1',
      record: {
        api: 'v1',
        raw: Buffer.from(data, 'base64'),
        destinations,
        ...(source !== null ? { from: source } : {}),
        ...(configurationSet !== null ? { configurationSet } : {}),
      },
    };
  }
  return undefined;
}

function extractMessageId(api: 'v1' | 'v2', body: Buffer): string | undefined {
  const text = body.toString('utf8');
  if (api === 'v1') return /<MessageId>([^<]+)<\/MessageId>/.exec(text)?.[1];
  try {
    const json: unknown = JSON.parse(text);
    return isRecord(json) && typeof json.MessageId === 'string' ? json.MessageId : undefined;
  } catch {
    return undefined;
  }
}

function writeFault(res: http.ServerResponse, api: 'v1' | 'v2', fault: SesFault): void {
  const requestId = randomUUID();
  const message = fault.message ?? `Injected ${fault.code} by the test harness`;
  if (api === 'v2') {
    // restJson1: the SDK takes the error name from the x-amzn-errortype header first (then body `code`/`__type`),
    // and the message from body `message`/`Message`.
    const body = JSON.stringify({ message });
    res.writeHead(fault.status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'x-amzn-errortype': fault.code,
      'x-amzn-requestid': requestId,
    });
    res.end(body);
    return;
  }
  // awsQuery: an ErrorResponse document; Type is Sender for client errors and Receiver for server errors.
  const type = fault.status >= 500 ? 'Receiver' : 'Sender';
  const body =
    `<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/">` +
    `<Error><Type>${type}</Type><Code>${xmlEscape(fault.code)}</Code><Message>${xmlEscape(message)}</Message></Error>` +
    `<RequestId>${requestId}</RequestId></ErrorResponse>`;
  res.writeHead(fault.status, {
    'content-type': 'text/xml',
    'content-length': Buffer.byteLength(body),
    'x-amzn-requestid': requestId,
  });
  res.end(body);
}

/** Hop-by-hop headers must not be copied between the two legs of the proxy. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade']);

/**
 * Starts aws-ses-v2-local on 127.0.0.1:0 behind a recording proxy, also on 127.0.0.1:0.
 *
 * Why a proxy: the emulator's own `/store` keeps only a parsed summary of each mail (no raw bytes, no custom headers,
 * no envelope destinations), which is not enough to assert on forwards and auto-replies byte for byte. The proxy
 * records the request itself and can answer with AWS-style errors without forwarding (`failNext`).
 *
 * Note: aws-ses-v2-local keeps its store in a module-level variable, so two SES handles in one process share it;
 * the recorded `sent` lists are per handle.
 */
export async function startSes(): Promise<SesHandle> {
  const upstream = await loadSesServerFactory()({ host: '127.0.0.1', port: 0 });
  upstream.keepAliveTimeout = EMULATOR_KEEP_ALIVE_MS;
  const upstreamPort = portOf(upstream);
  const upstreamAgent = new http.Agent({ keepAlive: true });
  const sent: RecordedSesMail[] = [];
  const faults: SesFault[] = [];
  const sentListeners = new Set<() => void>();
  const control = createSesControlPlane();
  const sentHooks = new Set<(mail: RecordedSesMail) => Promise<void>>();
  let sendAttempts = 0;

  function forward(
    req: http.IncomingMessage,
    body: Buffer,
  ): Promise<{ status: number; headers: http.OutgoingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(req.headers)) {
        if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
      }
      headers.host = `127.0.0.1:${upstreamPort}`;
      headers['content-length'] = body.length;
      const upstreamReq = http.request(
        {
          host: '127.0.0.1',
          port: upstreamPort,
          method: req.method,
          path: req.url,
          headers,
          agent: upstreamAgent,
        },
        (upstreamRes) => {
          readBody(upstreamRes).then((resBody) => {
            const resHeaders: http.OutgoingHttpHeaders = {};
            for (const [name, value] of Object.entries(upstreamRes.headers)) {
              if (!HOP_BY_HOP.has(name) && value !== undefined) resHeaders[name] = value;
            }
            resHeaders['content-length'] = resBody.length;
            resolve({ status: upstreamRes.statusCode ?? 502, headers: resHeaders, body: resBody });
          }, reject);
        },
      );
      upstreamReq.on('error', reject);
      upstreamReq.end(body);
    });
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req);
    if (control.handle(req, body, res)) return;
    const send = parseSendRequest(req, body);
    if (send) {
      sendAttempts++;
      const fault = faults.shift();
      if (fault) {
        writeFault(res, send.api, fault);
        return;
      }
    }
    const upstreamRes = await forward(req, body);
    if (send?.record && upstreamRes.status >= 200 && upstreamRes.status < 300) {
      const messageId = extractMessageId(send.api, upstreamRes.body);
      const mail: RecordedSesMail = {
        ...send.record,
        ...(messageId !== undefined ? { messageId } : {}),
        at: Date.now(),
      };
      sent.push(mail);
      for (const listener of sentListeners) listener();
      // The mail was accepted: a failing hook (an event that could not be published) does not fail the send.
      for (const hook of sentHooks) {
        await hook(mail).catch((err: unknown) =>
          console.error(`test harness SES proxy: a send hook failed: ${String(err)}`),
        );
      }
    }
    res.writeHead(upstreamRes.status, upstreamRes.headers);
    res.end(upstreamRes.body);
  }

  const proxy = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`test harness SES proxy: ${String(err)}`);
    });
  });
  const port = await listen(proxy);
  let stopped: Promise<void> | undefined;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    upstreamEndpoint: `http://127.0.0.1:${upstreamPort}`,
    control,
    sent,
    get sendAttempts() {
      return sendAttempts;
    },
    clear() {
      sent.length = 0;
      faults.length = 0;
      sendAttempts = 0;
    },
    failNext(count, fault) {
      for (let i = 0; i < count; i++) faults.push({ ...fault });
    },
    onSent(listener) {
      sentHooks.add(listener);
      return () => sentHooks.delete(listener);
    },
    waitForSent(count, timeoutMs = 5000) {
      if (sent.length >= count) return Promise.resolve(sent.slice());
      return new Promise((resolve, reject) => {
        const listener = (): void => {
          if (sent.length < count) return;
          clearTimeout(timer);
          sentListeners.delete(listener);
          resolve(sent.slice());
        };
        const timer = setTimeout(() => {
          sentListeners.delete(listener);
          reject(
            new Error(`timed out after ${timeoutMs} ms waiting for ${count} SES mails (got ${sent.length})`),
          );
        }, timeoutMs);
        sentListeners.add(listener);
      });
    },
    stop: () =>
      (stopped ??= (async () => {
        await Promise.all([closeHttpServer(proxy), closeHttpServer(upstream)]);
        upstreamAgent.destroy();
      })()),
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// The whole stack
// ---------------------------------------------------------------------------------------------------------------------

/** DynamoDB table names, defaulting to the daemon's defaults (src/config/settings.ts). */
export interface TableNames {
  rules: string;
  blocklist: string;
  outbound: string;
  oooState: string;
  idempotency: string;
}

/** The daemon's default table names. */
export const DEFAULT_TABLE_NAMES: Readonly<TableNames> = {
  rules: 'email-rules',
  blocklist: 'email-blocked-senders',
  outbound: 'ses-outbound-messages',
  oooState: 'email-ooo-replies',
  idempotency: 'email-worker-idempotency',
};

/** Options of {@link startStack}. */
export interface StackOptions {
  /** Create the daemon's tables right away: `true` for the default names, or some names to override. */
  tables?: boolean | Partial<TableNames>;
  /** Create a queue per domain right away (see {@link createDomainQueue}); the URLs land in `TestStack.queues`. */
  domains?: readonly string[];
  /** Options for the queues created from `domains`. */
  queueOptions?: DomainQueueOptions;
}

/** All emulators, ready-made clients and the environment for a daemon child process. */
export interface TestStack {
  readonly endpoints: {
    readonly sqs: string;
    readonly s3: string;
    readonly dynamodb: string;
    readonly ses: string;
  };
  readonly fauxqs: FauxqsHandle;
  readonly dynalite: DynaliteHandle;
  readonly ses: SesHandle;
  readonly sqs: SQSClient;
  /** Path-style S3 client (fauxqs does virtual-hosted style only through DNS names we do not have). */
  readonly s3: S3Client;
  /** Document client (plain JS values) with `removeUndefinedValues: true`. */
  readonly ddb: DynamoDBDocumentClient;
  /** The low-level client under `ddb`, for control-plane calls and raw attribute values. */
  readonly dynamodb: DynamoDBClient;
  readonly sesv2: SESv2Client;
  /** SNS of fauxqs: topics whose SQS subscriptions deliver the SNS envelope (or the bare message, raw delivery). */
  readonly sns: SNSClient;
  /** Table names, when `tables` was requested. */
  readonly tables?: TableNames;
  /** Queues created from `domains`, keyed by domain. */
  readonly queues: Readonly<Record<string, DomainQueue>>;
  /**
   * Environment for starting the daemon as a child process: region, dummy credentials, per-service endpoints,
   * path-style S3, plus `*_TABLE` names when tables were created. Merge it over `process.env`.
   */
  readonly env: Record<string, string>;
  /** Destroys the clients and stops every emulator. Idempotent. */
  stop(): Promise<void>;
}

/** Constructor options shared by every AWS SDK client pointed at an emulator. */
export interface EmulatorClientConfig {
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  maxAttempts: number;
  /** Options for the SDK's default NodeHttpHandler; the agent is shared and destroyed by its owner. */
  requestHandler: { httpAgent: http.Agent };
}

/**
 * Client settings for the emulators: explicit endpoint, dummy credentials, a keep-alive agent (the daemon uses one
 * too, and it keeps tests fast) and a single attempt so errors surface immediately instead of after SDK back-off.
 */
export function clientConfig(endpoint: string, agent: http.Agent): EmulatorClientConfig {
  return {
    endpoint,
    region: TEST_REGION,
    credentials: TEST_CREDENTIALS,
    maxAttempts: 1,
    requestHandler: { httpAgent: agent },
  };
}

/** Starts fauxqs, dynalite and the SES emulator in parallel and builds clients for them. */
export async function startStack(options: StackOptions = {}): Promise<TestStack> {
  const [fauxqsResult, dynaliteResult, sesResult] = await Promise.allSettled([
    startFauxqs(),
    startDynalite(),
    startSes(),
  ]);
  if (
    fauxqsResult.status === 'rejected' ||
    dynaliteResult.status === 'rejected' ||
    sesResult.status === 'rejected'
  ) {
    // Do not leak the emulators that did start: their sockets would keep the test process alive.
    await Promise.all(
      [fauxqsResult, dynaliteResult, sesResult].map((r) =>
        r.status === 'fulfilled' ? r.value.stop() : undefined,
      ),
    );
    const failure = [fauxqsResult, dynaliteResult, sesResult].find((r) => r.status === 'rejected');
    throw failure?.reason instanceof Error ? failure.reason : new Error(String(failure?.reason));
  }
  const fauxqs = fauxqsResult.value;
  const dynalite = dynaliteResult.value;
  const ses = sesResult.value;

  const agent = new http.Agent({ keepAlive: true });
  const sqs = new SQSClient(clientConfig(fauxqs.endpoint, agent));
  const s3 = new S3Client({ ...clientConfig(fauxqs.endpoint, agent), forcePathStyle: true });
  const dynamodb = new DynamoDBClient(clientConfig(dynalite.endpoint, agent));
  const ddb = DynamoDBDocumentClient.from(dynamodb, { marshallOptions: { removeUndefinedValues: true } });
  const sesv2 = new SESv2Client(clientConfig(ses.endpoint, agent));
  const sns = new SNSClient(clientConfig(fauxqs.endpoint, agent));

  const env: Record<string, string> = {
    AWS_REGION: TEST_REGION,
    AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    AWS_ENDPOINT_URL_SQS: fauxqs.endpoint,
    AWS_ENDPOINT_URL_S3: fauxqs.endpoint,
    AWS_ENDPOINT_URL_SES: ses.endpoint,
    AWS_ENDPOINT_URL_DYNAMODB: dynalite.endpoint,
    // fauxqs answers SNS and STS GetCallerIdentity on its one endpoint too.
    AWS_ENDPOINT_URL_SNS: fauxqs.endpoint,
    AWS_ENDPOINT_URL_STS: fauxqs.endpoint,
    S3_FORCE_PATH_STYLE: 'true',
  };

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      for (const client of [sqs, s3, dynamodb, sesv2, sns]) client.destroy();
      agent.destroy();
      await Promise.all([fauxqs.stop(), dynalite.stop(), ses.stop()]);
    })());

  try {
    let tables: TableNames | undefined;
    if (options.tables) {
      tables = { ...DEFAULT_TABLE_NAMES, ...(options.tables === true ? {} : options.tables) };
      await createTables(dynamodb, tables);
      Object.assign(env, {
        RULES_TABLE: tables.rules,
        BLOCKLIST_TABLE: tables.blocklist,
        OUTBOUND_TABLE: tables.outbound,
        OOO_STATE_TABLE: tables.oooState,
        IDEMPOTENCY_TABLE: tables.idempotency,
      });
    }
    const queues: Record<string, DomainQueue> = {};
    for (const domain of options.domains ?? []) {
      queues[domain] = await createDomainQueue(sqs, domain, options.queueOptions);
    }
    return {
      endpoints: {
        sqs: fauxqs.endpoint,
        s3: fauxqs.endpoint,
        dynamodb: dynalite.endpoint,
        ses: ses.endpoint,
      },
      fauxqs,
      dynalite,
      ses,
      sqs,
      s3,
      ddb,
      dynamodb,
      sesv2,
      sns,
      ...(tables ? { tables } : {}),
      queues,
      env,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// DynamoDB tables
// ---------------------------------------------------------------------------------------------------------------------

/** Hash key attribute (type S) of each table, as the daemon expects it (src/aws/resources.ts). */
const TABLE_KEYS: Readonly<Record<keyof TableNames, string>> = Object.fromEntries(
  TABLES.map((t) => [t.role, t.partitionKey]),
) as Record<keyof TableNames, string>;

/**
 * Creates the daemon's tables (PAY_PER_REQUEST, single string hash key each) and waits until they are ACTIVE.
 * Accepts the document client too: it forwards control-plane commands to the client it wraps.
 */
export async function createTables(
  ddb: DynamoDBClient | DynamoDBDocumentClient,
  names: Partial<TableNames> = DEFAULT_TABLE_NAMES,
): Promise<TableNames> {
  const resolved: TableNames = { ...DEFAULT_TABLE_NAMES, ...names };
  // The document client's send() is typed for document commands only, but passes any command through.
  const client = ddb as DynamoDBClient;
  await Promise.all(
    (Object.keys(TABLE_KEYS) as (keyof TableNames)[]).map(async (role) => {
      const TableName = resolved[role];
      const key = TABLE_KEYS[role];
      await client.send(
        new CreateTableCommand({
          TableName,
          AttributeDefinitions: [{ AttributeName: key, AttributeType: 'S' }],
          KeySchema: [{ AttributeName: key, KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      await waitUntil(
        async () => {
          const { Table } = await client.send(new DescribeTableCommand({ TableName }));
          return Table?.TableStatus === 'ACTIVE';
        },
        5000,
        `table ${TableName} to become ACTIVE`,
      );
    }),
  );
  return resolved;
}

// ---------------------------------------------------------------------------------------------------------------------
// SQS queues
// ---------------------------------------------------------------------------------------------------------------------

/** Options of {@link createDomainQueue}. */
export interface DomainQueueOptions {
  /** VisibilityTimeout of the main queue in seconds (SQS default 30). Short values make redelivery tests fast. */
  visibilityTimeout?: number;
  /** Also create `<queue>-dlq` and attach it with a RedrivePolicy. */
  withDlq?: boolean;
  /** maxReceiveCount of the RedrivePolicy (default 3). */
  maxReceiveCount?: number;
  /** Queue name template as in QUEUE_NAME_TEMPLATE (default `{domain}-queue`). */
  template?: string;
}

/** URLs of a domain's queue(s). */
export interface DomainQueue {
  queueName: string;
  queueUrl: string;
  dlqName?: string;
  dlqUrl?: string;
}

/** The daemon's queue name for a domain: `{domain}` → domain with dots replaced by dashes. */
export function domainQueueName(domain: string, template = '{domain}-queue'): string {
  return template.replaceAll('{domain}', domain.toLowerCase().replaceAll('.', '-'));
}

/** Creates the queue for `domain` (`example.com` → `example-com-queue`), optionally with a DLQ `<queue>-dlq`. */
export async function createDomainQueue(
  sqs: SQSClient,
  domain: string,
  options: DomainQueueOptions = {},
): Promise<DomainQueue> {
  const queueName = domainQueueName(domain, options.template);
  const attributes: Record<string, string> = {};
  if (options.visibilityTimeout !== undefined)
    attributes.VisibilityTimeout = String(options.visibilityTimeout);
  let dlq: { dlqName: string; dlqUrl: string } | undefined;
  if (options.withDlq) {
    const dlqName = `${queueName}-dlq`;
    const created = await sqs.send(new CreateQueueCommand({ QueueName: dlqName }));
    if (!created.QueueUrl) throw new Error(`CreateQueue ${dlqName} returned no QueueUrl`);
    const { Attributes } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: created.QueueUrl, AttributeNames: ['QueueArn'] }),
    );
    const dlqArn = Attributes?.QueueArn;
    if (!dlqArn) throw new Error(`GetQueueAttributes ${dlqName} returned no QueueArn`);
    attributes.RedrivePolicy = JSON.stringify({
      deadLetterTargetArn: dlqArn,
      maxReceiveCount: options.maxReceiveCount ?? 3,
    });
    dlq = { dlqName, dlqUrl: created.QueueUrl };
  }
  const created = await sqs.send(new CreateQueueCommand({ QueueName: queueName, Attributes: attributes }));
  if (!created.QueueUrl) throw new Error(`CreateQueue ${queueName} returned no QueueUrl`);
  return { queueName, queueUrl: created.QueueUrl, ...dlq };
}

/** Approximate message counts of a queue. */
export interface QueueCounts {
  /** ApproximateNumberOfMessages: waiting to be received. */
  visible: number;
  /** ApproximateNumberOfMessagesNotVisible: received, neither deleted nor timed out yet. */
  inFlight: number;
}

/** Reads a queue's visible and in-flight counts (exact on fauxqs, despite the "Approximate" names). */
export async function queueCounts(sqs: SQSClient, queueUrl: string): Promise<QueueCounts> {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return {
    visible: Number(Attributes?.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0),
  };
}

/**
 * Receives and deletes every currently visible message (no long polling) and returns their bodies. In-flight
 * messages are left alone: they come back after their visibility timeout.
 */
export async function drainQueue(sqs: SQSClient, queueUrl: string): Promise<string[]> {
  const bodies: string[] = [];
  for (;;) {
    const { Messages } = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }),
    );
    if (!Messages || Messages.length === 0) return bodies;
    for (const m of Messages) bodies.push(m.Body ?? '');
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: Messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? '' })),
      }),
    );
  }
}
