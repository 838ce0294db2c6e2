import { createHash } from 'node:crypto';
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level: string;
  redactAddresses: boolean;
  /** Tests pass an in-memory stream; production writes JSON lines to stdout. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/**
 * Mail addresses are personal data; with LOG_REDACT_ADDRESSES they are logged as `<hash>@domain`, which keeps
 * logs correlatable (same address, same hash) and keeps the domain for routing questions.
 */
export function addressRedactor(enabled: boolean): (address: string) => string {
  if (!enabled) return (address) => address;
  return (address) => {
    const at = address.lastIndexOf('@');
    const local = at >= 0 ? address.slice(0, at) : address;
    const domain = at >= 0 ? address.slice(at + 1) : '';
    const hash = createHash('sha256').update(local.toLowerCase()).digest('hex').slice(0, 10);
    return domain ? `${hash}@${domain}` : hash;
  };
}
