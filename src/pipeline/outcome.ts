/**
 * What one attempt at one SQS message produced, as data: each recipient's state, each effect's result, and for
 * what is not final yet, why. `poller/retry-policy.ts` turns it into what happens to the SQS message.
 */
import type { MailLocation } from '../aws/mail-store.ts';
import type { WorkerError, WorkerErrorJson } from '../errors.ts';
import { SUPPRESS_REASONS } from '../mail/autoreply-policy.ts';
import type { MailLimit } from '../mail/mail-limits.ts';

/**
 * Why something is not final yet: `temporary` (a 4xx, a throttle, an AWS 5xx), `unreachable` (nothing answered: the
 * mail server is down), `claims` (another worker holds a live ledger claim on it), `deployment` (a reply saying this
 * deployment is wrong: relay denied, client rejected), `table` (a table call failed as a missing or misshapen table
 * would).
 */
export type DeferralReason = 'temporary' | 'unreachable' | 'claims' | 'deployment' | 'table';

/** What did not answer (`unreachable`) or said the deployment is wrong (`deployment`). */
export type Component = 'mail-server' | 'ses';

export interface Deferral {
  reason: DeferralReason;
  /** Present for `unreachable` and `deployment`. */
  component?: Component;
  /** The reply of the server that said so (`deployment`), as it said it. */
  reply?: string;
  /** The AWS error name behind it (`table`). */
  awsCode?: string;
}

/**
 * `delivered`; `invalid`: the mail server refused the recipient; `rejected`: it refused the mail's content (spam or
 * virus filter, size, quota); `blocked`: the recipient blocked the sender; `deferred`: not final yet.
 */
export type RecipientState = 'delivered' | 'invalid' | 'rejected' | 'blocked' | 'deferred';

export interface RecipientOutcome {
  recipient: string;
  state: RecipientState;
  code?: number;
  detail?: string;
  /** Delivered by an earlier attempt (the ledger says so), not by this one. */
  earlier?: boolean;
  /** Present exactly when the state is `deferred`. */
  deferral?: Deferral;
}

export type EffectKind = 'autoreply' | 'forward';

/** How a forward or auto-reply leaves: through the mail server's internal port (a hosted domain) or SES. */
export type EffectRoute = 'internal' | 'ses';

/**
 * Why an effect did not happen on purpose: the auto-reply policy's reasons (mail/autoreply-policy.ts), the reply log
 * (`already-replied-within-interval`), a forward to the recipient itself, and a forward to an outside address of mail
 * SES marked spam or virus FAIL (FORWARD_SPAM_POLICY=skip). One list, so the metric's `reason` label stays bounded.
 */
export const SUPPRESSION_REASONS = [
  ...SUPPRESS_REASONS,
  'already-replied-within-interval',
  'forward-to-self',
  'spam',
  'virus',
] as const;
export type SuppressionReason = (typeof SUPPRESSION_REASONS)[number];

/** The `reason` label of a suppressed effect: one of SUPPRESSION_REASONS, `other` for anything else. */
export function suppressionLabel(effect: Pick<EffectResult, 'status' | 'reason'>): string | undefined {
  if (effect.status !== 'suppressed') return undefined;
  return (SUPPRESSION_REASONS as readonly string[]).includes(effect.reason ?? '') ? effect.reason : 'other';
}

/**
 * `sent`: done now; `done-before`: an earlier attempt did it (ledger); `suppressed`: a rule said no (with reason);
 * `failed`: permanent failure of this effect only, or a send whose outcome is unknown (never repeated);
 * `deferred`: not done yet, worth retrying the message (`deferral` says why).
 */
export interface EffectResult {
  kind: EffectKind;
  recipient: string;
  target: string;
  route?: EffectRoute;
  status: 'sent' | 'done-before' | 'suppressed' | 'failed' | 'deferred';
  reason?: string;
  deferral?: Deferral;
  /** The AWS error name behind a failure (a missing table shows here). */
  awsCode?: string;
}

export type MessageStatus =
  | 'delivered'
  | 'partial'
  | 'invalid'
  | 'rejected'
  | 'blocked'
  | 'deferred'
  | 'failed'
  | 'duplicate'
  | 'wrong-domain'
  | 'setup'
  | 'malformed';

/**
 * `stopping`: the worker stopped before it started on the mail (nothing happened: hand the message back at once);
 * otherwise why the attempt as a whole could not go on (a fetch that failed, an unexpected fault).
 */
export type AttemptFault = Deferral | { reason: 'stopping' };

