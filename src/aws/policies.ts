/**
 * Resource policies on the mail path: the bucket policy that lets SES write the mail, the queue policy that lets
 * SNS deliver the notification. `setup` adds the statements; `doctor` evaluates whatever policy is there for the one
 * request that matters (SES's PutObject, SNS's SendMessage), with the condition keys that service sends.
 *
 * The evaluation covers what these policies use: Allow/Deny, service and `*` principals, wildcards in actions and
 * resources, and the String, Arn and Bool condition operators. Anything else is reported as not evaluated rather
 * than guessed.
 */

export interface PolicyStatement {
  Sid?: string;
  Effect?: string;
  Principal?: unknown;
  NotPrincipal?: unknown;
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  NotResource?: string | string[];
  Condition?: Record<string, Record<string, unknown>>;
}

export interface PolicyDocument {
  Version?: string;
  Id?: string;
  Statement: PolicyStatement[];
}

export class PolicyParseError extends Error {
  override readonly name = 'PolicyParseError';
}

/** A policy as stored (S3 GetBucketPolicy, the SQS `Policy` attribute); `Statement` may be one object. */
export function parsePolicy(text: string): PolicyDocument {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PolicyParseError('the policy is not JSON');
  }
  if (typeof value !== 'object' || value === null || !('Statement' in value)) {
    throw new PolicyParseError('the policy has no Statement');
  }
  const statement = (value as { Statement: unknown }).Statement;
  const statements = Array.isArray(statement) ? statement : [statement];
  if (!statements.every((s) => typeof s === 'object' && s !== null)) {
    throw new PolicyParseError('a Statement is not an object');
  }
  return { ...(value as PolicyDocument), Statement: statements as PolicyStatement[] };
}

/** One request a service makes on our behalf, as the policy sees it. */
export interface ServiceRequest {
  /** The service principal, e.g. `ses.amazonaws.com`. */
  service: string;
  action: string;
  resource: string;
  /** The global condition keys the service sends with it (aws:SourceAccount, aws:SourceArn, ...). */
  context: Readonly<Record<string, string>>;
  /** Condition keys that tie the grant to this account or resource (without one, any account's use is allowed). */
  scopeKeys: readonly string[];
}

export type PolicyVerdict =
  | { kind: 'allowed'; statement: string; scoped: boolean }
  | { kind: 'denied'; statement: string }
  | { kind: 'not-allowed'; near?: { statement: string; condition: string } }
  | { kind: 'not-evaluated'; statement: string; reason: string };

type Match = { match: 'yes' } | { match: 'no'; condition?: boolean } | { match: 'unknown'; reason: string };

export function evaluatePolicy(policy: PolicyDocument, request: ServiceRequest): PolicyVerdict {
  const allowed: PolicyStatement[] = [];
  let unknown: { statement: string; reason: string } | undefined;
  let near: { statement: string; condition: string } | undefined;
  for (const [index, statement] of policy.Statement.entries()) {
    const name = statement.Sid ?? `#${index + 1}`;
    const result = statementMatches(statement, request);
    const deny = statement.Effect === 'Deny';
    if (result.match === 'yes' && deny) return { kind: 'denied', statement: name };
    if (result.match === 'yes') allowed.push(statement);
    if (result.match === 'unknown') unknown ??= { statement: name, reason: result.reason };
    if (result.match === 'no' && result.condition && !deny) {
      near ??= { statement: name, condition: JSON.stringify(statement.Condition) };
    }
  }
  if (unknown) return { kind: 'not-evaluated', ...unknown };
  const first = allowed[0];
  if (first === undefined) return near ? { kind: 'not-allowed', near } : { kind: 'not-allowed' };
  const scoped = allowed.every((s) => hasScope(s, request.scopeKeys));
  return { kind: 'allowed', statement: first.Sid ?? `#${policy.Statement.indexOf(first) + 1}`, scoped };
}

function statementMatches(statement: PolicyStatement, request: ServiceRequest): Match {
  if (statement.NotPrincipal !== undefined) {
    return { match: 'unknown', reason: 'NotPrincipal is not evaluated' };
  }
  if (!principalMatches(statement.Principal, request.service)) return { match: 'no' };
  if (!listMatches(statement.Action, statement.NotAction, request.action, true)) return { match: 'no' };
  if (!listMatches(statement.Resource, statement.NotResource, request.resource, false))
    return { match: 'no' };
  return conditionMatches(statement.Condition, request.context);
}

function principalMatches(principal: unknown, service: string): boolean {
  if (principal === '*') return true;
  if (typeof principal !== 'object' || principal === null) return false;
  const { AWS: aws, Service: services } = principal as { AWS?: unknown; Service?: unknown };
  if (strings(aws).includes('*')) return true;
  return strings(services).some((s) => s.toLowerCase() === service.toLowerCase());
}

function listMatches(
  list: string | string[] | undefined,
  notList: string | string[] | undefined,
  value: string,
  ignoreCase: boolean,
): boolean {
  if (list !== undefined) return strings(list).some((p) => wildcard(p, value, ignoreCase));
  if (notList !== undefined) return !strings(notList).some((p) => wildcard(p, value, ignoreCase));
  return false;
}

