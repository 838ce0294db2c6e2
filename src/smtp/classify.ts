/**
 * A delivery outcome is data: the pipeline decides on `status`, never on error messages. A reply is judged by the
 * stage of the transaction it answered and its enhanced status code (RFC 3463), because the same 5xx means
 * different things at different stages: at RCPT an address status is a verdict on that recipient, after the content
 * it is a verdict on the mail, anywhere else it says the mail server is set up wrong for us — which no retry of the
 * mail can fix, but a fix of the deployment will, so the mail must wait rather than end. A failure without any reply
 * code (connection refused, timeout) is temporary, because nothing said no.
 */

/**
 * `delivered`: 2xx. `invalid`: the server refused the recipient itself (final). `rejected`: the server refused the
 * mail's content after DATA — spam or virus filter, size, quota (final). `deferred`: 4xx, no answer, or an answer
 * that says the deployment is wrong (`deploymentFault`): retried.
 */
export type DeliveryStatus = 'delivered' | 'invalid' | 'rejected' | 'deferred';

/**
 * Where in the transaction an answer or failure came: `connect` (TCP, greeting, EHLO/LHLO, STARTTLS), `mail` (MAIL
 * FROM), `rcpt` (RCPT TO), `data` (the DATA command, before any content), `content` (the reply to the message
 * content), or `unknown` (a connection failure nodemailer does not place: the content may already have been sent).
 */
export type SmtpStage = 'connect' | 'mail' | 'rcpt' | 'data' | 'content' | 'unknown';

export interface RecipientDelivery {
  recipient: string;
  status: DeliveryStatus;
  stage?: SmtpStage;
  /** SMTP/LMTP reply code, when the server answered. */
  code?: number;
  /** Enhanced status code of the reply (`5.1.1`), when it had one. */
  enhanced?: string;
  /** The server's reply text, or the local error. */
  response?: string;
  /** The reply says the deployment is wrong (relay denied, client rejected, ...), not the mail or the recipient. */
  deploymentFault?: boolean;
}

/** Reply code and text of one answer (or failure) and the stage it belongs to. */
export interface SmtpAnswer {
  stage: SmtpStage;
  code?: number;
  response?: string;
  /** Reported as a failure (a thrown error, a rejection entry): even a 2xx code in it is no delivery. */
  failed?: boolean;
}