export interface MessageOutcome {
  status: MessageStatus;
  sqsMessageId: string;
  sesMessageId?: string;
  /** Where the mail is stored, for a later record (the poller's give-up). */
  mailLocation?: MailLocation;
  recipients: RecipientOutcome[];
  effects: EffectResult[];
  /** Envelope recipients of other domains (another poller's business). */
  ignoredRecipients: string[];
  bounceRewritten: boolean;
  loopMarker: boolean;
  /** Mail-controlled sizes past their bound (the mail was delivered, the feature needing them skipped). */
  limits?: MailLimit[];
  /** Why the outcome is what it is, in words (the log line). */
  reason?: string;
  /** The error behind a fault or a deferred delivery. */
  error?: WorkerErrorJson;
  fault?: AttemptFault;
  /** The mail's S3 object already records that the worker gave up on it (written once, not on every receive). */
  gaveUpRecorded?: boolean;
}

/** AWS errors a table that does not exist, or whose key differs from what the daemon writes, produces. */
const TABLE_FAULTS = new Set(['ResourceNotFoundException', 'ValidationException']);

/** Why an error keeps something from being final: a table fault, SES's account or setup, or something temporary. */
export function deferralFor(error: WorkerError): Deferral {
  const { awsCode } = error;
  const aws = awsCode !== undefined ? { awsCode } : {};
  if (error.code === 'SES_DEPLOYMENT')
    return { reason: 'deployment', component: 'ses', reply: `${awsCode ?? 'SES'}: ${error.message}`, ...aws };
  if (awsCode !== undefined && TABLE_FAULTS.has(awsCode)) return { reason: 'table', awsCode };
  return { reason: 'temporary', ...aws };
}

function deferralsOf(outcome: MessageOutcome): Deferral[] {
  return [
    ...(outcome.fault && outcome.fault.reason !== 'stopping' ? [outcome.fault] : []),
    ...outcome.recipients.flatMap((r) => (r.deferral ? [r.deferral] : [])),
    ...outcome.effects.flatMap((e) => (e.deferral ? [e.deferral] : [])),
  ];
}

/** The reasons anything in the outcome is not final; empty when everything is. */
export function pendingReasons(outcome: MessageOutcome): Array<DeferralReason | 'stopping'> {
  const stopping = outcome.fault?.reason === 'stopping' ? (['stopping'] as const) : [];
  return [...stopping, ...deferralsOf(outcome).map((d) => d.reason)];
}

/** The first reply of `component` saying the deployment is wrong. */
export function deploymentFaultOf(outcome: MessageOutcome, component: Component): Deferral | undefined {
  return deferralsOf(outcome).find((d) => d.reason === 'deployment' && d.component === component);
}

/** What the components did in this attempt: `refused` (a deployment fault), `accepted` (took a copy), or nothing. */
export function componentVerdict(
  outcome: MessageOutcome,
  component: Component,
): 'refused' | 'accepted' | undefined {
  if (deploymentFaultOf(outcome, component)) return 'refused';
  const accepted = component === 'ses' ? sesAccepted(outcome) : mailServerAccepted(outcome);
  return accepted ? 'accepted' : undefined;
}

/** The components an attempt waits for because they did not answer or refused as misconfigured. */
export function blockedBy(outcome: MessageOutcome): Set<Component> {
  const blocked = new Set<Component>();
  for (const d of deferralsOf(outcome))
    if ((d.reason === 'unreachable' || d.reason === 'deployment') && d.component) blocked.add(d.component);
  return blocked;
}

/** The AWS error name of the first table fault met, even by an effect that failed for good. */
export function tableFaultOf(outcome: MessageOutcome): string | undefined {
  const deferred = deferralsOf(outcome).find((d) => d.reason === 'table')?.awsCode;
  return (
    deferred ?? outcome.effects.find((e) => e.awsCode !== undefined && TABLE_FAULTS.has(e.awsCode))?.awsCode
  );
}

/** SES took a forward or reply of this attempt. */
function sesAccepted(outcome: MessageOutcome): boolean {
  return outcome.effects.some((e) => e.status === 'sent' && e.route === 'ses');
}

/** The mail server took a copy in this attempt (a delivery, or a forward or reply on the internal port). */
export function mailServerAccepted(outcome: MessageOutcome): boolean {
  return (
    outcome.recipients.some((r) => r.state === 'delivered' && !r.earlier) ||
    outcome.effects.some((e) => e.status === 'sent' && e.route === 'internal')
  );
}
