/**
 * SES's control plane, which aws-ses-v2-local does not have: receipt rule sets and rules (SES v1, query protocol),
 * domain identities with DKIM, configuration sets with event destinations and, when a test sets one, the account
 * (SES v2, REST JSON). It answers inside the SES proxy of emulators.ts, on the same endpoint as the sends, as AWS
 * does; a request it does not know goes on to aws-ses-v2-local.
 *
 * The state is in memory and public, so a test can arrange what no API call can: `verify(domain)` stands in for
 * SES finding the DKIM records in DNS.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type http from 'node:http';

export type VerificationState = 'PENDING' | 'SUCCESS' | 'FAILED' | 'TEMPORARY_FAILURE' | 'NOT_STARTED';

export interface IdentityState {
  verification: VerificationState;
  dkim: VerificationState;
  tokens: string[];
  signingEnabled: boolean;
}

/** A receipt rule as the SES API shapes it (Name, Enabled, Recipients, Actions...). */
export type RuleShape = Record<string, unknown>;

export interface EventDestinationShape {
  Name: string;
  Enabled?: boolean;
  MatchingEventTypes?: string[];
  SnsDestination?: { TopicArn: string };
}

export interface SesControlPlane {
  readonly identities: Map<string, IdentityState>;
  readonly ruleSets: Map<string, RuleShape[]>;
  /** The active rule set's name. */
  active: string | undefined;
  readonly configurationSets: Map<string, EventDestinationShape[]>;
  /** GetAccount's answer; undefined leaves GetAccount to aws-ses-v2-local (which refuses it). */
  account: Record<string, unknown> | undefined;
  /** DNS has the DKIM records: the identity (created if missing) is verified. */
  verify(domain: string): void;
  /** Answers the request when it is a control-plane call; false to let the caller forward it. */
  handle(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): boolean;
}

type Reply = { status: number; body: unknown } | { status: number; error: string; message: string };

export function createSesControlPlane(): SesControlPlane {
  const plane: SesControlPlane = {
    identities: new Map(),
    ruleSets: new Map(),
    active: undefined,
    configurationSets: new Map(),
    account: undefined,
    verify(domain) {
      const identity = plane.identities.get(domain) ?? newIdentity();
      plane.identities.set(domain, { ...identity, verification: 'SUCCESS', dkim: 'SUCCESS' });
    },
    handle(req, body, res) {
      const path = decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/');
      if (path.startsWith('/v2/email/')) {
        const reply = v2(plane, req.method ?? 'GET', path, body);
        if (reply === undefined) return false;
        writeJson(res, reply);
        return true;
      }
      if (req.method === 'POST' && path === '/' && isForm(req)) {
        const form = new URLSearchParams(body.toString('utf8'));
        const action = form.get('Action') ?? '';
        const handler = V1[action];
        if (handler === undefined) return false;
        writeXml(res, action, handler(plane, unflatten(form)));
        return true;
      }
      return false;
    },
  };
  return plane;
}

function newIdentity(): IdentityState {
  const tokens = [0, 1, 2].map(() => randomBytes(16).toString('hex'));
  return { verification: 'PENDING', dkim: 'PENDING', tokens, signingEnabled: true };
}

// ---------------------------------------------------------------------------------------------------------------------
// SES v2 (REST JSON)
// ---------------------------------------------------------------------------------------------------------------------

function v2(plane: SesControlPlane, method: string, path: string, body: Buffer): Reply | undefined {
  const json = () => parseJson(body);
  if (method === 'GET' && path === '/v2/email/account') {
    return plane.account === undefined ? undefined : { status: 200, body: plane.account };
  }
  let m = /^\/v2\/email\/identities\/([^/]+)$/.exec(path);
  if (m && method === 'GET') return getIdentity(plane, m[1] ?? '');
  if (method === 'POST' && path === '/v2/email/identities')
    return createIdentity(plane, String(json().EmailIdentity ?? ''));
  m = /^\/v2\/email\/configuration-sets\/([^/]+)$/.exec(path);
  if (m && method === 'GET') {
    const name = m[1] ?? '';
    return plane.configurationSets.has(name)
      ? { status: 200, body: { ConfigurationSetName: name } }
      : notFound(`Configuration set <${name}> does not exist.`);
  }
  if (method === 'POST' && path === '/v2/email/configuration-sets') {
    const name = String(json().ConfigurationSetName ?? '');
    if (plane.configurationSets.has(name)) return exists(`Configuration set <${name}> already exists.`);
    plane.configurationSets.set(name, []);
    return { status: 200, body: {} };
  }
  m = /^\/v2\/email\/configuration-sets\/([^/]+)\/event-destinations$/.exec(path);
  if (m) return eventDestinations(plane, method, m[1] ?? '', json);
  return undefined;
}

