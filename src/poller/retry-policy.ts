/**
 * The one place that decides what happens to an SQS message after an attempt: pure, from the outcome's facts, the
 * message's receive count and the queue's retry settings. The poller only applies the decision.
 */
import {
  blockedBy,
  pendingReasons,
  type Component,
  type DeferralReason,
  type MessageOutcome,
} from '../pipeline/outcome.ts';

/**
 * `delete`: every recipient and effect is final. `retry`: leave it, visible again `after` seconds. `dead-letter`:
 * leave it untouched for the queue's redrive (a malformed notification, or a mail the worker gave up on).
 * `release`: make it visible again at once (the worker stopped before it started on the mail). `park`: hold it
 * (invisible) until `component` is back, then retry it in place: an outage does not count against the mail.
 */
export type RetryAction = 'delete' | 'retry' | 'dead-letter' | 'release' | 'park';

/** Why: `final`, `malformed`, `stopping`, or the reason the most pressing pending item gave. */
export type RetryReason = 'final' | 'malformed' | 'stopping' | DeferralReason;

export interface RetryDecision {
  action: RetryAction;
  reason: RetryReason;
  /** Seconds until the message is visible again (`retry`, `release`). */
  after?: number;
  /** This receive reached the give-up count: the mail is marked failed in S3 (once) before it moves on. */
  giveUp?: true;
  /** What a parked message waits for. */
  component?: Component;
}

export interface RetrySettings {
  /** Visibility (seconds) after a temporary failure, by receive count (the last entry repeats). */
  schedule: readonly number[];
  /** The receive count at which the worker gives up: the queue's redrive maxReceiveCount, else MAX_RECEIVES. */
  maxReceives: number;
  /** Without a redrive policy a message past maxReceives keeps coming back: at the longest delay. */
  hasRedrivePolicy: boolean;
  /** A message held up only by other workers' claims is retried after their lease, when it can be taken over. */
  claimLeaseSeconds: number;
}

/**
 * The order in which pending reasons decide: a table or deployment fault says more than a temporary failure, and a
 * temporary failure (something answered) more than silence; claims decide only when nothing else is pending.
 */
const PRECEDENCE: readonly DeferralReason[] = ['table', 'deployment', 'temporary', 'unreachable', 'claims'];

/** Reasons that mean a component is out: a message held up by nothing else waits for it, parked. */
const OUTAGES: ReadonlySet<string> = new Set(['unreachable', 'deployment']);

/**
 * `canPark`: the poller has room to hold one more message for an outage (its parking lot is bounded); without it an
 * outage takes the ordinary schedule.
 */
export function decideRetry(
  outcome: MessageOutcome,
  receiveCount: number,
  settings: RetrySettings,
  canPark = false,
): RetryDecision {
  if (outcome.status === 'malformed') return { action: 'dead-letter', reason: 'malformed' };
  const pending = pendingReasons(outcome);
  if (pending.length === 0) return { action: 'delete', reason: 'final' };
  if (pending.includes('stopping')) return { action: 'release', reason: 'stopping', after: 0 };
  const reason = PRECEDENCE.find((r) => pending.includes(r)) ?? 'temporary';
  if (canPark && pending.every((r) => OUTAGES.has(r))) {
    const blocked = blockedBy(outcome);
    return { action: 'park', reason, component: blocked.has('mail-server') ? 'mail-server' : 'ses' };
  }
  const { schedule } = settings;
  const longest = schedule[schedule.length - 1] ?? 900;
  if (receiveCount >= settings.maxReceives) {
    return settings.hasRedrivePolicy
      ? { action: 'dead-letter', reason, giveUp: true }
      : { action: 'retry', reason, after: longest, giveUp: true };
  }
  const scheduled = schedule[Math.min(receiveCount - 1, schedule.length - 1)] ?? longest;
  const after = reason === 'claims' ? Math.min(scheduled, settings.claimLeaseSeconds) : scheduled;
  return { action: 'retry', reason, after };
}
