/**
 * A delivery outcome is data: the pipeline decides on `status`, never on error messages. Replies are classified
 * the way MTAs do (RFC 5321 §4.2.1): 2xx delivered, 5xx permanent, 4xx temporary — and a failure without any
 * reply code (connection refused, timeout, TLS error) is temporary, because nothing said no.
 */
export type DeliveryStatus = 'delivered' | 'rejected' | 'deferred';

export interface RecipientDelivery {
  recipient: string;
  status: DeliveryStatus;
  /** SMTP/LMTP reply code, when the server answered. */
  code?: number;
  /** The server's reply text, or the local error. */
  response?: string;
}

export function statusForCode(code: number | undefined): DeliveryStatus {
  if (code === undefined || !Number.isInteger(code)) return 'deferred';
  if (code >= 200 && code < 300) return 'delivered';
  if (code >= 500 && code < 600) return 'rejected';
  return 'deferred';
}

interface SmtpErrorLike {
  code?: unknown;
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

/** Per-recipient outcomes of a send that resolved (SMTP: RCPT-time rejections; LMTP: per-recipient DATA replies). */
export function outcomesFromInfo(recipients: readonly string[], info: SmtpInfoLike): RecipientDelivery[] {
  const rejected = indexRejections(info.rejectedErrors);
  const rejectedList = asStrings(info.rejected).map((r) => r.toLowerCase());
  const response = typeof info.response === 'string' ? info.response : undefined;
  // With LMTP `response` is the reply for the LAST recipient; it only speaks for the others when it is a 2xx.
  const finalCode = codeOf(response);
  const okReply = finalCode === undefined || statusForCode(finalCode) === 'delivered';
  return recipients.map((recipient): RecipientDelivery => {
    const key = recipient.toLowerCase();
    const error = rejected.get(key);
    if (error) return { ...error, recipient };
    if (rejectedList.includes(key))
      return { recipient, status: 'deferred', response: 'rejected without a reply code' };
    if (!okReply) return { recipient, status: 'delivered', code: 250 };
    return {
      recipient,
      status: 'delivered',
      code: finalCode ?? 250,
      ...(response !== undefined && { response }),
    };
  });
}

/** Per-recipient outcomes of a send that threw. */
export function outcomesFromError(recipients: readonly string[], error: unknown): RecipientDelivery[] {
  const e = (typeof error === 'object' && error !== null ? error : {}) as SmtpErrorLike;
  const perRecipient = indexRejections(e.rejectedErrors);
  const code = typeof e.responseCode === 'number' ? e.responseCode : undefined;
  const response =
    typeof e.response === 'string' ? e.response : typeof e.message === 'string' ? e.message : String(error);
  return recipients.map((recipient) => {
    const specific = perRecipient.get(recipient.toLowerCase());
    if (specific) return { ...specific, recipient };
    // MAIL FROM or DATA refused, or the connection failed: the same fate for everyone in the transaction.
    return { recipient, status: statusForCode(code), ...(code !== undefined && { code }), response };
  });
}

/** Connection-level failures are worth an immediate retry on a fresh connection; replies from the server are not. */
export function isConnectionError(error: unknown): boolean {
  const e = (typeof error === 'object' && error !== null ? error : {}) as SmtpErrorLike;
  if (typeof e.responseCode === 'number') return false;
  return [
    'ECONNECTION',
    'ETIMEDOUT',
    'ESOCKET',
    'ECONNRESET',
    'ECONNREFUSED',
    'EPIPE',
    'ETLS',
    'EPROTOCOL',
  ].includes(String(e.code));
}

function indexRejections(value: unknown): Map<string, RecipientDelivery> {
  const map = new Map<string, RecipientDelivery>();
  if (!Array.isArray(value)) return map;
  for (const item of value as SmtpErrorLike[]) {
    if (typeof item?.recipient !== 'string') continue;
    const code = typeof item.responseCode === 'number' ? item.responseCode : undefined;
    const response = typeof item.response === 'string' ? item.response : String(item.message ?? '');
    // A reply code in the 2xx range cannot be a rejection; treat a malformed one as temporary.
    const status = statusForCode(code) === 'delivered' ? 'deferred' : statusForCode(code);
    map.set(item.recipient.toLowerCase(), {
      recipient: item.recipient,
      status,
      ...(code !== undefined && { code }),
      response,
    });
  }
  return map;
}

function asStrings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function codeOf(response: string | undefined): number | undefined {
  const match = response?.match(/^(\d{3})/);
  return match ? Number(match[1]) : undefined;
}