function getIdentity(plane: SesControlPlane, domain: string): Reply {
  const identity = plane.identities.get(domain);
  if (identity === undefined) return notFound(`Email identity <${domain}> does not exist.`);
  return {
    status: 200,
    body: {
      IdentityType: 'DOMAIN',
      FeedbackForwardingStatus: true,
      VerifiedForSendingStatus: identity.verification === 'SUCCESS',
      VerificationStatus: identity.verification,
      DkimAttributes: dkimAttributes(identity),
    },
  };
}

function createIdentity(plane: SesControlPlane, domain: string): Reply {
  if (plane.identities.has(domain)) return exists(`Email identity <${domain}> already exists.`);
  const identity = newIdentity();
  plane.identities.set(domain, identity);
  return {
    status: 200,
    body: {
      IdentityType: 'DOMAIN',
      VerifiedForSendingStatus: false,
      DkimAttributes: dkimAttributes(identity),
    },
  };
}

function dkimAttributes(identity: IdentityState): Record<string, unknown> {
  return {
    SigningEnabled: identity.signingEnabled,
    Status: identity.dkim,
    Tokens: identity.tokens,
    SigningAttributesOrigin: 'AWS_SES',
  };
}

function eventDestinations(
  plane: SesControlPlane,
  method: string,
  set: string,
  json: () => Record<string, unknown>,
): Reply | undefined {
  const destinations = plane.configurationSets.get(set);
  if (destinations === undefined) return notFound(`Configuration set <${set}> does not exist.`);
  if (method === 'GET') return { status: 200, body: { EventDestinations: destinations } };
  if (method !== 'POST') return undefined;
  const request = json();
  const name = String(request.EventDestinationName ?? '');
  if (destinations.some((d) => d.Name === name)) return exists(`Event destination ${name} already exists.`);
  const destination = (request.EventDestination ?? {}) as Omit<EventDestinationShape, 'Name'>;
  destinations.push({ Name: name, ...destination });
  return { status: 200, body: {} };
}

function notFound(message: string): Reply {
  return { status: 404, error: 'NotFoundException', message };
}

function exists(message: string): Reply {
  return { status: 400, error: 'AlreadyExistsException', message };
}

function parseJson(body: Buffer): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(body.toString('utf8') || '{}');
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function writeJson(res: http.ServerResponse, reply: Reply): void {
  const payload = 'error' in reply ? { message: reply.message } : reply.body;
  const text = JSON.stringify(payload);
  res.writeHead(reply.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': randomUUID(),
    ...('error' in reply && { 'x-amzn-errortype': reply.error }),
  });
  res.end(text);
}

// ---------------------------------------------------------------------------------------------------------------------
// SES v1 (query protocol): receipt rule sets and rules
// ---------------------------------------------------------------------------------------------------------------------

type V1Reply = { result: Record<string, unknown> } | { error: string; message: string };
type V1Handler = (plane: SesControlPlane, params: Record<string, unknown>) => V1Reply;

