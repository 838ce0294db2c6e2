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
  headerSafeText,
  serializeMessage,
  splitMessage,
} from './header-block.ts';
import { formatMailbox } from './forward.ts';
import { headerParsers } from './header-parsers.ts';
import { MAIL_LIMITS } from './mail-limits.ts';
import type { MailView } from './mail-view.ts';

export const BOUNCE_DISPLAY_NAME = 'Delivery failure';

const MAX_INFO_VALUE = 900;

function isSesDaemon(address: string | undefined): boolean {
  return address !== undefined && bareAddress(address).toLowerCase() === SES_MAILER_DAEMON;
}

function firstAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return headerParsers.mailboxes(rawValueToText(value).slice(0, MAIL_LIMITS.mailboxFieldBytes))[0]?.address;
}

/**
 * Whether the mail says it comes from SES's own mailer-daemon (From, or the envelope sender). Rewriting means
 * looking the bounced message up in our outbound records, and those exist only for mail we sent through SES; a DSN
 * from any other MTA concerns mail we have no record of. Anyone can write this From, though: whether SES vouched
 * for it is {@link sesBounceCheck}'s question.
 */
export function isSesBounce(view: MailView, envelopeSender?: string): boolean {
  return fromIsSesDaemon(view) || isSesDaemon(envelopeSender);
}

function fromIsSesDaemon(view: MailView): boolean {
  if (isSesDaemon(view.from?.address)) return true;
  // The view holds no parsed From when the address did not parse; the raw From still tells.
  return !view.from?.address && isSesDaemon(firstAddress(view.headers.get('from')?.[0]));
}

/** SES's SPF and DMARC verdicts for the mail (receipt.spfVerdict / dmarcVerdict). */
export interface AuthVerdicts {
  spf: string;
  dmarc: string;
}

export type SesBounceCheck = 'authenticated' | 'unauthenticated' | 'not-a-bounce';

/**
 * An SES bounce is only trusted when SES authenticated the sender it names: DMARC passed for the From
 * MAILER-DAEMON@amazonses.com (DMARC always judges the From domain), or SPF passed for an envelope sender in
 * amazonses.com or a subdomain. SES's DKIM verdict alone is not enough: it says a signature verified, not whose
 * domain signed. Everything else that merely claims to be an SES bounce is ordinary mail.
 */
export function sesBounceCheck(
  view: MailView,
  envelopeSender: string,
  verdicts: AuthVerdicts,
): SesBounceCheck {
  const fromDaemon = fromIsSesDaemon(view);
  if (!fromDaemon && !isSesDaemon(envelopeSender)) return 'not-a-bounce';
  if (fromDaemon && verdicts.dmarc === 'PASS') return 'authenticated';
  const envelopeDomain = bareAddress(envelopeSender).split('@').at(-1)?.toLowerCase() ?? '';
  const sesEnvelope =
    bareAddress(envelopeSender).includes('@') &&
    (envelopeDomain === SES_DOMAIN || envelopeDomain.endsWith(`.${SES_DOMAIN}`));
  return sesEnvelope && verdicts.spf === 'PASS' ? 'authenticated' : 'unauthenticated';
}

const SES_DOMAIN = 'amazonses.com';

function bareAddress(address: string): string {
  return address
    .trim()
    .replace(/^<(.*)>$/, '$1')
    .trim();
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
  return formatMailbox(headerSafeText(only.name, 100), only.address.trim());
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
      : [['X-Original-From', headerSafeText(rawValueToText(originalFrom), MAX_INFO_VALUE)]];
  return serializeMessage(editHeaders(msg, { remove: ['X-Original-From'], set, append }));
}