const STRING_OPERATORS: Record<string, (pattern: string, value: string) => boolean> = {
  StringEquals: (p, v) => p === v,
  StringEqualsIgnoreCase: (p, v) => p.toLowerCase() === v.toLowerCase(),
  StringLike: (p, v) => wildcard(p, v, false),
  ArnEquals: (p, v) => wildcard(p, v, false),
  ArnLike: (p, v) => wildcard(p, v, false),
  Bool: (p, v) => p.toLowerCase() === v.toLowerCase(),
};

/** Every operator and key must hold (AND); a key's values are alternatives (OR); `Not` operators negate. */
function conditionMatches(
  condition: PolicyStatement['Condition'],
  context: Readonly<Record<string, string>>,
): Match {
  for (const [operator, block] of Object.entries(condition ?? {})) {
    const ifExists = operator.endsWith('IfExists');
    const base = ifExists ? operator.slice(0, -'IfExists'.length) : operator;
    const negated = /^(String|Arn)Not/.test(base);
    const compare = STRING_OPERATORS[base.replace(/^(String|Arn)Not/, '$1')];
    if (compare === undefined || base.includes(':')) {
      return { match: 'unknown', reason: `condition operator ${operator} is not evaluated` };
    }
    for (const [key, values] of Object.entries(block)) {
      const actual = lookup(context, key);
      if (actual === undefined) {
        if (ifExists) continue;
        return { match: 'unknown', reason: `condition key ${key} is not evaluated` };
      }
      const any = strings(values).some((pattern) => compare(pattern, actual));
      if (any === negated) return { match: 'no', condition: true };
    }
  }
  return { match: 'yes' };
}

function hasScope(statement: PolicyStatement, scopeKeys: readonly string[]): boolean {
  const keys = Object.values(statement.Condition ?? {}).flatMap((block) => Object.keys(block));
  return keys.some((key) => scopeKeys.some((scope) => scope.toLowerCase() === key.toLowerCase()));
}

/** Condition keys are case-insensitive. */
function lookup(context: Readonly<Record<string, string>>, key: string): string | undefined {
  const found = Object.keys(context).find((k) => k.toLowerCase() === key.toLowerCase());
  return found === undefined ? undefined : context[found];
}

function strings(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** IAM wildcards: `*` any run of characters, `?` one character. */
export function wildcard(pattern: string, value: string, ignoreCase: boolean): boolean {
  const source = pattern
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`, ignoreCase ? 'is' : 's').test(value);
}

// ---------------------------------------------------------------------------------------------------------------------
// The two requests on the mail path, and the statements that allow them
// ---------------------------------------------------------------------------------------------------------------------

/** SES's PutObject of a received mail into the bucket (under the receipt rule's key prefix). */
export function sesWriteRequest(options: {
  bucket: string;
  prefix?: string;
  account: string;
  partition: string;
  /** The receipt rule's ARN when known; SES sends it as aws:SourceArn. */
  ruleArn?: string;
}): ServiceRequest {
  return {
    service: 'ses.amazonaws.com',
    action: 's3:PutObject',
    resource: `arn:${options.partition}:s3:::${options.bucket}/${options.prefix ?? ''}ses-message-id`,
    context: {
      'aws:SourceAccount': options.account,
      'aws:Referer': options.account,
      'aws:SecureTransport': 'true',
      ...(options.ruleArn !== undefined && { 'aws:SourceArn': options.ruleArn }),
    },
    scopeKeys: ['aws:SourceAccount', 'aws:SourceArn', 'aws:Referer'],
  };
}

/** SNS's SendMessage of a topic's notification into the subscribed queue. */
export function snsSendRequest(queueArn: string, topicArn: string): ServiceRequest {
  const topicAccount = topicArn.split(':')[4] ?? '';
  return {
    service: 'sns.amazonaws.com',
    action: 'sqs:SendMessage',
    resource: queueArn,
    context: {
      'aws:SourceArn': topicArn,
      'aws:SourceAccount': topicAccount,
      'aws:SourceOwner': topicAccount,
      'aws:SecureTransport': 'true',
    },
    scopeKeys: ['aws:SourceArn', 'aws:SourceAccount', 'aws:SourceOwner'],
  };
}

/** Lets this account's SES write into the bucket (aws:SourceAccount keeps other accounts' SES out). */
export function sesWriteStatement(bucket: string, account: string, partition: string): PolicyStatement {
  return {
    Sid: 'AllowSesToStoreMail',
    Effect: 'Allow',
    Principal: { Service: 'ses.amazonaws.com' },
    Action: 's3:PutObject',
    Resource: `arn:${partition}:s3:::${bucket}/*`,
    Condition: { StringEquals: { 'aws:SourceAccount': account } },
  };
}

/** Lets one topic deliver to the queue. */
export function snsSendStatement(queueArn: string, topicArn: string): PolicyStatement {
  const topic = topicArn.slice(topicArn.lastIndexOf(':') + 1).replace(/[^A-Za-z0-9]/g, '');
  return {
    Sid: `AllowSns${topic}`.slice(0, 100),
    Effect: 'Allow',
    Principal: { Service: 'sns.amazonaws.com' },
    Action: 'sqs:SendMessage',
    Resource: queueArn,
    Condition: { ArnEquals: { 'aws:SourceArn': topicArn } },
  };
}

/** The policy with one more statement (a new policy when there was none). */
export function withStatement(
  policy: PolicyDocument | undefined,
  statement: PolicyStatement,
): PolicyDocument {
  return { Version: '2012-10-17', ...policy, Statement: [...(policy?.Statement ?? []), statement] };
}
