/** The settings themselves: valid (or doctor would not have started), and the two that deserve a second look. */
import type { Config } from '../../config/config.ts';
import { plural } from '../output.ts';
import { ok, warn, type CheckResult } from './check.ts';

/** A loop-marker key shorter than this can be guessed. */
const MIN_SECRET_LENGTH = 16;

export function settingsChecks(config: Config): CheckResult[] {
  const checks = [
    ok(
      'settings',
      `valid: ${plural(config.domains.length, 'domain')} (${config.domains.join(', ')}), ` +
        `delivery ${config.smtp.protocol.toUpperCase()} to ${config.smtp.host}, region ${config.aws.region}`,
    ),
  ];
  if (config.smtp.protocol === 'lmtp') {
    // Doctor cannot count replicas; it can say what LMTP asks of them (README, "Exactly once").
    checks.push(
      warn(
        'DELIVERY_PROTOCOL',
        'lmtp: a second copy is recognised in the mailbox only while one worker process delivers to it ' +
          "(Dovecot's per-user limit does not serialise two workers' connections)",
        'run one replica, or deliver through Postfix with DELIVERY_PROTOCOL=smtp',
      ),
    );
  }
  checks.push(secretCheck(config.inbound.loopMarkerSecret));
  return checks;
}

function secretCheck(secret: string): CheckResult {
  const check = 'LOOP_MARKER_SECRET';
  if (secret === '') {
    return warn(
      check,
      'not set: anyone can put X-SES-Worker-Processed on a mail and so switch off forwards and auto-replies for it',
      'set LOOP_MARKER_SECRET to a long random string, the same on every replica (e.g. openssl rand -hex 32)',
    );
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    return warn(
      check,
      `only ${secret.length} characters: a short key can be guessed`,
      `use at least ${MIN_SECRET_LENGTH} random characters (e.g. openssl rand -hex 32)`,
    );
  }
  return ok(check, 'set: forged loop markers are ignored');
}
