import type { Config } from '../config/config.ts';

/** Settings that work but weaken a guarantee: said once, at start-up, by the coordinator. */
export function configWarnings(config: Config): string[] {
  const warnings: string[] = [];
  if (!config.inbound.loopMarkerSecret)
    warnings.push(
      'LOOP_MARKER_SECRET is not set: anyone can add X-SES-Worker-Processed to a mail and so switch off rules for ' +
        'it, and the mailbox delivery ids are an unkeyed hash of the SES message id, which anyone who sees a copy can ' +
        'compute for the other copies of that mail',
    );
  if (!config.tables.idempotency)
    warnings.push(
      'IDEMPOTENCY_TABLE=none: the exactly-once ledger is off; a retried message may deliver again to recipients ' +
        'that already got it, and a forward or auto-reply that fails temporarily is recorded failed, not retried',
    );
  if (config.shutdownGraceSeconds <= config.poll.waitTimeSeconds)
    warnings.push(
      `SHUTDOWN_GRACE_SECONDS (${config.shutdownGraceSeconds}) is not above WAIT_TIME_SECONDS ` +
        `(${config.poll.waitTimeSeconds}): a stop may cut the last long poll short, and what it received then waits ` +
        'for its visibility timeout',
    );
  return warnings;
}
