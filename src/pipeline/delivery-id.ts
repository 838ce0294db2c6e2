import { createHash, createHmac } from 'node:crypto';
import { detectEol } from './verdicts.ts';

/**
 * The header every copy the worker hands to the mail server carries first: docker/mailserver/before.dovecot.sieve
 * discards a second copy with the same value in the same mailbox (RFC 7352 `duplicate`), which closes the window
 * between the mail server's "250 OK" and the ledger's record of it.
 */
export const DELIVERY_ID_HEADER = 'X-SES-Worker-Delivery-Id';

/**
 * The effect a copy belongs to. A delivery is one transaction for all recipients, so its id does not name them
 * (Dovecot keeps the ids per mailbox anyway); a forward and an auto-reply name the recipient whose rule made them,
 * so two recipients forwarding the same mail to one address still give that address two distinct forwards.
 */
export type DeliveryEffect =
  | { kind: 'deliver' }
  | { kind: 'forward'; recipient: string; target: string }
  | { kind: 'autoreply'; recipient: string };

/**
 * Stable across every retry of the same effect: derived from the SES message id, the replay generation (a forced
 * replay delivers again on purpose) and the effect, hashed so the value is short, ASCII and reveals nothing.
 *
 * Keyed with the deployment's secret (LOOP_MARKER_SECRET) when there is one: every copy shows its SES message id, so
 * an unkeyed hash lets anyone compute the id of another mailbox's copy and, if a copy carrying it reached that
 * mailbox first, have Dovecot discard the real one. The mail server also strips the field on every way in but the
 * worker's (user-patches.sh); the key makes the id useless to whoever has not seen it.
 */
export function deliveryId(
  sesMessageId: string,
  generation: number,
  effect: DeliveryEffect,
  secret = '',
): string {
  const parts = [sesMessageId, String(generation), effect.kind];
  if (effect.kind !== 'deliver') parts.push(effect.recipient.toLowerCase());
  if (effect.kind === 'forward') parts.push(effect.target.toLowerCase());
  const text = parts.join('\n');
  // The `delivery-id` label keeps these MACs apart from the loop marker's, made with the same secret.
  const digest =
    secret === ''
      ? createHash('sha256').update(text)
      : createHmac('sha256', secret).update(`delivery-id\n${text}`);
  return `${effect.kind}.${digest.digest('hex').slice(0, 32)}`;
}

/**
 * Prepends the delivery id to a mail, whose bytes follow unchanged; `fields` (e.g. the SES verdict headers, already
 * guarded against a mail starting with whitespace) go between the id and the mail. One copy of the mail is made.
 */
export function withDeliveryId(raw: Buffer, id: string, fields?: Buffer): Buffer {
  const eol = detectEol(raw);
  // A mail whose first line starts with whitespace would fold into our field: end our block there.
  const guard = fields === undefined && (raw[0] === 0x20 || raw[0] === 0x09) ? eol : '';
  const line = Buffer.from(`${DELIVERY_ID_HEADER}: ${id}${eol}${guard}`, 'ascii');
  return Buffer.concat(fields === undefined ? [line, raw] : [line, fields, raw]);
}