const ENHANCED = /^([245])\d\d[ -]([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;

/** The enhanced status code of a reply, when its class agrees with the reply code's (RFC 3463 §2). */
export function enhancedStatus(response: string | undefined): string | undefined {
  const match = response === undefined ? null : ENHANCED.exec(response);
  if (!match || match[1] !== match[2]) return undefined;
  return `${match[2]}.${match[3]}.${match[4]}`;
}

/**
 * Address statuses (X.1.x) that are a verdict on the recipient's mailbox. Not X.1.2 (the server does not know the
 * destination *system*: our own domain missing from its configuration) nor X.1.10 (null MX), and not X.1.7 / X.1.8,
 * which are about the sender that SES already accepted: our own server refusing it is its configuration.
 */
const RECIPIENT_ADDRESS_STATUS = new Set(['0', '1', '3', '4', '6']);
/** Without an enhanced code, the basic replies RFC 5321 reserves for an unknown or unusable mailbox. */
const RECIPIENT_BASIC_CODES = new Set([550, 551, 553]);

/** Whether a 5xx at RCPT says "this recipient" rather than "this deployment". */
function isRecipientVerdict(code: number, enhanced: string | undefined): boolean {
  if (enhanced === undefined) return RECIPIENT_BASIC_CODES.has(code);
  const [, subject, detail] = enhanced.split('.');
  // X.2.x is the recipient's mailbox (disabled, full): about that recipient as much as an unknown address is.
  if (subject === '2') return true;
  return subject === '1' && RECIPIENT_ADDRESS_STATUS.has(detail ?? '');
}

/** Pure: the outcome for one recipient of one answer. */
export function classify(recipient: string, answer: SmtpAnswer): RecipientDelivery {
  const { stage, code, response } = answer;
  const enhanced = enhancedStatus(response);
  const base = {
    recipient,
    stage,
    ...(code !== undefined && { code }),
    ...(enhanced !== undefined && { enhanced }),
    ...(response !== undefined && { response }),
  };
  const kind = replyKind(code);
  if (kind === 'success') return { ...base, status: answer.failed ? 'deferred' : 'delivered' };
  if (kind !== 'permanent' || code === undefined) return { ...base, status: 'deferred' };
  if (stage === 'content') return { ...base, status: 'rejected' };
  if (stage === 'rcpt' && isRecipientVerdict(code, enhanced)) return { ...base, status: 'invalid' };
  return { ...base, status: 'deferred', deploymentFault: true };
}

function replyKind(code: number | undefined): 'success' | 'temporary' | 'permanent' | 'none' {
  if (code === undefined || !Number.isInteger(code)) return 'none';
  if (code >= 200 && code < 300) return 'success';
  if (code >= 400 && code < 500) return 'temporary';
  if (code >= 500 && code < 600) return 'permanent';
  return 'none';
}

interface SmtpErrorLike {
  code?: unknown;
  originalCode?: unknown;
  timeoutType?: unknown;
  command?: unknown;
  responseCode?: unknown;
  response?: unknown;
  message?: unknown;
  recipient?: unknown;
  rejected?: unknown;
  rejectedErrors?: unknown;
}

interface SmtpInfoLike {
  accepted?: unknown;
  rejected?: unknown;
  rejectedErrors?: unknown;
  response?: unknown;
}

/** Socket errors of a connection that never reached the server: nothing of the mail was sent. */
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
const SETUP_TIMEOUTS = new Set(['CONNECTION_TIMEOUT', 'GREETING_TIMEOUT', 'TLS_TIMEOUT']);
const SESSION_COMMANDS = new Set(['EHLO', 'HELO', 'LHLO', 'STARTTLS']);

/**
 * The stage of a nodemailer error, from its `command` and `code`. nodemailer tags every socket-level failure
 * `CONN` wherever it happened, so only failures that provably came before the session was set up (refused, name
 * not found, connect or greeting timeout, the pool giving up before it sent anything) count as `connect`; any
 * other connection failure is `unknown`: the content may have been sent and even accepted.
 */
export function stageOf(error: unknown): SmtpStage {
  const e = asRecord<SmtpErrorLike>(error);
  const command = typeof e.command === 'string' ? e.command : undefined;
  if (command === 'MAIL FROM') return 'mail';
  if (command === 'RCPT TO') return 'rcpt';
  // nodemailer: EENVELOPE for a refused DATA command (nothing sent), EMESSAGE for the reply to the content.
  if (command === 'DATA') return e.code === 'EMESSAGE' ? 'content' : 'data';
  if (command !== undefined && (SESSION_COMMANDS.has(command) || command.startsWith('AUTH')))
    return 'connect';
  if (command === 'CONN') {
    if (NEVER_CONNECTED.has(String(e.originalCode)) || SETUP_TIMEOUTS.has(String(e.timeoutType)))
      return 'connect';
    if (e.code === 'EDNS' || e.code === 'ETLS') return 'connect';
    // An "Invalid greeting" carries the greeting as its response: the server said no before the session began.
    if (e.code === 'EPROTOCOL' && typeof e.responseCode === 'number') return 'connect';
    return 'unknown';
  }
  // The pool failing an entry it could not hand to a connection ("Reached maximum number of retries after
  // connection was closed") has no command: it requeues only messages of which not a byte was sent.
  if (command === undefined && e.code === 'ECONNECTION') return 'connect';
  return 'unknown';
}

/** Per-recipient outcomes of a send that resolved (SMTP: RCPT-time rejections; LMTP: per-recipient DATA replies). */
export function outcomesFromInfo(recipients: readonly string[], info: SmtpInfoLike): RecipientDelivery[] {
  const rejected = indexRejections(info.rejectedErrors);
  const rejectedList = asStrings(info.rejected).map((r) => r.toLowerCase());
  const response = typeof info.response === 'string' ? info.response : undefined;
  // With LMTP `response` is the reply for the LAST recipient; it only speaks for the others when it is a 2xx.
  const finalCode = codeOf(response);
  const okReply = finalCode === undefined || replyKind(finalCode) === 'success';
  return recipients.map((recipient): RecipientDelivery => {
    const key = recipient.toLowerCase();
    const error = rejected.get(key);
    if (error) return classify(recipient, error);
    if (rejectedList.includes(key))
      return { recipient, status: 'deferred', stage: 'unknown', response: 'rejected without a reply code' };
    if (!okReply) return { recipient, status: 'delivered', stage: 'content', code: 250 };
    return classify(recipient, {
      stage: 'content',
      code: finalCode ?? 250,
      ...(response !== undefined && { response }),
    });
  });
}

/** Per-recipient outcomes of a send that threw. */
export function outcomesFromError(recipients: readonly string[], error: unknown): RecipientDelivery[] {
  const e = asRecord<SmtpErrorLike>(error);
  const perRecipient = indexRejections(e.rejectedErrors);
  const code = typeof e.responseCode === 'number' ? e.responseCode : undefined;
  const response =
    typeof e.response === 'string' ? e.response : typeof e.message === 'string' ? e.message : String(error);
  const stage = stageOf(error);
  return recipients.map((recipient) => {
    const specific = perRecipient.get(recipient.toLowerCase());
    if (specific) return classify(recipient, specific);
    // MAIL FROM or DATA refused, or the connection failed: the same fate for everyone in the transaction.
    return classify(recipient, { stage, ...(code !== undefined && { code }), response, failed: true });
  });
}

/**
 * Worth an immediate retry on a fresh connection: a connection failure (no reply) that provably happened before
 * the mail's content was sent. A failure during or after the content is not resent at once — the server may have
 * accepted the mail — but left to the message's retry, where the mailbox's duplicate check catches a second copy.
 */
export function isRetryableBeforeData(error: unknown): boolean {
  const e = asRecord<SmtpErrorLike>(error);
  return typeof e.responseCode !== 'number' && stageOf(error) === 'connect';
}

function indexRejections(value: unknown): Map<string, SmtpAnswer> {
  const map = new Map<string, SmtpAnswer>();
  if (!Array.isArray(value)) return map;
  for (const item of value as unknown[]) {
    const entry = asRecord<SmtpErrorLike>(item);
    if (typeof entry.recipient !== 'string') continue;
    const code = typeof entry.responseCode === 'number' ? entry.responseCode : undefined;
    const response = typeof entry.response === 'string' ? entry.response : String(entry.message ?? '');
    // Without a command the entry's stage is unknown; a RCPT rejection is what nodemailer reports most.
    const stage = typeof entry.command === 'string' ? stageOf(entry) : 'rcpt';
    map.set(entry.recipient.toLowerCase(), {
      stage,
      ...(code !== undefined && { code }),
      response,
      failed: true,
    });
  }
  return map;
}

function asRecord<T>(value: unknown): T {
  return (typeof value === 'object' && value !== null ? value : {}) as T;
}

function asStrings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function codeOf(response: string | undefined): number | undefined {
  const match = response?.match(/^(\d{3})/);
  return match ? Number(match[1]) : undefined;
}
