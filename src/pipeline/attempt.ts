/**
 * One attempt at one message's mail, as the stages after the notification share it: what the notification said,
 * the ledger context, what is known so far (so a late fault still reports what was really done), and the work
 * started together with the fetch because it needs only the notification.
 */
import { effectName, messageKey, type Claim } from '../aws/effect-ledger.ts';
import type { RecipientEntry } from '../aws/recipient-directory.ts';
import type { PermitOptions } from '../flow-control/send-pacer.ts';
import { GuardContext } from './guarded-effect.ts';
import { emptyOutcome, unusableRecipientsOf, type NotifiedMail, type SesReceipt } from './notification.ts';
import type { EffectResult, MessageOutcome, RecipientOutcome } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

export interface ProcessOptions {
  /** Aborts work that has not really started (waiting for memory budget, fetching) when stopping. */
  signal?: AbortSignal;
  /** Claims the message holds in the ledger while it is processed; the poller's heartbeat renews their leases. */
  liveClaims?: Set<Claim>;
  /**
   * Told when the message starts and stops waiting for an SES send permit: meanwhile it needs no processing slot,
   * so the poller lets other mail in (local deliveries are not held up by forwards waiting for SES).
   */
  onWait?: (waiting: boolean) => void;
}

export interface Attempt {
  receipt: SesReceipt;
  /** This poller's recipients of the mail. */
  recipients: string[];
  /** The replay generation (0 unless a forced replay): part of every ledger key and delivery id. */
  generation: number;
  replay: boolean;
  guard: GuardContext;
  permit: PermitOptions;
  signal?: AbortSignal;
  /** The outcome's fields known from the notification. */
  base: Omit<MessageOutcome, 'status'>;
  /** Final recipient outcomes and effect results so far. */
  progress: { recipients: Map<string, RecipientOutcome>; effects: EffectResult[] };
  /** The recipients' table entries, read alongside the fetch. */
  early: { entries: Promise<Map<string, RecipientEntry>> };
}

/** Starts an attempt: the message's ledger claim and the recipients' lookups go out now, alongside the fetch. */
export function beginAttempt(mail: NotifiedMail, ports: PipelinePorts, options: ProcessOptions): Attempt {
  const { message, receipt, recipients } = mail;
  const generation = message.replay?.generation ?? 0;
  const budget = ports.budget?.account();
  const guard = new GuardContext(
    {
      ledger: ports.ledger,
      liveClaims: options.liveClaims ?? new Set(),
      domain: ports.domain,
      logger: ports.logger,
      metrics: ports.metrics,
      sleep: (ms) => ports.clock.sleep(ms),
    },
    {
      key: messageKey(receipt.sesMessageId, ports.domain, generation),
      sesMessageId: receipt.sesMessageId,
      generation,
      retried: message.receiveCount > 1 || message.replay !== undefined,
      ...(budget && { budget }),
      ...(options.signal && { signal: options.signal }),
    },
  );
  const entries = ports.directory.lookup(recipients);
  // Awaited later, or never when the fetch fails first: that must not count as an unhandled rejection.
  entries.catch(() => undefined);
  const attempt: Attempt = {
    receipt,
    recipients,
    generation,
    replay: message.replay !== undefined,
    guard,
    permit: {
      ...(options.signal && { signal: options.signal }),
      ...(options.onWait && { onWait: options.onWait }),
    },
    ...(options.signal && { signal: options.signal }),
    base: {
      ...emptyOutcome(message.messageId),
      sesMessageId: receipt.sesMessageId,
      ignoredRecipients: mail.ignoredRecipients,
      ...(receipt.mail.kind === 's3' && {
        mailLocation: { bucket: receipt.mail.bucket, key: receipt.mail.key },
      }),
    },
    progress: { recipients: new Map(), effects: [] },
    early: { entries },
  };
  for (const { address, reason } of unusableRecipientsOf(receipt, ports.domain))
    attempt.progress.recipients.set(address, {
      recipient: address,
      state: 'invalid',
      detail: `unusable address: ${reason}`,
    });
  return attempt;
}

/** The ledger's name of a recipient's delivery. */
export function deliverName(recipient: string): string {
  return effectName(recipient, 'deliver');
}

/** Every recipient of the attempt with its outcome so far; those without one are still deferred. */
export function recipientResults(attempt: Attempt): RecipientOutcome[] {
  const all = [...new Set([...attempt.recipients, ...attempt.progress.recipients.keys()])];
  return all.map(
    (recipient) =>
      attempt.progress.recipients.get(recipient) ?? {
        recipient,
        state: 'deferred',
        deferral: { reason: 'temporary' },
      },
  );
}
