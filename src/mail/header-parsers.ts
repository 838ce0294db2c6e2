/**
 * The library parsers the worker hands header text to: nodemailer's addressparser and libmime's RFC 2047 decoder.
 * Both are linear, but at tens to hundreds of milliseconds per MiB of hostile input, so every caller hands them a
 * bounded part of a field (MAIL_LIMITS), never a whole header block. They sit in one object so that the hostile test
 * suite can count what they are given (node:test's `mock.method`) rather than time it.
 */
import libmime from 'libmime';
import addressparser from 'nodemailer/lib/addressparser';

/** One mailbox as addressparser reads it: either value '' when the text did not carry it. */
export interface ParsedMailbox {
  name: string;
  address: string;
}

export const headerParsers = {
  /** Every mailbox of an address list, groups flattened. Never throws. */
  mailboxes(text: string): ParsedMailbox[] {
    try {
      return addressparser(text, { flatten: true }).flatMap((entry) =>
        'address' in entry && typeof entry.address === 'string'
          ? [{ name: entry.name ?? '', address: entry.address }]
          : [],
      );
    } catch {
      return [];
    }
  },

  /** Encoded words (RFC 2047) decoded; the text as given when they cannot be. */
  decodeWords(text: string): string {
    try {
      return libmime.decodeWords(text);
    } catch {
      return text;
    }
  },
};
