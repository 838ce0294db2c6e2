/**
 * What the stack is built from: the domains and the names the daemon uses, read from CDK context (`cdk.json`, or
 * `-c key=value` on the command line). Every name defaults to the daemon's own default (src/config/settings.ts), so
 * a worker started with no table or queue settings finds exactly what this stack creates.
 */
import { deadLetterQueueName, nameFromTemplate, RECEIPT_RULE_SET_NAME } from '../../../src/aws/resources.ts';
import { SETTINGS } from '../../../src/config/settings.ts';
import {
  type ContextReader,
  StackOptionsError,
  checked,
  flag,
  integer,
  list,
  optionalName,
  template,
  text,
} from './context.ts';

export { StackOptionsError, type ContextReader };

export interface EksServiceAccountOptions {
  /** The cluster's OIDC issuer without `https://`, e.g. `oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE`. */
  readonly oidcIssuer: string;
  /** `namespace:name` of the worker's service account. */
  readonly workerServiceAccount: string;
  /** `namespace:name` of KEDA's operator, which assumes the same role to read the queue depth (identityOwner: workload). */
  readonly kedaServiceAccount: string;
}

export interface WorkerStackOptions {
  /** The shared stack's name; each domain's stack is named after it (see lib/names.ts). */
  readonly stackName: string;
  /** The domains SES receives mail for, lower-case; at most {@link MAX_DOMAINS}. */
  readonly domains: readonly string[];
  readonly queueNameTemplate: string;
  readonly bucketNameTemplate: string;
  /** Table name per daemon setting (RULES_TABLE, ...). */
  readonly tableNames: Readonly<Record<TableSetting, string>>;
  /** The redrive policy's maxReceiveCount: the daemon's MAX_RECEIVES, so it marks a mail failed before the redrive. */
  readonly maxReceives: number;
  readonly receiptRuleSetName: string;
  /** Create the SES domain identities (Easy DKIM); false when they exist already (a second create fails). */
  readonly createEmailIdentities: boolean;
  /** Further SES identities the worker may send as or to (in the SES sandbox: the verified recipients). */
  readonly extraSesIdentities: readonly string[];
  /** Delete stored mail after this many days; undefined keeps it (the audit trail). */
  readonly mailRetentionDays: number | undefined;
  /** Create an IAM role for the worker's Kubernetes service account (IRSA), trusted by KEDA's operator too. */
  readonly eks: EksServiceAccountOptions | undefined;
  /** The SES configuration set every send names (SES_CONFIGURATION_SET); undefined when `none`. */
  readonly sesConfigurationSet: string | undefined;
  /** The queue of SES sending events (OUTBOUND_EVENTS_QUEUE); undefined when `none`. */
  readonly outboundEventsQueue: string | undefined;
}

export type TableSetting =
  'RULES_TABLE' | 'BLOCKLIST_TABLE' | 'OUTBOUND_TABLE' | 'OOO_STATE_TABLE' | 'IDEMPOTENCY_TABLE';

/** The context keys the app reads, with the setting each one overrides. */
export const CONTEXT_KEYS = {
  stackName: 'stackName',
  domains: 'domains',
  queueNameTemplate: 'queueNameTemplate',
  bucketNameTemplate: 'bucketNameTemplate',
  rulesTable: 'rulesTable',
  blocklistTable: 'blocklistTable',
  outboundTable: 'outboundTable',
  oooStateTable: 'oooStateTable',
  idempotencyTable: 'idempotencyTable',
  maxReceives: 'maxReceives',
  receiptRuleSetName: 'receiptRuleSetName',
  createEmailIdentities: 'createEmailIdentities',
  extraSesIdentities: 'extraSesIdentities',
  mailRetentionDays: 'mailRetentionDays',
  eksOidcIssuer: 'eksOidcIssuer',
  workerServiceAccount: 'workerServiceAccount',
  kedaServiceAccount: 'kedaServiceAccount',
  sesConfigurationSet: 'sesConfigurationSet',
  outboundEventsQueue: 'outboundEventsQueue',
} as const;

/**
 * SES allows 200 rules in a receipt rule set (not adjustable), and each domain has one rule (its own bucket and
 * topic), so 200 domains is what one deployment can receive for.
 */
export const MAX_DOMAINS = 200;

/** The ledger is what makes several replicas and rolling updates safe, so the stack always creates it. */
export const DEFAULT_IDEMPOTENCY_TABLE = 'email-worker-idempotency';

