import { SendEmailCommand, type SESv2Client } from '@aws-sdk/client-sesv2';
import { backoffMs, type Clock } from '../clock.ts';
import { WorkerError, awsError, awsErrorName, isTemporaryAwsError } from '../errors.ts';

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
  /** Returns SES's message id. */
  send(request: SesSendRequest): Promise<string>;
}

export interface SesSenderOptions {
  clock: Clock;
  /** Attempts on throttling / 5xx before the send counts as a temporary failure. */
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
          const name = awsErrorName(error);
          const temporary = !PERMANENT.has(name ?? '') && isTemporaryAwsError(error);
          if (temporary && attempt + 1 < attempts) {
            await options.clock.sleep(backoffMs(attempt, 200, 5_000));
            continue;
          }
          throw awsError('SES_ERROR', 'SES SendEmail', error, temporary);
        }
      }
    },
  };
}