const V1: Record<string, V1Handler> = {
  DescribeActiveReceiptRuleSet: (plane) => {
    const name = plane.active;
    if (name === undefined) return { result: {} };
    return { result: { Metadata: metadata(name), Rules: plane.ruleSets.get(name) ?? [] } };
  },
  DescribeReceiptRuleSet: (plane, params) => {
    const name = String(params.RuleSetName ?? '');
    const rules = plane.ruleSets.get(name);
    if (rules === undefined)
      return { error: 'RuleSetDoesNotExist', message: `Rule set does not exist: ${name}` };
    return { result: { Metadata: metadata(name), Rules: rules } };
  },
  CreateReceiptRuleSet: (plane, params) => {
    const name = String(params.RuleSetName ?? '');
    if (plane.ruleSets.has(name))
      return { error: 'AlreadyExists', message: `Rule set already exists: ${name}` };
    plane.ruleSets.set(name, []);
    return { result: {} };
  },
  SetActiveReceiptRuleSet: (plane, params) => {
    const name = params.RuleSetName === undefined ? undefined : String(params.RuleSetName);
    if (name !== undefined && !plane.ruleSets.has(name)) {
      return { error: 'RuleSetDoesNotExist', message: `Rule set does not exist: ${name}` };
    }
    plane.active = name;
    return { result: {} };
  },
  CreateReceiptRule: (plane, params) => createRule(plane, params),
};

function createRule(plane: SesControlPlane, params: Record<string, unknown>): V1Reply {
  const set = String(params.RuleSetName ?? '');
  const rules = plane.ruleSets.get(set);
  if (rules === undefined)
    return { error: 'RuleSetDoesNotExist', message: `Rule set does not exist: ${set}` };
  const rule = (params.Rule ?? {}) as RuleShape;
  if (rules.some((r) => r.Name === rule.Name)) {
    return { error: 'AlreadyExists', message: `Rule already exists: ${String(rule.Name)}` };
  }
  if (params.After === undefined) {
    rules.unshift(rule);
    return { result: {} };
  }
  const index = rules.findIndex((r) => r.Name === params.After);
  if (index < 0)
    return { error: 'RuleDoesNotExist', message: `Rule does not exist: ${String(params.After)}` };
  rules.splice(index + 1, 0, rule);
  return { result: {} };
}

function metadata(name: string): Record<string, unknown> {
  return { Name: name, CreatedTimestamp: new Date(0).toISOString() };
}

function isForm(req: http.IncomingMessage): boolean {
  return (req.headers['content-type'] ?? '').includes('application/x-www-form-urlencoded');
}

/** `Rule.Actions.member.1.S3Action.BucketName=b` → `{ Rule: { Actions: [{ S3Action: { BucketName: 'b' } }] } }`. */
function unflatten(form: URLSearchParams): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [key, value] of form) {
    if (key === 'Action' || key === 'Version') continue;
    const parts = key.split('.');
    let node = root;
    for (const [i, part] of parts.entries()) {
      if (i === parts.length - 1) node[part] = value;
      else node = (node[part] ??= {}) as Record<string, unknown>;
    }
  }
  return shape(root) as Record<string, unknown>;
}

function shape(value: unknown): unknown {
  if (typeof value === 'string') return value === 'true' ? true : value === 'false' ? false : value;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length === 1 && keys[0] === 'member') {
    return Object.entries(record.member as Record<string, unknown>)
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([, v]) => shape(v));
  }
  return Object.fromEntries(keys.map((k) => [k, shape(record[k])]));
}

function writeXml(res: http.ServerResponse, action: string, reply: V1Reply): void {
  const ns = 'http://ses.amazonaws.com/doc/2010-12-01/';
  const requestId = randomUUID();
  const text =
    'error' in reply
      ? `<ErrorResponse xmlns="${ns}"><Error><Type>Sender</Type><Code>${reply.error}</Code>` +
        `<Message>${escape(reply.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`
      : `<${action}Response xmlns="${ns}"><${action}Result>${toXml(reply.result)}</${action}Result>` +
        `<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`;
  res.writeHead('error' in reply ? 400 : 200, {
    'content-type': 'text/xml',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': requestId,
  });
  res.end(text);
}

function toXml(value: unknown): string {
  if (Array.isArray(value)) return value.map((v) => `<member>${toXml(v)}</member>`).join('');
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value)
      .filter(([, v]) => !(Array.isArray(v) && v.length === 0))
      .map(([k, v]) => `<${k}>${toXml(v)}</${k}>`)
      .join('');
  }
  return escape(String(value));
}

function escape(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}
