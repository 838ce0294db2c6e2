/**
 * S3 bucket policies, which fauxqs does not have (it would take `PUT /bucket?policy` for CreateBucket and
 * `GET /bucket?policy` for ListObjects): a hook on fauxqs's own server answers GetBucketPolicy, PutBucketPolicy and
 * DeleteBucketPolicy from a map, as S3 does (204 on put and delete, NoSuchBucketPolicy when there is none,
 * MalformedPolicy for text that is not a JSON policy). Everything else reaches fauxqs untouched.
 */

/** The part of a Fastify request and reply the hook uses (fauxqs's Fastify is not our dependency). */
interface HookRequest {
  readonly method: string;
  readonly url: string;
  readonly query: unknown;
  readonly body: unknown;
}
interface HookReply {
  code(status: number): HookReply;
  header(name: string, value: string): HookReply;
  send(payload?: string): HookReply;
}
export interface HookableServer {
  addHook(name: 'preHandler', hook: (request: HookRequest, reply: HookReply) => Promise<unknown>): unknown;
}

export function serveBucketPolicies(
  app: HookableServer,
  hasBucket: (name: string) => boolean,
): Map<string, string> {
  const policies = new Map<string, string>();
  app.addHook('preHandler', async (request, reply) => {
    const query = request.query;
    if (typeof query !== 'object' || query === null || !('policy' in query)) return undefined;
    const bucket = /^\/([^/?]+)\/?(?:\?|$)/.exec(request.url)?.[1];
    if (bucket === undefined) return undefined;
    if (!hasBucket(bucket)) return s3Error(reply, 404, 'NoSuchBucket', 'The specified bucket does not exist');
    if (request.method === 'GET') {
      const policy = policies.get(bucket);
      if (policy === undefined)
        return s3Error(reply, 404, 'NoSuchBucketPolicy', 'The bucket policy does not exist');
      return reply.code(200).header('content-type', 'application/json').send(policy);
    }
    if (request.method === 'PUT') {
      const text = bodyText(request.body);
      if (!isPolicy(text))
        return s3Error(reply, 400, 'MalformedPolicy', 'Policies must be valid JSON with a Statement');
      policies.set(bucket, text);
      return reply.code(204).send();
    }
    if (request.method === 'DELETE') {
      policies.delete(bucket);
      return reply.code(204).send();
    }
    return undefined;
  });
  return policies;
}

function bodyText(body: unknown): string {
  if (Buffer.isBuffer(body)) return body.toString('utf8');
  return typeof body === 'string' ? body : '';
}

function isPolicy(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && 'Statement' in value;
  } catch {
    return false;
  }
}

function s3Error(reply: HookReply, status: number, code: string, message: string): HookReply {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  return reply.code(status).header('content-type', 'application/xml').send(xml);
}
