/**
 * Stage 5: recipients who blocked the sender are final (`blocked`), and so is everyone for a virus under
 * VIRUS_POLICY=reject. A sender is blocked when the From address or the envelope sender matches a pattern of the
 * recipient's blocklist (Python fnmatch semantics: mail/blocklist.ts).
 */
import type { RecipientEntry } from '../aws/recipient-directory.ts';
import { checkBlocked } from '../mail/blocklist.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { Attempt } from './attempt.ts';
import type { PipelinePorts } from './ports.ts';

export interface BlocklistResult {
  /** Every recipient blocked for SES's virus verdict. */
  virusRejected: boolean;
  /** The sender a blocklist matched, by recipient. */
  blockedBy: Map<string, string>;
}

export function applyBlocklist(
  attempt: Attempt,
  view: MailView,
  entries: ReadonlyMap<string, RecipientEntry>,
  ports: PipelinePorts,
): BlocklistResult {
  const virusRejected = ports.options.virusPolicy === 'reject' && attempt.receipt.verdicts.virus === 'FAIL';
  const blockedBy = virusRejected ? new Map<string, string>() : matches(attempt, view, entries);
  const outcomes = attempt.progress.recipients;
  for (const recipient of attempt.recipients) {
    const detail = virusRejected ? 'virus' : blockedBy.get(recipient);
    if (detail !== undefined) outcomes.set(recipient, { recipient, state: 'blocked', detail });
  }
  if (blockedBy.size > 0) ports.metrics.blocked(ports.domain, blockedBy.size);
  return { virusRejected, blockedBy };
}

function matches(
  attempt: Attempt,
  view: MailView,
  entries: ReadonlyMap<string, RecipientEntry>,
): Map<string, string> {
  const patterns = new Map<string, readonly string[]>();
  for (const [recipient, entry] of entries)
    if (entry.blockedPatterns.length > 0) patterns.set(recipient, entry.blockedPatterns);
  const blocked = new Map<string, string>();
  if (patterns.size === 0) return blocked;
  const senders = [
    ...new Set([view.from?.address ?? '', attempt.receipt.source.toLowerCase()].filter((s) => s !== '')),
  ];
  for (const sender of senders) {
    for (const decision of checkBlocked(sender, attempt.recipients, patterns)) {
      if (decision.blocked && !blocked.has(decision.recipient)) blocked.set(decision.recipient, sender);
    }
  }
  return blocked;
}
