/**
 * A MIME message composed with nodemailer's MailComposer: the test mail `inject` sends when it is given no file,
 * and the mail `npm run local:send` and the tests build.
 */
import MailComposer from 'nodemailer/lib/mail-composer/index.js';

/** An attachment for {@link buildMime}. */
export interface MimeAttachment {
  filename: string;
  content: Buffer | string;
  contentType?: string;
}

/** Input of {@link buildMime}. */
export interface MimeInput {
  from: string;
  to: string | string[];
  cc?: string | string[];
  replyTo?: string;
  subject: string;
  text?: string;
  html?: string;
  /** Extra headers, added as given (e.g. `Auto-Submitted`, `List-Id`, loop markers). */
  headers?: Record<string, string>;
  /** Message-ID with or without angle brackets (MailComposer adds them); generated when absent. */
  messageId?: string;
  inReplyTo?: string;
  references?: string | string[];
  date?: Date;
  attachments?: MimeAttachment[];
}

/**
 * Builds a MIME message with nodemailer's MailComposer, with CRLF line endings throughout (as on the wire). Async
 * because MailComposer streams its output.
 */
export async function buildMime(input: MimeInput): Promise<Buffer> {
  const composer = new MailComposer({
    from: input.from,
    to: input.to,
    ...(input.cc !== undefined ? { cc: input.cc } : {}),
    ...(input.replyTo !== undefined ? { replyTo: input.replyTo } : {}),
    subject: input.subject,
    ...(input.text !== undefined ? { text: input.text } : {}),
    ...(input.html !== undefined ? { html: input.html } : {}),
    ...(input.headers !== undefined ? { headers: input.headers } : {}),
    ...(input.messageId !== undefined ? { messageId: input.messageId } : {}),
    ...(input.inReplyTo !== undefined ? { inReplyTo: input.inReplyTo } : {}),
    ...(input.references !== undefined ? { references: input.references } : {}),
    date: input.date ?? new Date(),
    ...(input.attachments !== undefined
      ? {
          attachments: input.attachments.map((a) => ({
            filename: a.filename,
            content: a.content,
            ...(a.contentType !== undefined ? { contentType: a.contentType } : {}),
          })),
        }
      : {}),
  });
  const built = await composer.compile().build();
  // MailComposer leaves line breaks inside text/html content as given; SMTP transports would fix bare LFs on the
  // wire, so do the same here. latin1 maps bytes 1:1, so 8-bit content survives the round trip.
  return Buffer.from(built.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}
