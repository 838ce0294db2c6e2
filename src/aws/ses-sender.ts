import { SendEmailCommand, type SESv2Client } from '@aws-sdk/client-sesv2';
import { backoffMs, type Clock } from '../clock.ts';
import { WorkerError, awsError, awsErrorName, awsHttpStatus, errorMessage } from '../errors.ts';
import { unpaced, type PermitOptions, type SendPacer } from '../flow-control/send-pacer.ts';
import { DEFAULT_AWS_DEADLINES, uploadDeadlineMs, type AwsDeadlines } from './deadlines.ts';

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
  /** Waiting for a pacing permit: told when it starts and ends; aborted by the signal (shutdown). */
  permit?: PermitOptions;
  /**
   * Runs once, with the first permit in hand, just before the first SendEmail (the ledger's mark that the send
   * starts); when it throws, nothing is sent and its error is the send's.
   */
  beforeSend?: () => Promise<void>;
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
  /** Attempts while SES answers that it did not take the mail (503, no connection). */
  attempts?: number;
  /** The process-wide pacer of SES sends; default none. */
  pacer?: SendPacer;
  /**
   * How long a send keeps backing off while SES throttles its rate (the pacer slows down meanwhile) before it
   * counts as a temporary failure of the effect, retried with the message.
   */
  throttleBudgetMs?: number;
  /** The AWS deadlines: a send's scales with its size (an upload), silence is caught by the idle deadline. */
  deadlines?: AwsDeadlines;
  /**
   * SES_CONFIGURATION_SET, named on every send so SES publishes its events and the outbound events consumer records
   * the mail (a bounce of a forward is then rewritten like any other). A set SES does not know is a deployment fault.
   */
  configurationSet?: string;
}

/**
 * SES refusing because of the account or its setup, not the mail: paused or suspended sending, a MAIL FROM or identity
 * not verified, a missing configuration set, access denied. Someone fixes it and the same mail then goes out.
 */
const DEPLOYMENT = new Set([
  'SendingPausedException',
  'AccountSuspendedException',
  'MailFromDomainNotVerifiedException',
  'NotFoundException',
  'ConfigurationSetDoesNotExistException',
  'AccessDeniedException',
  'AccessDenied',
]);

/** A verdict on the request itself: a bad parameter, or the content (MessageRejected). */
const REJECTED = new Set(['MessageRejected', 'BadRequestException']);

const THROTTLED = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'LimitExceededException',
  'ServiceUnavailable',
  'ServiceUnavailableException',
]);

/**
 * "Maximum sending rate exceeded" passes in a second: waited out here. "Daily message quota exceeded" (or a
 * LimitExceeded) does not pass until SES's 24-hour window moves: the effect is deferred with the message.
 */
function quotaExceeded(error: unknown): boolean {
  const message = error instanceof Error ? error.message : '';
  return awsErrorName(error) === 'LimitExceededException' || /daily|quota/i.test(message);
}

function rateThrottled(error: unknown): boolean {
  return ['ThrottlingException', 'Throttling', 'TooManyRequestsException'].includes(
    awsErrorName(error) ?? '',
  );
}

/**
 * SES answers a send from an identity it has not verified with MessageRejected "Email address is not verified" (or
 * "…identities failed the check…"): the setup, not the content.
 */
function identityNotVerified(name: string, message: unknown): boolean {
  return (
    name === 'MessageRejected' &&
    typeof message === 'string' &&
    /not verified|failed the check/i.test(message)
  );
}

/** The connection was never made, so the request never reached SES. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * What an SES failure says about the mail: `not-sent` (SES refused to take it now: retrying is safe), `deployment`
 * (SES refused because of the account or its setup: not sent, retried once that is fixed), `rejected` (a verdict on
 * this mail: never retried), or `unknown` (a 500, a timeout or reset after the request went out: SES may have sent
 * it, and a second send would be a second mail).
 */
export type SesFailure = 'not-sent' | 'deployment' | 'rejected' | 'unknown';

export function sesFailureKind(error: unknown): SesFailure {
  const e = (typeof error === 'object' && error !== null ? error : {}) as {
    code?: unknown;
    message?: unknown;
  };
  const name = awsErrorName(error) ?? '';
  const status = awsHttpStatus(error);
  if (THROTTLED.has(name) || status === 429 || status === 503) return 'not-sent';
  if (DEPLOYMENT.has(name) || status === 403 || identityNotVerified(name, e.message)) return 'deployment';
  if (REJECTED.has(name)) return 'rejected';
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
  const pacer = options.pacer ?? unpaced;
  const throttleBudgetMs = options.throttleBudgetMs ?? 120_000;
  const deadlines = options.deadlines ?? DEFAULT_AWS_DEADLINES;
  return {
    async send({ from, destinations, raw, permit, beforeSend }) {
      // SES measures the limit after base64 encoding of the request.
      const encoded = Math.ceil(raw.length / 3) * 4;
      if (encoded > SES_MAX_RAW_BYTES) {
        throw new WorkerError(
          'SES_MESSAGE_TOO_LARGE',
          `mail of ${raw.length} bytes is over SES's 40 MB raw send limit`,
          { temporary: false },
        );
      }
      const started = options.clock.now();
      let failures = 0;
      for (let attempt = 0; ; attempt++) {
        await pacer.acquire(permit);
        if (attempt === 0) await beforeSend?.();
        try {
          const result = await ses.send(
            new SendEmailCommand({
              FromEmailAddress: from,
              Destination: { ToAddresses: [...destinations] },
              Content: { Raw: { Data: raw } },
              ...(options.configurationSet && { ConfigurationSetName: options.configurationSet }),
            }),
            { requestTimeout: uploadDeadlineMs(encoded, deadlines) },
          );
          return result.MessageId ?? '';
        } catch (error) {
          const kind = sesFailureKind(error);
          if (kind === 'not-sent' && !quotaExceeded(error)) {
            if (rateThrottled(error)) {
              // Throttled although paced: slow the pacer down for everyone and wait for a later permit.
              pacer.throttled();
              if (options.clock.now() - started < throttleBudgetMs) {
                await options.clock.sleep(backoffMs(Math.min(attempt, 5), 200, 5_000));
                continue;
              }
            } else if (++failures < attempts) {
              await options.clock.sleep(backoffMs(failures - 1, 200, 5_000));
              continue;
            }
          }
          if (kind === 'deployment') {
            throw new WorkerError(
              'SES_DEPLOYMENT',
              `SES refuses to send for this account: ${errorMessage(error)}`,
              {
                temporary: true,
                ...(awsErrorName(error) && { awsCode: awsErrorName(error) }),
                cause: error,
              },
            );
          }
          if (kind === 'unknown') {
            throw new WorkerError(
              'SES_OUTCOME_UNKNOWN',
              `SES SendEmail outcome unknown, not resent (SES may have sent it): ${errorMessage(error)}`,
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
