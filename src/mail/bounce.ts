/**
 * SES bounce rewriting. When SES cannot deliver mail a user sent through it, the DSN comes from SES's own
 * mailer-daemon, so every bounce in the mailbox looks alike; the rewrite shows which address failed and lets
 * "reply" reach the original sender. Only header fields change; the report itself stays byte-for-byte.
 */
import addressparser from 'nodemailer/lib/addressparser';
import { WorkerError } from '../errors.ts';
import { SES_MAILER_DAEMON } from './constants.ts';
import {
  assertSafeHeaderValue,
  editHeaders,
  getHeader,
  isPlainAddress,
  rawValueToText,
  sanitizeText,
  serializeMessage,
  splitMessage,
} from './header-block.ts';
import { formatMailbox } from './forward.ts';
import type { MailView } from './mail-view.ts';

export const BOUNCE_DISPLAY_NAME = 'Delivery failure';

const MAX_INFO_VALUE = 900;

function isSesDaemon(address: string | undefined): boolean {
  if (address === undefined) return false;
  return (
    address
      .trim()
      .replace(/^<(.*)>$/, '$1')
      .trim()
      .toLowerCase() === SES_MAILER_DAEMON
  );
}

function firstAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return addressparser(rawValueToText(value).slice(0, 16 * 1024), { flatten: true })[0]?.address;
}

/**
 * Only SES's own mailer-daemon counts. Rewriting means looking the bounced message up in our outbound records,
 * and those exist only for mail we sent through SES; a DSN from any other MTA concerns mail we have no record
 * of (or is a backscatter/spoofing attempt), so it is delivered as it is. The From header can be forged too —
 * callers must still confirm the bounced Message-ID in the outbound table before trusting the report.
 *
 * A `multipart/report` from that address is covered by the From test; the content type adds no extra case.
 */
export function isSesBounce(view: MailView, envelopeSender?: string): boolean {
  if (isSesDaemon(view.from?.address)) return true;
  // The view holds headers only when the full parse failed; the raw From still tells.
  if (!view.from?.address && isSesDaemon(firstAddress(view.headers.get('from')?.[0]))) return true;
  return isSesDaemon(envelopeSender);
}

function injection(message: string): WorkerError {
  return new WorkerError('HEADER_INJECTION', message, { temporary: false });
}

/**
 * `originalSource` is SES's `Source` of the bounced message: a bare address or `Name <address>`. It must name
 * exactly one mailbox; a list would add reply recipients nobody chose.
 */
function replyToValue(originalSource: string): string {
  assertSafeHeaderValue('Reply-To', originalSource);
  const boxes = addressparser(originalSource, { flatten: true });
  const only = boxes[0];
  if (boxes.length !== 1 || only === undefined || !isPlainAddress(only.address.trim())) {
    throw injection(
      `originalSource is not a single address: ${JSON.stringify(originalSource.slice(0, 100))}`,
    );
  }
  const trimmed = originalSource.trim();
  if (/^[\x20-\x7e]*$/.test(trimmed)) return trimmed;
  return formatMailbox(sanitizeText(only.name, 100), only.address.trim());
}

export function rewriteBounce(
  raw: Buffer,
  info: { failedRecipient: string; originalSource?: string },
): Buffer {
  if (!isPlainAddress(info.failedRecipient)) {
    throw injection(
      `failedRecipient is not a plain address: ${JSON.stringify(info.failedRecipient.slice(0, 100))}`,
    );
  }
  const set: Array<[string, string]> = [['From', formatMailbox(BOUNCE_DISPLAY_NAME, info.failedRecipient)]];
  if (info.originalSource !== undefined) set.push(['Reply-To', replyToValue(info.originalSource)]);

  const msg = splitMessage(raw);
  const originalFrom = getHeader(msg, 'From');
  // A forged X-Original-From already in the report must not survive next to ours.
  const append: Array<[string, string]> =
    originalFrom === undefined
      ? []
      : [['X-Original-From', sanitizeText(rawValueToText(originalFrom), MAX_INFO_VALUE)]];
  return serializeMessage(editHeaders(msg, { remove: ['X-Original-From'], set, append }));
}
