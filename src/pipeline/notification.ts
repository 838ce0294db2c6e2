/**
 * Stage 1: turn an SQS body into a typed SES receipt. Three shapes reach a queue: an SNS envelope around the SES
 * notification, the bare notification (SNS raw message delivery), and a notification whose SES action is SNS
 * with the mail inline in `content`. Anything else is reported, never thrown.
 */

export type VerdictStatus = 'PASS' | 'FAIL' | 'GRAY' | 'PROCESSING_FAILED' | 'DISABLED' | 'UNKNOWN';

export interface SesVerdicts {
  spam: VerdictStatus;
  virus: VerdictStatus;
  spf: VerdictStatus;
  dkim: VerdictStatus;
  dmarc: VerdictStatus;
}

export type MailSource = { kind: 's3'; bucket: string; key: string } | { kind: 'inline'; data: Buffer };

export interface SesReceipt {
  sesMessageId: string;
  /** Envelope sender (MAIL FROM); '' for a null sender. */
  source: string;
  /** Envelope recipients SES accepted (`receipt.recipients`), lower-cased. */
  recipients: string[];
  timestamp: string;
  verdicts: SesVerdicts;
  mail: MailSource;
}

export type ParsedBody =
  { kind: 'receipt'; receipt: SesReceipt } | { kind: 'setup' } | { kind: 'invalid'; reason: string };

const VERDICTS: readonly VerdictStatus[] = ['PASS', 'FAIL', 'GRAY', 'PROCESSING_FAILED', 'DISABLED'];

export function parseSqsBody(body: string | undefined): ParsedBody {
  if (body === undefined || body.trim() === '') return invalid('empty body');
  let outer: unknown;
  try {
    outer = JSON.parse(body);
  } catch (error) {
    return invalid(`body is not JSON (${error instanceof Error ? error.message : 'parse error'})`);
  }
  if (!isRecord(outer)) return invalid('body is not a JSON object');

  let notification: unknown = outer;
  if (outer.Type !== undefined) {
    if (outer.Type !== 'Notification')
      return invalid(`SNS message of type ${String(outer.Type)} is not a notification`);
    if (typeof outer.Message !== 'string') return invalid('SNS envelope has no Message string');
    // SES validates an SNS topic with a plain-text message when it is first attached to an event destination.
    if (outer.Message.startsWith('Successfully validated SNS topic')) return { kind: 'setup' };
    try {
      notification = JSON.parse(outer.Message);
    } catch {
      return invalid('SNS Message is not JSON');
    }
  }
  if (!isRecord(notification)) return invalid('notification is not a JSON object');
  const mail = notification.mail;
  if (
    notification.notificationType === 'AMAZON_SES_SETUP_NOTIFICATION' ||
    notification.eventType === 'Setup' ||
    (isRecord(mail) && mail.messageId === 'AMAZON_SES_SETUP_NOTIFICATION')
  ) {
    return { kind: 'setup' };
  }
  if (notification.notificationType !== 'Received') {
    return invalid(
      `not an SES receipt notification (notificationType=${JSON.stringify(notification.notificationType)})`,
    );
  }
  return parseReceived(notification);
}

function parseReceived(n: Record<string, unknown>): ParsedBody {
  const mail = n.mail;
  const receipt = n.receipt;
  if (!isRecord(mail)) return invalid('notification has no mail object');
  if (!isRecord(receipt)) return invalid('notification has no receipt object');
  if (typeof mail.messageId !== 'string' || mail.messageId === '') return invalid('mail.messageId missing');
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(mail.messageId))
    return invalid('mail.messageId has unexpected characters');
  const recipients = receipt.recipients;
  if (!Array.isArray(recipients) || !recipients.every((r) => typeof r === 'string')) {
    return invalid('receipt.recipients is not a list of addresses');
  }
  const action = receipt.action;
  if (!isRecord(action)) return invalid('receipt.action missing');

  let source: MailSource;
  if (typeof n.content === 'string') {
    const encoding = typeof action.encoding === 'string' ? action.encoding.toUpperCase() : 'UTF8';
    source = { kind: 'inline', data: Buffer.from(n.content, encoding === 'BASE64' ? 'base64' : 'utf8') };
  } else if (action.type === 'S3') {
    if (typeof action.bucketName !== 'string' || action.bucketName === '')
      return invalid('action.bucketName missing');
    if (typeof action.objectKey !== 'string' || action.objectKey === '')
      return invalid('action.objectKey missing');
    source = { kind: 's3', bucket: action.bucketName, key: action.objectKey };
  } else {
    return invalid(
      `receipt action ${JSON.stringify(action.type)} carries no mail (no S3 object, no content)`,
    );
  }

  return {
    kind: 'receipt',
    receipt: {
      sesMessageId: mail.messageId,
      source: typeof mail.source === 'string' ? mail.source.trim() : '',
      recipients: (recipients as string[]).map((r) => r.trim().toLowerCase()).filter((r) => r !== ''),
      timestamp: typeof mail.timestamp === 'string' ? mail.timestamp : '',
      verdicts: {
        spam: verdict(receipt.spamVerdict),
        virus: verdict(receipt.virusVerdict),
        spf: verdict(receipt.spfVerdict),
        dkim: verdict(receipt.dkimVerdict),
        dmarc: verdict(receipt.dmarcVerdict),
      },
      mail: source,
    },
  };
}

function verdict(value: unknown): VerdictStatus {
  if (isRecord(value) && typeof value.status === 'string') {
    const status = value.status.toUpperCase() as VerdictStatus;
    if (VERDICTS.includes(status)) return status;
  }
  return 'UNKNOWN';
}

function invalid(reason: string): ParsedBody {
  return { kind: 'invalid', reason };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The domain part of an address, lower-cased; '' when there is none. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}
