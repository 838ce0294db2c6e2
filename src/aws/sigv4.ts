import { createHash, createHmac } from 'node:crypto';

export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface SignableRequest {
  method: string;
  /** As sent, before SigV4's own encoding. */
  path: string;
  /** Lower-case names; all of them are signed. A frozen object's canonical form is kept for its next signing. */
  headers: Readonly<Record<string, string>>;
  /** The body's SHA-256, hex. */
  bodyHash: string;
}

export interface SigningScope {
  service: string;
  region: string;
  credentials: SigningCredentials;
  /** When the request is signed (the client's clock offset applied). */
  epochMs: number;
}

/**
 * Signature Version 4 for the direct SQS calls (aws/sqs-direct.ts), which send a handful of headers, no query string
 * and a body hashed once per queue. The SDK's signer (and aws4) are general: their canonicalisation and key lookup
 * were 12–15 % of an idle thread's CPU (BENCHMARKS.md, "Idle calls without the SDK"); this one signs only that shape.
 * The tests check its signatures against the SDK's signer on the same requests.
 */
export function createSigner(): (request: SignableRequest, scope: SigningScope) => Record<string, string> {
  let cached: { keyId: string; secret: string; key: Buffer } | undefined;
  const signingKey = (secret: string, day: string, region: string, service: string): Buffer => {
    const keyId = `${day}/${region}/${service}`;
    if (cached?.keyId === keyId && cached.secret === secret) return cached.key;
    let key = hmac(`AWS4${secret}`, day);
    for (const part of [region, service, 'aws4_request']) key = hmac(key, part);
    cached = { keyId, secret, key };
    return key;
  };
  const layouts = new WeakMap<
    Readonly<Record<string, string>>,
    { plain?: HeaderLayout; token?: HeaderLayout }
  >();
  const layoutOf = (headers: Readonly<Record<string, string>>, withToken: boolean): HeaderLayout => {
    if (!Object.isFrozen(headers)) return headerLayout(headers, withToken);
    let entry = layouts.get(headers);
    if (!entry) layouts.set(headers, (entry = {}));
    return withToken
      ? (entry.token ??= headerLayout(headers, true))
      : (entry.plain ??= headerLayout(headers, false));
  };
  return (request, { service, region, credentials, epochMs }) => {
    const amzDate = new Date(epochMs).toISOString().replace(/[-:]|\.\d{3}/g, '');
    const day = amzDate.slice(0, 8);
    const token = credentials.sessionToken || undefined;
    const { names, lines, signedHeaders } = layoutOf(request.headers, token !== undefined);
    let canonicalHeaders = '';
    names.forEach((name, i) => {
      canonicalHeaders += lines[i] ?? `${name}:${name === DATE ? amzDate : canonicalValue(token ?? '')}\n`;
    });
    const canonicalRequest = `${request.method}\n${canonicalPath(request.path)}\n\n${canonicalHeaders}\n${signedHeaders}\n${request.bodyHash}`;
    const scope = `${day}/${region}/${service}/aws4_request`;
    const stringToSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
    const signature = createHmac('sha256', signingKey(credentials.secretAccessKey, day, region, service))
      .update(stringToSign)
      .digest('hex');
    return {
      ...request.headers,
      [DATE]: amzDate,
      ...(token !== undefined && { [TOKEN]: token }),
      authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
    };
  };
}

const DATE = 'x-amz-date';
const TOKEN = 'x-amz-security-token';

/**
 * The signed headers of one headers object in canonical order, each line done once: only the date and the session
 * token (`undefined` lines) change from one signing to the next. A poll signs the same headers three times a
 * minute, so the canonical form of a frozen headers object is kept with it.
 */
interface HeaderLayout {
  names: string[];
  lines: (string | undefined)[];
  signedHeaders: string;
}

function headerLayout(headers: Readonly<Record<string, string>>, withToken: boolean): HeaderLayout {
  // The signer sets the date, and the token when the credentials carry one; a caller's own token header is signed
  // as it is otherwise.
  const signerSets = (name: string) => name === DATE || (withToken && name === TOKEN);
  const fixed = Object.keys(headers).filter((name) => !signerSets(name));
  const names = [...fixed, DATE, ...(withToken ? [TOKEN] : [])].sort();
  return {
    names,
    lines: names.map((name) =>
      signerSets(name) ? undefined : `${name}:${canonicalValue(headers[name]!)}\n`,
    ),
    signedHeaders: names.join(';'),
  };
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function canonicalValue(value: string): string {
  return value
    .replace(/[\r\n]/g, ' ')
    .replace(/[ \t]+/g, ' ')
    .trim();
}

/** As the SDK for every service but S3: `.` and `..` resolved, empty segments dropped, the path encoded again. */
function canonicalPath(path: string): string {
  if (path === '/') return path;
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const joined = `/${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return encodeURIComponent(joined)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%2F/g, '/');
}
