/** Header we add to every mail we generate or forward; mail carrying a valid one never triggers rules again. */
export const LOOP_MARKER_HEADER = 'X-SES-Worker-Processed';

/** SES sends bounce notifications (DSNs) from this address; compared case-insensitively. */
export const SES_MAILER_DAEMON = 'mailer-daemon@amazonses.com';
