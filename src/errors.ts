/**
 * One catalogue for every failure the worker reports. Each error says whether retrying can help (`temporary`)
 * and carries the SMTP reply code or AWS error name it came from, so callers decide on data, not on messages.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'NOTIFICATION_INVALID'
  | 'S3_OBJECT_MISSING'
  | 'S3_ERROR'
  | 'SQS_ERROR'
  | 'DYNAMODB_ERROR'
  | 'SES_ERROR'
  | 'SES_MESSAGE_TOO_LARGE'
  /** SES may or may not have sent the mail (a 500, a timeout after the request went out): never resent. */
  | 'SES_OUTCOME_UNKNOWN'
  /** SES refused to send because of the account or its setup (paused, not verified, access denied): not sent. */
  | 'SES_DEPLOYMENT'
  | 'SMTP_TEMPORARY'
  | 'SMTP_PERMANENT'
  | 'SMTP_CONNECTION'
  | 'MAIL_TOO_LARGE'
  | 'HEADER_INJECTION'
  /** A mail-controlled size past its bound (src/mail/mail-limits.ts): the feature that needed it is skipped. */
  | 'MAIL_LIMIT'
  | 'SHUTTING_DOWN'
  /** A bug: something threw that should have returned an outcome. */
  | 'INTERNAL';

export interface WorkerErrorOptions {
  temporary: boolean;
  /** Three-digit SMTP reply code, when the error came from a mail server. */
  responseCode?: number;
  /** AWS error name (e.g. `ThrottlingException`), when the error came from an AWS call. */
  awsCode?: string;
  cause?: unknown;
}

/** A WorkerError as plain data. */
export interface WorkerErrorJson {
  code: ErrorCode;
  message: string;
  temporary: boolean;
  responseCode?: number;
  awsCode?: string;
}

export class WorkerError extends Error {
  readonly code: ErrorCode;
  readonly temporary: boolean;
  readonly responseCode?: number;
  readonly awsCode?: string;

  constructor(code: ErrorCode, message: string, options: WorkerErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WorkerError';
    this.code = code;
    this.temporary = options.temporary;
    if (options.responseCode !== undefined) this.responseCode = options.responseCode;
    if (options.awsCode !== undefined) this.awsCode = options.awsCode;
  }

  /** Plain-data form, safe to log or to post across threads. */
  toJSON(): WorkerErrorJson {
    return {
      code: this.code,
      message: this.message,
      temporary: this.temporary,
      ...(this.responseCode !== undefined && { responseCode: this.responseCode }),
      ...(this.awsCode !== undefined && { awsCode: this.awsCode }),
    };
  }
}

/** Configuration problems name the setting; the entry point prints this one line and exits non-zero. */
export class ConfigError extends WorkerError {
  readonly setting: string;
  constructor(setting: string, reason: string) {
    super('CONFIG_INVALID', `invalid configuration: ${setting}: ${reason}`, { temporary: false });
    this.name = 'ConfigError';
    this.setting = setting;
  }
}

/** The text of anything thrown, for a log line or a reason. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Anything thrown as a WorkerError: a WorkerError as it is; anything else is a bug or an unexpected failure of
 * `what`, temporary (retrying cannot make it worse).
 */
export function toWorkerError(error: unknown, what = 'unexpected'): WorkerError {
  if (error instanceof WorkerError) return error;
  return new WorkerError('INTERNAL', `${what}: ${errorMessage(error)}`, { temporary: true, cause: error });
}

/** The HTTP status an AWS SDK v3 error carries (`$metadata.httpStatusCode`), when it got an answer. */
export function awsHttpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const status = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** AWS SDK v3 errors carry `name` and `$metadata.httpStatusCode`; throttling and 5xx are worth retrying. */
export function isTemporaryAwsError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return true;
  const e = error as { name?: string; $retryable?: unknown };
  if (e.$retryable) return true;
  const status = awsHttpStatus(error);
  if (status !== undefined) return status >= 500 || status === 429 || THROTTLING_NAMES.has(e.name ?? '');
  // No HTTP status: a network-level failure (ECONNREFUSED, timeout) — temporary.
  return true;
}

const THROTTLING_NAMES = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'RequestThrottled',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'SlowDown',
]);

/**
 * Wraps an AWS SDK failure as a WorkerError of `code`, keeping the SDK's error name; retryable unless the caller
 * knows better (`temporary`). A WorkerError passes through unchanged.
 */
export function awsError(
  code: ErrorCode,
  operation: string,
  error: unknown,
  temporary: boolean = isTemporaryAwsError(error),
): WorkerError {
  if (error instanceof WorkerError) return error;
  const name = awsErrorName(error);
  return new WorkerError(code, `${operation} failed: ${errorMessage(error)}`, {
    temporary,
    ...(name !== undefined && { awsCode: name }),
    cause: error,
  });
}

export function awsErrorName(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'name' in error && typeof error.name === 'string') {
    return error.name;
  }
  return undefined;
}
