/**
 * How long an AWS call may take, in one place: every client the daemon and the commands build gets these, and a long
 * poll gets its wait on top. A call past its deadline fails as a timeout; the SDK retries it where a retry is safe
 * (every client but SES's, whose sends are never repeated blindly: aws/ses-sender.ts).
 */
export interface AwsDeadlines {
  /** TCP connect (and TLS) to the endpoint. */
  connectMs: number;
  /** From a request's start to its answer's headers, for every call but a long poll. */
  callMs: number;
  /**
   * A connection on which no byte moves either way for this long is given up: a large S3 body or SES upload has no
   * total deadline, only this one.
   */
  idleMs: number;
}

export const DEFAULT_AWS_DEADLINES: AwsDeadlines = { connectMs: 3_000, callMs: 10_000, idleMs: 30_000 };

/** SQS answers a long poll after at most its wait: the deadline is the wait plus an ordinary call's. */
export function longPollDeadlineMs(waitTimeSeconds: number, deadlines: AwsDeadlines): number {
  return waitTimeSeconds * 1000 + deadlines.callMs;
}

/** The deadlines from the two settings; the connect deadline is never longer than a whole call's. */
export function awsDeadlines(callMs: number, idleMs: number): AwsDeadlines {
  return { connectMs: Math.min(DEFAULT_AWS_DEADLINES.connectMs, callMs), callMs, idleMs };
}

/**
 * An upload (an SES send of a large mail) needs time for its body before the answer can start: the call's deadline
 * plus the body at a slow link's pace. Silence is still caught by the idle deadline.
 */
export function uploadDeadlineMs(bytes: number, deadlines: AwsDeadlines): number {
  return deadlines.callMs + Math.ceil(bytes / SLOW_LINK_BYTES_PER_MS);
}

/** 100 KB/s: a 40 MB SES request (53 MB after base64) gets about nine minutes. */
const SLOW_LINK_BYTES_PER_MS = 100;
