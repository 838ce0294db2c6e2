/**
 * Every bound on a size that a mail, or data someone wrote into DynamoDB, controls: the daemon's, and the one
 * `rules set` and `blocklist add` refuse beyond. Past a bound the mail is still delivered (with the verdict
 * headers); only the feature that needed the parse is skipped or cut to the bound, the outcome log line names the
 * limit, and `ses_worker_mail_limits_total{domain,limit}` counts it. The numbers sit far
 * above what real mail carries; ARCHITECTURE.md ("Bounded work") says why each one is where it is.
 */
export const MAIL_LIMITS = {
  /**
   * Envelope recipients of one domain handled per notification (each costs ledger writes on every retry). SES never
   * sends more: it accepts at most 100 recipients per message, the minimum RFC 5321 §4.5.3.1.8 asks of a server.
   */
  recipients: 100,
  /** Header fields scanned per header block; more and the block counts as incomplete. */
  headerFields: 10_000,
  /** Bytes of one header block; more and the block counts as incomplete. */
  headerBytes: 1024 * 1024,
  /** Candidate Message-IDs of a bounced message looked up in the outbound table (each gives up to 3 keys). */
  dsnIds: 10,
  /** Failed recipients read from one delivery report (only the first is used). */
  dsnRecipients: 100,
  /** Bytes of one message/delivery-status part read. */
  dsnStatusBytes: 256 * 1024,
  /** Multipart containers in the part of a mail the body walk reads; they bound its nesting depth. */
  mimeContainers: 100,
  /** Bytes of the top-level Content-Type / Content-Transfer-Encoding / MIME-Version field the body walk reads. */
  mimeFieldBytes: 8 * 1024,
  /** Bytes of one To or Cc field handed to the address parser. */
  addressFieldBytes: 32 * 1024,
  /**
   * Bytes of a one-mailbox field (From, Sender, Reply-To) handed to the address parser: a real one is a name and an
   * address, well under 1 KB; the parser costs tens of ms per MiB of hostile input.
   */
  mailboxFieldBytes: 4 * 1024,
  /** Addresses read from To and Cc together. */
  addresses: 1_000,
  /** Bytes of To and Cc fields handed to the address parser together (1,000 long addresses fit). */
  recipientFieldBytes: 64 * 1024,
  /** Characters of a Subject that are decoded (RFC 2047): the reply's is cut to 250, a forward's plain one is kept. */
  subjectChars: 16 * 1024,
  /** Bytes of a References or In-Reply-To value read for threading and bounce matching. */
  threadHeaderBytes: 64 * 1024,
  /** Blocked-sender patterns used per recipient. */
  blockedPatterns: 1_000,
  /** Characters of one blocked-sender pattern; a longer one is skipped (it would never match anything real). */
  patternChars: 256,
  /** Forward targets used per rule. */
  forwards: 20,
  /** Characters of one forward target: an RFC 5321 mailbox is at most 254; a longer one is skipped. */
  forwardTargetChars: 254,
  /** Characters of an out-of-office message used. */
  oooMessageChars: 64 * 1024,
} as const;

/** The stable names of the bounds, as they appear in logs and in the metric's `limit` label. */
export type MailLimit =
  | 'recipients'
  | 'header-fields'
  | 'header-bytes'
  | 'dsn-ids'
  | 'mime-depth'
  | 'mime-header'
  | 'address-list'
  | 'references'
  | 'blocked-patterns'
  | 'forwards'
  | 'forward-target'
  | 'ooo-message';

/** Limits that leave the header block incomplete: nothing that reads or edits headers may run then. */
export function headersIncomplete(limits: readonly MailLimit[] | undefined): boolean {
  return limits?.some((l) => l === 'header-fields' || l === 'header-bytes') ?? false;
}

/** Adds `limit` to `limits` once; returns the same array for chaining. */
export function noteLimit(limits: MailLimit[], limit: MailLimit): MailLimit[] {
  if (!limits.includes(limit)) limits.push(limit);
  return limits;
}
