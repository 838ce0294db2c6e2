import type { SESv2Client } from '@aws-sdk/client-sesv2';
import type { Clock } from '../clock.ts';
import { awsErrorName } from '../errors.ts';
import type { Logger } from '../log/logger.ts';

export interface ConfigurationSetOptions {
  clock: Clock;
  logger: Logger;
  /** Told when SES answers that the set does not exist (true), and when a send through it works again (false). */
  onMissing?: (missing: boolean) => void;
  /** How long sends go out without the set after SES said it does not exist, before it is tried again. */
  retryAfterMs?: number;
}

/**
 * Names SES_CONFIGURATION_SET on every SendEmail through `client` that names none, so SES publishes the send's
 * events to the set's destination and the outbound events consumer records the mail (bounces of forwards and
 * auto-replies are then rewritten like any other). It sits on the client, not in each send: every send path of
 * the domain threads (aws/ses-sender.ts) goes through this one client.
 *
 * A set that does not exist makes SES refuse the send (4xx): nothing was sent, so the mail goes out again
 * without the set — a forward must not be lost to the bounce feature — and the error is logged once; the set is
 * tried again after `retryAfterMs`.
 */
export function nameConfigurationSet(
  client: SESv2Client,
  name: string,
  options: ConfigurationSetOptions,
): void {
  const retryAfterMs = options.retryAfterMs ?? 10 * 60_000;
  let missingUntil = 0;
  let missing = false;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { ConfigurationSetName?: string };
      if (context.commandName !== 'SendEmailCommand' || input.ConfigurationSetName !== undefined)
        return next(args);
      if (options.clock.now() < missingUntil) return next(args);
      try {
        const output = await next({ ...args, input: { ...input, ConfigurationSetName: name } });
        if (missing) {
          missing = false;
          options.onMissing?.(false);
          options.logger.info(
            { configurationSet: name },
            'SES configuration set found again: sends are recorded',
          );
        }
        return output;
      } catch (error) {
        if (!configurationSetMissing(error)) throw error;
        missingUntil = options.clock.now() + retryAfterMs;
        if (!missing) {
          missing = true;
          options.onMissing?.(true);
          options.logger.error(
            { configurationSet: name, err: error instanceof Error ? error.message : String(error) },
            'SES_CONFIGURATION_SET does not exist in SES: forwards and auto-replies go out without it, are not ' +
              'recorded, and their bounces are delivered unchanged. Create it (the AWS app does) or set ' +
              'SES_CONFIGURATION_SET=none',
          );
        }
        return next(args);
      }
    },
    { step: 'initialize', name: 'unifiedWorkerConfigurationSet', override: true },
  );
}

/**
 * SES v2 answers a send through an unknown configuration set with NotFoundException (404); v1 names it
 * ConfigurationSetDoesNotExist. A raw send names no other resource that could be missing.
 */
export function configurationSetMissing(error: unknown): boolean {
  const name = awsErrorName(error);
  if (name === 'ConfigurationSetDoesNotExist' || name === 'ConfigurationSetDoesNotExistException')
    return true;
  const status = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
    ?.httpStatusCode;
  return name === 'NotFoundException' && (status === undefined || status < 500);
}