/** The shared stack's name unless `-c stackName=...` says otherwise. */
export const DEFAULT_STACK_NAME = 'unified-worker';

const DOMAIN = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;
const BUCKET = /^(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;
const QUEUE = /^[A-Za-z0-9_-]{1,80}$/;
const TABLE = /^[A-Za-z0-9_.-]{3,255}$/;
const RULE_SET = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const SERVICE_ACCOUNT = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/;
const ISSUER = /^oidc\.eks\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/id\/[A-Za-z0-9]+$/;
/** Letters first, then letters, digits and dashes; short enough that `<name>-<domain>` stays a valid stack name. */
const STACK_NAME = /^[A-Za-z][A-Za-z0-9-]{0,47}$/;
const CONFIGURATION_SET = /^[A-Za-z0-9_-]{1,64}$/;
/** An address identity: no characters that mean something in an ARN list or a CloudFormation Fn::Sub string. */
const ADDRESS = /^[a-z0-9._%+'-]{1,64}@(.+)$/;

/** The domains, lower-case, checked, each once, at most {@link MAX_DOMAINS}. */
function readDomains(read: ContextReader): string[] {
  const domains = list(read, CONTEXT_KEYS.domains).map((d) => d.toLowerCase());
  if (domains.length === 0) {
    throw new StackOptionsError('context domains: no domains given; add -c domains=example.com,another.org');
  }
  for (const domain of domains) checked(domain, DOMAIN, 'context domains');
  if (new Set(domains).size !== domains.length) {
    throw new StackOptionsError('context domains: a domain is listed twice');
  }
  if (domains.length > MAX_DOMAINS) {
    throw new StackOptionsError(
      `context domains: ${domains.length} domains, but an SES receipt rule set holds at most ${MAX_DOMAINS} rules (one per domain)`,
    );
  }
  return domains;
}

function readTableNames(read: ContextReader): Record<TableSetting, string> {
  const tableNames: Record<TableSetting, string> = {
    RULES_TABLE: text(read, CONTEXT_KEYS.rulesTable) ?? SETTINGS.RULES_TABLE.default,
    BLOCKLIST_TABLE: text(read, CONTEXT_KEYS.blocklistTable) ?? SETTINGS.BLOCKLIST_TABLE.default,
    OUTBOUND_TABLE: text(read, CONTEXT_KEYS.outboundTable) ?? SETTINGS.OUTBOUND_TABLE.default,
    OOO_STATE_TABLE: text(read, CONTEXT_KEYS.oooStateTable) ?? SETTINGS.OOO_STATE_TABLE.default,
    IDEMPOTENCY_TABLE:
      text(read, CONTEXT_KEYS.idempotencyTable) ||
      SETTINGS.IDEMPOTENCY_TABLE.default ||
      DEFAULT_IDEMPOTENCY_TABLE,
  };
  for (const [setting, name] of Object.entries(tableNames)) checked(name, TABLE, `table name for ${setting}`);
  if (new Set(Object.values(tableNames)).size !== Object.keys(tableNames).length) {
    throw new StackOptionsError('table names: two tables have the same name');
  }
  return tableNames;
}

function readEks(read: ContextReader): EksServiceAccountOptions | undefined {
  const issuer = text(read, CONTEXT_KEYS.eksOidcIssuer)?.replace(/^https:\/\//, '');
  if (issuer === undefined) return undefined;
  return {
    oidcIssuer: checked(issuer, ISSUER, 'context eksOidcIssuer'),
    workerServiceAccount: checked(
      text(read, CONTEXT_KEYS.workerServiceAccount) ?? 'mail:unified-worker',
      SERVICE_ACCOUNT,
      'context workerServiceAccount (namespace:name)',
    ),
    kedaServiceAccount: checked(
      text(read, CONTEXT_KEYS.kedaServiceAccount) ?? 'keda:keda-operator',
      SERVICE_ACCOUNT,
      'context kedaServiceAccount (namespace:name)',
    ),
  };
}

function readExtraSesIdentities(read: ContextReader): string[] {
  const identities = list(read, CONTEXT_KEYS.extraSesIdentities).map((i) => i.toLowerCase());
  for (const identity of identities) {
    const domainOfAddress = ADDRESS.exec(identity)?.[1];
    if (!DOMAIN.test(identity) && !(domainOfAddress !== undefined && DOMAIN.test(domainOfAddress))) {
      throw new StackOptionsError(
        `context extraSesIdentities: ${JSON.stringify(identity)} is neither a domain nor an address`,
      );
    }
  }
  return identities;
}

/**
 * The configuration set every send names and the queue its events reach. The queue needs the configuration set
 * (nothing else publishes to it); a configuration set without the queue is still created, since the daemon names it
 * on its sends and SES refuses a send naming a configuration set that does not exist.
 */
function readOutboundEvents(
  read: ContextReader,
): Pick<WorkerStackOptions, 'sesConfigurationSet' | 'outboundEventsQueue'> {
  const configurationSet = optionalName(
    read,
    CONTEXT_KEYS.sesConfigurationSet,
    SETTINGS.SES_CONFIGURATION_SET.default,
  );
  const queue = optionalName(read, CONTEXT_KEYS.outboundEventsQueue, SETTINGS.OUTBOUND_EVENTS_QUEUE.default);
  if (configurationSet !== undefined) {
    checked(configurationSet, CONFIGURATION_SET, 'context sesConfigurationSet');
  }
  if (queue !== undefined) {
    if (!QUEUE.test(queue) || !QUEUE.test(deadLetterQueueName(queue)) || queue.endsWith('.fifo')) {
      throw new StackOptionsError(
        `context outboundEventsQueue: ${JSON.stringify(queue)} is not a valid standard SQS queue name`,
      );
    }
    if (configurationSet === undefined) {
      throw new StackOptionsError(
        'context outboundEventsQueue: needs a configuration set to publish to it (sesConfigurationSet is none); set outboundEventsQueue=none too',
      );
    }
  }
  return { sesConfigurationSet: configurationSet, outboundEventsQueue: queue };
}

/** Each domain's bucket and queue names are valid S3 and SQS names, and no domain queue is the events queue. */
function checkDerivedNames(options: WorkerStackOptions): void {
  const events = options.outboundEventsQueue;
  for (const domain of options.domains) {
    const bucketName = nameFromTemplate(options.bucketNameTemplate, domain);
    const queueName = nameFromTemplate(options.queueNameTemplate, domain);
    if (!BUCKET.test(bucketName)) {
      throw new StackOptionsError(
        `bucket name ${JSON.stringify(bucketName)} for ${domain} is not a valid S3 bucket name`,
      );
    }
    if (!QUEUE.test(queueName) || !QUEUE.test(deadLetterQueueName(queueName))) {
      throw new StackOptionsError(
        `queue name ${JSON.stringify(queueName)} for ${domain} is not a valid SQS queue name`,
      );
    }
    if (events !== undefined && [queueName, deadLetterQueueName(queueName)].includes(events)) {
      throw new StackOptionsError(
        `context outboundEventsQueue: ${JSON.stringify(events)} is also a queue of ${domain}`,
      );
    }
  }
}

/** Validated options; throws {@link StackOptionsError} naming the context key for anything unusable. */
export function readStackOptions(read: ContextReader): WorkerStackOptions {
  const domains = readDomains(read);
  const retention = text(read, CONTEXT_KEYS.mailRetentionDays);
  const options: WorkerStackOptions = {
    stackName: checked(
      text(read, CONTEXT_KEYS.stackName) ?? DEFAULT_STACK_NAME,
      STACK_NAME,
      'context stackName (a letter, then up to 47 letters, digits or dashes)',
    ),
    domains,
    queueNameTemplate: template(read, CONTEXT_KEYS.queueNameTemplate, SETTINGS.QUEUE_NAME_TEMPLATE.default),
    bucketNameTemplate: template(
      read,
      CONTEXT_KEYS.bucketNameTemplate,
      SETTINGS.BUCKET_NAME_TEMPLATE.default,
    ),
    tableNames: readTableNames(read),
    maxReceives: integer(read, CONTEXT_KEYS.maxReceives, SETTINGS.MAX_RECEIVES.default, 1, 1000),
    receiptRuleSetName: checked(
      text(read, CONTEXT_KEYS.receiptRuleSetName) ?? RECEIPT_RULE_SET_NAME,
      RULE_SET,
      'context receiptRuleSetName',
    ),
    createEmailIdentities: flag(read, CONTEXT_KEYS.createEmailIdentities, true),
    extraSesIdentities: readExtraSesIdentities(read),
    mailRetentionDays:
      retention === undefined
        ? undefined
        : integer(read, CONTEXT_KEYS.mailRetentionDays, retention, 1, 36_500),
    eks: readEks(read),
    ...readOutboundEvents(read),
  };
  checkDerivedNames(options);
  return options;
}
