/**
 * Stage 2: the mail's bytes, from S3 (or inline in the notification), counted against the poller's byte budget,
 * and what the object's audit metadata already says about it.
 */
import { readVerdict, type RecordedVerdict } from '../aws/audit-metadata.ts';
import type { FetchedMail } from '../aws/mail-store.ts';
import { WorkerError } from '../errors.ts';
import type { Attempt } from './attempt.ts';
import type { PipelinePorts } from './ports.ts';

export interface FetchedAttempt {
  mail: FetchedMail;
  /** The verdict the object's metadata recorded for this domain before this attempt (none for inline mail). */
  recorded: RecordedVerdict;
  /**
   * A final verdict of this domain is recorded only once everything was final: this notification is a redelivery
   * (SNS, a lost delete). Another domain's verdict on a shared object is not ours. A replay asked for the mail to be
   * handled again, so it is none.
   */
  redelivery: boolean;
}

export async function fetchMail(attempt: Attempt, ports: PipelinePorts): Promise<FetchedAttempt> {
  const mail = await fetchBytes(attempt, ports);
  const recorded = readVerdict(mail.head?.Metadata ?? {}, ports.domain);
  return { mail, recorded, redelivery: recorded.processed && !attempt.replay };
}

async function fetchBytes(attempt: Attempt, ports: PipelinePorts): Promise<FetchedMail> {
  const source = attempt.receipt.mail;
  const maxBytes = ports.options.maxMailBytes;
  if (source.kind === 'inline') {
    if (source.data.length > maxBytes) {
      throw new WorkerError(
        'MAIL_TOO_LARGE',
        `inline mail is ${source.data.length} bytes, over MAX_MAIL_BYTES=${maxBytes}`,
        { temporary: false },
      );
    }
    return { bytes: source.data, free: () => undefined };
  }
  const budget = attempt.guard.budget;
  return ports.mailStore.fetch(source, {
    maxBytes,
    ...(budget && { budget }),
    ...(attempt.signal && { signal: attempt.signal }),
  });
}
