/**
 * What a dead letter is and whether a redrive can help it: a malformed notification, or one the settings refuse,
 * can never succeed; a mail whose object is gone cannot either; a mail the daemon already decided is dropped as a
 * duplicate when it comes back (replay runs it again); a deferred mail, or one with no recorded outcome, can be
 * redriven once the cause is fixed. Read from the notification and the mail's S3 audit metadata.
 */
import { readVerdict } from '../aws/audit-metadata.ts';
import type { MailLocation } from '../aws/mail-store.ts';
import { parseSqsBody, type NotificationSources } from '../pipeline/notification.ts';
import { readStoredMail, type StoredMail, type VerdictReader } from './audit.ts';
import { describeError } from './command.ts';

/** `yes`: a redrive can deliver it once the cause is fixed; `no`: it can never succeed; `unknown`: not readable. */
export type Redrivable = 'yes' | 'no' | 'unknown';

export interface Judgement {
  redrivable: Redrivable;
  reason: string;
  sesMessageId?: string;
  recipients?: string[];
  /** The mail's S3 object, when the notification names one that exists. */
  stored?: MailLocation;
}

/** Reads the notification and, for mail in S3, the object's metadata; never throws. */
export async function judgeDeadLetter(
  reader: VerdictReader,
  domain: string,
  body: string | undefined,
  sources: NotificationSources,
): Promise<Judgement> {
  const parsed = parseSqsBody(body);
  if (parsed.kind === 'invalid') {
    return { redrivable: 'no', reason: `malformed notification (${parsed.reason}): it can never succeed` };
  }
  if (parsed.kind === 'setup') {
    return { redrivable: 'no', reason: 'an SES setup notification: there is no mail to deliver' };
  }
  const { receipt } = parsed;
  const who = { sesMessageId: receipt.sesMessageId, recipients: receipt.recipients };
  const checked = parseSqsBody(body, sources);
  if (checked.kind === 'invalid') {
    return {
      ...who,
      redrivable: 'no',
      reason: `${checked.reason}: refused under the current settings (redrive only after changing that setting)`,
    };
  }
  if (receipt.mail.kind !== 's3') {
    return { ...who, redrivable: 'yes', reason: 'mail inline in the notification (SNS action, no S3 audit)' };
  }
  const location = { bucket: receipt.mail.bucket, key: receipt.mail.key };
  const stored = await readStoredMail(reader, { ...location, domain }).catch(
    (error: unknown): StoredLookup => ({
      kind: 'error',
      error: describeError(error),
    }),
  );
  return { ...who, ...judgeStored(stored, location), ...(stored.kind === 'stored' && { stored: location }) };
}

export type StoredLookup = StoredMail | { kind: 'error'; error: string };

/** The verdict on a dead letter whose mail is in S3, from what the object says. */
export function judgeStored(
  stored: StoredLookup,
  location: MailLocation,
): Pick<Judgement, 'redrivable' | 'reason'> {
  const where = `s3://${location.bucket}/${location.key}`;
  if (stored.kind === 'error') {
    return { redrivable: 'unknown', reason: `the S3 metadata is not readable (${stored.error})` };
  }
  if (stored.kind === 'missing') {
    return {
      redrivable: 'no',
      reason: `${where} is gone (deleted, or never written): nothing left to deliver`,
    };
  }
  const verdict = readVerdict(stored.metadata);
  if (verdict.processed) {
    const detail = verdict.failureReason ? `: ${verdict.failureReason}` : '';
    return {
      redrivable: 'no',
      reason:
        `already decided (status ${verdict.status ?? 'unknown'}${detail}): a redriven copy is dropped as a duplicate; ` +
        `to run it again: replay --key ${location.key}`,
    };
  }
  if (verdict.gaveUp) {
    return {
      redrivable: 'yes',
      reason: `deferred until MAX_RECEIVES (${verdict.failureReason ?? 'no reason recorded'}): redrive once that is fixed`,
    };
  }
  return {
    redrivable: 'yes',
    reason:
      "no outcome recorded (retried until MAX_RECEIVES without a final answer; the worker's log has the SES id): " +
      'redrive once the cause is fixed',
  };
}
