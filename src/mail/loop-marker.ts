import { createHmac, timingSafeEqual } from 'node:crypto';
import { LOOP_MARKER_HEADER } from './constants.ts';

/**
 * The loop marker says "this worker already handled this mail; run no rules on it". Anyone on the internet can
 * write that header, though, and a forged one would switch off a victim's forwarding and auto-reply. With
 * LOOP_MARKER_SECRET set, the value carries an HMAC over the SES message id it was made for, and only a valid
 * signature counts; without a secret any marker counts (the original daemon's behaviour).
 */
export interface LoopMarker {
  name: string;
  /** Value for a mail we generate from the SES message `sesMessageId`. */
  valueFor(sesMessageId: string): string;
  /** Whether any of the header values found on an incoming mail is a marker we trust. */
  isTrusted(values: readonly string[]): boolean;
}

export function createLoopMarker(domain: string, secret: string): LoopMarker {
  const sign = (payload: string): string =>
    createHmac('sha256', secret).update(payload).digest('base64url').slice(0, 32);
  return {
    name: LOOP_MARKER_HEADER,
    valueFor(sesMessageId) {
      const payload = `worker-${domain}; id=${sesMessageId}`;
      return secret === '' ? payload : `${payload}; sig=${sign(payload)}`;
    },
    isTrusted(values) {
      if (values.length === 0) return false;
      if (secret === '') return true;
      return values.some((value) => {
        const match = /^(.*); sig=([A-Za-z0-9_-]{32})\s*$/.exec(value.trim());
        if (!match?.[1] || !match[2]) return false;
        const expected = Buffer.from(sign(match[1]));
        const given = Buffer.from(match[2]);
        return expected.length === given.length && timingSafeEqual(expected, given);
      });
    },
  };
}
