import { SendEmailCommand, type SESv2Client } from '@aws-sdk/client-sesv2';
import { backoffMs, type Clock } from '../clock.ts';
import { WorkerError, awsError, awsErrorName } from '../errors.ts';

/**
 * SES v2's raw send takes 40 MB — what SES accepts inbound — where v1 SendRawEmail stops at 10 MB; every mail SES
 * accepted for us must be forwardable, so forwards and auto-replies use v2.
 */
export const SES_MAX_RAW_BYTES = 40 * 1024 * 1024;

export interface SesSendRequest {
  /** Envelope sender / From identity; must be verified in SES. */
  from: string;
  destinations: readonly string[];
  raw: Buffer;
}

export interface MailSender {
  /**
   * Returns SES's message id. Throws a WorkerError: temporary when SES provably did not take the mail (worth
   * retrying), `SES_OUTCOME_UNKNOWN` when it may have (never to be resent), permanent otherwise.
   */
  send(request: SesSendRequest): Promise<string>;
}

export interface SesSenderOptions {
  clock: Clock;
  /** Attempts while SES answers that it did not take the mail (throttling, 503, no connection). */
  attempts?: number;
}

const PERMANENT = new Set([
  'MessageRejected',
  'MailFromDomainNotVerifiedException',
  'BadRequestException',
  'AccountSuspendedException',
  'SendingPausedException',
  'NotFoundException',
]);

const THROTTLED = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'LimitExceededException',
  'ServiceUnavailable',
  'ServiceUnavailableException',
]);

/** The connection was never made, so the request never reached SES. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * What an SES failure says about the mail: `not-sent` (SES refused to take it now: retrying is safe), `rejected`
 * (a verdict: never retried), or `unknown` (a 500, a timeout or reset after the request went out: SES may have
 * sent it, and a second send would be a second mail).
 */
export type SesFailure = 'not-sent' | 'rejected' | 'unknown';

export function sesFailureKind(error: unknown): SesFailure {
  const e = (typeof error === 'object' && error !== null ? error : {}) as {
    code?: unknown;
    message?: unknown;
    $metadata?: { httpStatusCode?: number };
  };
  const name = awsErrorName(error) ?? '';
  const status = e.$metadata?.httpStatusCode;
  if (THROTTLED.has(name) || status === 429 || status === 503) return 'not-sent';
  if (PERMANENT.has(name)) return 'rejected';
  if (status !== undefined) return status >= 500 ? 'unknown' : 'rejected';
  if (NOT_CONNECTED.has(String(e.code))) return 'not-sent';
  // @smithy/node-http-handler gives its connect timeout no code of its own, only this wording (and the name
  // TimeoutError, which a socket timeout after the request was sent shares).
  if (typeof e.message === 'string' && e.message.includes('did not establish a connection'))
    return 'not-sent';
  return 'unknown';
}

/**
 * The SDK client must be built with `maxAttempts: 1` (aws/clients.ts): a send is repeated only here, and only when
 * SES provably did not take it.
 */
export function createSesSender(ses: SESv2Client, options: SesSenderOptions): MailSender {
  const attempts = options.attempts ?? 3;
  return {
    async send({ from, destinations, raw }) {
      // SES measures the limit after base64 encoding of the request.
      const encoded = Math.ceil(raw.length / 3) * 4;
      if (encoded > SES_MAX_RAW_BYTES) {
        throw new WorkerError(
          'SES_MESSAGE_TOO_LARGE',
          `mail of ${raw.length} bytes is over SES's 40 MB raw send limit`,
          { temporary: false },
        );
      }
      for (let attempt = 0; ; attempt++) {
        try {
          const result = await ses.send(
            new SendEmailCommand({
              FromEmailAddress: from,
              Destination: { ToAddresses: [...destinations] },
              Content: { Raw: { Data: raw } },
            }),
          );
          return result.MessageId ?? '';
        } catch (error) {
          const kind = sesFailureKind(error);
          if (kind === 'not-sent' && attempt + 1 < attempts) {
            await options.clock.sleep(backoffMs(attempt, 200, 5_000));
            continue;
          }
          if (kind === 'unknown') {
            throw new WorkerError(
              'SES_OUTCOME_UNKNOWN',
              `SES SendEmail outcome unknown, not resent (SES may have sent it): ${describe(error)}`,
              {
                temporary: false,
                ...(awsErrorName(error) && { awsCode: awsErrorName(error) }),
                cause: error,
              },
            );
          }
          throw awsError('SES_ERROR', 'SES SendEmail', error, kind === 'not-sent');
        }
      }
    },
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
