import type { MailLimit } from './mail-limits.ts';

/**
 * What the pipeline knows about a message after parsing. Built by `pipeline/parse.ts` from mailparser when it
 * succeeds, and from a byte-level header scan when it does not — so every field must be optional or defaultable.
 * Delivery never uses this view: it always sends the original bytes.
 */
export interface MailAddress {
  /** Lower-cased `local@domain`, or '' for an empty/unparseable address. */
  address: string;
  /** Decoded display name ('' when absent). */
  name: string;
}

export interface MailView {
  /** Unfolded header values keyed by lower-cased header name, in message order. RFC 2047 words are NOT decoded. */
  headers: ReadonlyMap<string, readonly string[]>;
  /** `Message-ID` value including angle brackets, if present. */
  messageId?: string;
  /** Decoded subject ('' when absent). */
  subject: string;
  from?: MailAddress;
  /** The first mailbox of `Sender` (who sent it on the author's behalf): a display name for the auto-reply. */
  sender?: MailAddress;
  to: MailAddress[];
  cc: MailAddress[];
  /** `In-Reply-To` message id (with angle brackets) if present. */
  inReplyTo?: string;
  /** Message ids listed in `References`, each with angle brackets. */
  references: string[];
  /** Plain-text body (decoded), if any. */
  text?: string;
  /** HTML body (decoded), if any. */
  html?: string;
  /** Top-level MIME type, lower-cased, e.g. `multipart/report`. */
  contentType: string;
  /** Length of the header block in the raw mail: where the body starts (absent in views made by hand). */
  headerBytes?: number;
  /** Why the full MIME parse failed or was skipped; the view then holds headers only. */
  parseError?: string;
  /** Bounds this mail went past while the view was built (absent when none); see mail-limits.ts. */
  limits?: readonly MailLimit[];
}
