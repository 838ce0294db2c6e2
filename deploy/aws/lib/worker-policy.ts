/**
 * The worker's IAM permissions, planned: exactly DAEMON_PERMISSIONS (src/aws/resources.ts), one statement per
 * resource kind, on exactly this deployment's resources, named by ARN. ARNs are built from the resource names (all
 * known at synth time), so the policies need nothing from the other stacks.
 *
 * IAM caps a managed policy at 6,144 characters, which one domain's three ARNs (queue, bucket objects, identity) fill
 * at 20 to 30 domains; the statements are therefore packed into as many managed policies as needed, each measured
 * with the longest partition, region and account id an ARN can have. In the template each statement names its
 * resources as one Fn::Sub string split on commas, with the ARN prefix written once.
 */
import {
  DAEMON_PERMISSIONS,
  deadLetterQueueName,
  type IamResourceKind,
  nameFromTemplate,
} from '../../../src/aws/resources.ts';
import type { WorkerStackOptions } from './options.ts';

/** IAM: a managed policy document holds at most 6,144 characters (whitespace not counted). */
export const MANAGED_POLICY_MAX_CHARS = 6_144;
/** IAM: managed policies one role or user may have attached, by default, and at most once the quota is raised. */
export const ATTACHED_POLICIES_QUOTA = 10;
export const ATTACHED_POLICIES_MAX = 20;

/** How each kind's ARNs start, in Fn::Sub syntax; the resource name follows. `account` is `*`. */
const ARN_PREFIX: Record<Exclude<IamResourceKind, 'account'>, string> = {
  'domain-queue': 'arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:',
  'dead-letter-queue': 'arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:',
  'events-queue': 'arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:',
  'mail-bucket-objects': 'arn:${AWS::Partition}:s3:::',
  table: 'arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/',
  'ses-identity': 'arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/',
  'configuration-set': 'arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/',
};

/** The longest values the pseudo parameters take (partition `aws-us-gov`, regions up to 15 characters, and margin). */
export const LONGEST_PSEUDO_PARAMETERS: Readonly<Record<string, string>> = {
  'AWS::Partition': 'aws-us-gov',
  'AWS::Region': 'xx-xxxxxxxxxxx-1',
  'AWS::AccountId': '123456789012',
};

export interface StatementPlan {
  readonly kind: IamResourceKind;
  readonly actions: readonly string[];
  /** Resource names after the kind's ARN prefix (`*` alone for `account`). */
  readonly names: readonly string[];
}

/** The kinds in the order DAEMON_PERMISSIONS first names them, each with its sorted actions. */
const ACTIONS_BY_KIND: ReadonlyMap<IamResourceKind, readonly string[]> = (() => {
  const byKind = new Map<IamResourceKind, Set<string>>();
  for (const p of DAEMON_PERMISSIONS)
    byKind.set(p.resource, (byKind.get(p.resource) ?? new Set()).add(p.action));
  return new Map([...byKind].map(([kind, actions]) => [kind, [...actions].sort()]));
})();

/** The names of the resources of each kind that are not per domain. */
function sharedNames(options: WorkerStackOptions): Partial<Record<IamResourceKind, string[]>> {
  return {
    table: Object.values(options.tableNames),
    'ses-identity': [...options.extraSesIdentities],
    'events-queue': options.outboundEventsQueue === undefined ? [] : [options.outboundEventsQueue],
    'configuration-set': options.sesConfigurationSet === undefined ? [] : [options.sesConfigurationSet],
    account: ['*'],
  };
}

function domainNames(
  options: WorkerStackOptions,
  domain: string,
): Partial<Record<IamResourceKind, string[]>> {
  return {
    'domain-queue': [nameFromTemplate(options.queueNameTemplate, domain)],
    'dead-letter-queue': [deadLetterQueueName(nameFromTemplate(options.queueNameTemplate, domain))],
    'mail-bucket-objects': [`${nameFromTemplate(options.bucketNameTemplate, domain)}/*`],
    'ses-identity': [domain],
  };
}

function statements(parts: ReadonlyArray<Partial<Record<IamResourceKind, string[]>>>): StatementPlan[] {
  return [...ACTIONS_BY_KIND].flatMap(([kind, actions]) => {
    const names = parts.flatMap((p) => p[kind] ?? []);
    return names.length === 0 ? [] : [{ kind, actions, names }];
  });
}

/** `domain-queue` → `DomainQueue`. */
function sid(kind: IamResourceKind): string {
  return kind.replace(/(^|-)([a-z])/g, (_m, _dash, c: string) => c.toUpperCase());
}

function substitute(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/\$\{([^}]+)\}/g, (_m, name: string) => values[name] ?? `\${${name}}`);
}

function resolvedResources(s: StatementPlan, pseudo: Readonly<Record<string, string>>): string | string[] {
  if (s.kind === 'account') return '*';
  const prefix = substitute(ARN_PREFIX[s.kind], pseudo);
  return s.names.map((n) => prefix + n);
}

/** The policy document as IAM stores it, with the given pseudo parameter values: what its size limit measures. */
export function resolvedDocument(plan: readonly StatementPlan[], pseudo: Readonly<Record<string, string>>) {
  return {
    Version: '2012-10-17',
    Statement: plan.map((s) => ({
      Sid: sid(s.kind),
      Effect: 'Allow',
      Action: s.actions,
      Resource: resolvedResources(s, pseudo),
    })),
  };
}

export function policyChars(plan: readonly StatementPlan[]): number {
  return JSON.stringify(resolvedDocument(plan, LONGEST_PSEUDO_PARAMETERS)).length;
}

/**
 * The statements of each managed policy: the first holds what is not per domain, then domains are added in the
 * order given until the next one would pass {@link MANAGED_POLICY_MAX_CHARS}.
 */
export function planWorkerPolicies(options: WorkerStackOptions): StatementPlan[][] {
  const policies: StatementPlan[][] = [];
  let parts = [sharedNames(options)];
  let current = statements(parts);
  for (const domain of options.domains) {
    const next = statements([...parts, domainNames(options, domain)]);
    if (policyChars(next) <= MANAGED_POLICY_MAX_CHARS) {
      parts = [...parts, domainNames(options, domain)];
      current = next;
      continue;
    }
    policies.push(current);
    parts = [domainNames(options, domain)];
    current = statements(parts);
  }
  policies.push(current);
  return policies;
}

/** `arn:${AWS::Partition}:sqs:...:` as Fn::Join of Refs: the value of an Fn::Sub variable cannot be an Fn::Sub. */
function joinOf(prefix: string): unknown {
  const parts = prefix.split(/(\$\{[^}]+\})/).filter((p) => p !== '');
  return { 'Fn::Join': ['', parts.map((p) => (p.startsWith('${') ? { Ref: p.slice(2, -1) } : p))] };
}

/** One statement's resources in CloudFormation: the ARN prefix once, then the names, split into a list. */
export function renderResources(s: StatementPlan): unknown {
  if (s.kind === 'account') return '*';
  const prefix = ARN_PREFIX[s.kind];
  if (s.names.length === 1) return { 'Fn::Sub': prefix + s.names[0]! };
  return {
    'Fn::Split': [',', { 'Fn::Sub': [s.names.map((n) => `\${Arn}${n}`).join(','), { Arn: joinOf(prefix) }] }],
  };
}

export function renderDocument(plan: readonly StatementPlan[]): unknown {
  return {
    Version: '2012-10-17',
    Statement: plan.map((s) => ({
      Sid: sid(s.kind),
      Effect: 'Allow',
      Action: [...s.actions],
      Resource: renderResources(s),
    })),
  };
}
