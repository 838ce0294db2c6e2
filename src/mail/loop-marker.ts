import { createHmac, timingSafeEqual } from 'node:crypto';
import { systemClock, type Clock } from '../clock.ts';
import { LOOP_MARKER_HEADER } from './constants.ts';

/**
 * The loop marker says "this worker already handled this mail; run no rules on it". Anyone on the internet can
 * write that header, though, and a trusted one switches off forwarding, auto-replies and bounce rewriting. With
 * LOOP_MARKER_SECRET set, the value is signed and bound to where it was sent:
 *
 *   worker-<domain>; v=2; k=<forward|auto-reply>; id=<SES id>; o=<origin>; t=<target>; exp=<unix s>; sig=<mac>
 *
 * `o` is the hosted address whose rule produced the mail, `t` the address it was sent to (both as keyed hashes, so
 * the header reveals neither), `exp` when it stops counting, `sig` the first 32 base64url characters of
 * HMAC-SHA256(secret, everything before `; sig=`). An incoming marker is trusted only with a valid signature, an
 * unexpired time and a match with the mail's envelope recipients: for a forward, the origin or the target is among
 * them (our forward came back, possibly through the target's own forwarding); for an auto-reply, the target is
 * (everyone who writes to a mailbox gets its auto-reply, so its origin proves nothing). A marker copied into mail
 * to anyone else counts for nothing. Without a secret any marker counts, as in the original daemon.
 */
export interface LoopMarker {
  name: string;
  /** Value for a mail we generate. */
  valueFor(stamp: MarkerStamp): string;
  /** Whether one of the marker values on an incoming mail is trusted for a mail to `recipients`. */
  isTrusted(values: readonly string[], recipients: readonly string[]): boolean;
  /**
   * Our own still-valid markers on an incoming mail, carried on when it is forwarded, so a loop through two outside
   * forwarders still comes back with the marker of the hop that started it. Without a secret: none.
   */
  carried(values: readonly string[]): string[];
}

export interface MarkerStamp {
  kind: 'forward' | 'auto-reply';
  sesMessageId: string;
  /** The hosted address whose rule produced the mail. */
  origin: string;
  /** The address the mail is sent to. */
  target: string;
}

/** Long enough for an outside forwarder that queues mail for a while; short enough to limit replays. */
export const MARKER_LIFETIME_SECONDS = 3 * 86_400;
/** A mail carrying more marker fields than this is judged by the first ones only (each costs an HMAC). */
const MAX_VALUES_CHECKED = 32;
const MAX_CARRIED = 4;
const HASH_CHARS = 16;

const SIGNED =
  /^(?<payload>worker-[a-z0-9.-]{1,253}; v=2; k=(?<kind>forward|auto-reply); id=[A-Za-z0-9._-]{1,200}; o=(?<origin>[A-Za-z0-9_-]{16}); t=(?<target>[A-Za-z0-9_-]{16}); exp=(?<exp>\d{1,12})); sig=(?<sig>[A-Za-z0-9_-]{32})$/;

interface ParsedMarker {
  kind: 'forward' | 'auto-reply';
  origin: string;
  target: string;
  expiresAt: number;
}

export function createLoopMarker(domain: string, secret: string, clock: Clock = systemClock): LoopMarker {
  const mac = (text: string): string => createHmac('sha256', secret).update(text).digest('base64url');
  const addressHash = (address: string): string =>
    mac(`address:${address.trim().toLowerCase()}`).slice(0, HASH_CHARS);
  const nowSeconds = (): number => Math.floor(clock.now() / 1000);

  /** The marker's claims when its signature is ours and it has not expired. */
  function verified(value: string): ParsedMarker | undefined {
    const fields = SIGNED.exec(value.trim())?.groups;
    if (!fields?.payload || !fields.sig || !fields.origin || !fields.target) return undefined;
    const expected = Buffer.from(mac(fields.payload).slice(0, 32));
    const given = Buffer.from(fields.sig);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
    const expiresAt = Number(fields.exp);
    if (!(expiresAt > nowSeconds())) return undefined;
    const kind = fields.kind === 'forward' ? 'forward' : 'auto-reply';
    return { kind, origin: fields.origin, target: fields.target, expiresAt };
  }

  return {
    name: LOOP_MARKER_HEADER,
    valueFor(stamp) {
      if (secret === '') return `worker-${domain}; id=${stamp.sesMessageId}`;
      const payload =
        `worker-${domain}; v=2; k=${stamp.kind}; id=${stamp.sesMessageId}; o=${addressHash(stamp.origin)}; ` +
        `t=${addressHash(stamp.target)}; exp=${nowSeconds() + MARKER_LIFETIME_SECONDS}`;
      return `${payload}; sig=${mac(payload).slice(0, 32)}`;
    },
    isTrusted(values, recipients) {
      if (values.length === 0) return false;
      if (secret === '') return true;
      const hashes = new Set(recipients.map(addressHash));
      return values.slice(0, MAX_VALUES_CHECKED).some((value) => {
        const marker = verified(value);
        if (!marker) return false;
        return hashes.has(marker.target) || (marker.kind === 'forward' && hashes.has(marker.origin));
      });
    },
    carried(values) {
      if (secret === '') return [];
      return values
        .slice(0, MAX_VALUES_CHECKED)
        .filter((value) => verified(value) !== undefined)
        .map((value) => value.trim())
        .slice(0, MAX_CARRIED);
    },
  };
}
