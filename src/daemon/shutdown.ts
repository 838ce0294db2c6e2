import type { Logger } from '../log/logger.ts';

/** Exit codes of the daemon process. */
export const EXIT_CODES = {
  /** Stopped by a signal after a complete drain. */
  stopped: 0,
  /** The drain itself failed. */
  shutdownFailed: 1,
  /** An unexpected exception or rejection in the main thread (after a drain, or at once on a second one). */
  crashed: 70,
  /** A second signal: exit at once, unfinished messages reappear after their visibility timeout. */
  secondSignal: 130,
} as const;

/** The part of `process` the handlers use, so tests can drive them with an EventEmitter. */
export interface ProcessEvents {
  on(event: 'SIGTERM' | 'SIGINT', listener: (signal: NodeJS.Signals) => void): unknown;
  on(event: 'uncaughtException', listener: (error: Error) => void): unknown;
  on(event: 'unhandledRejection', listener: (reason: unknown) => void): unknown;
  exit(code: number): void;
}

export interface ShutdownOptions {
  logger: Logger;
  /** The graceful drain; the same for a signal and for a crash. */
  stop: () => Promise<void>;
  /** Install SIGTERM/SIGINT handlers too (default true). */
  signals?: boolean;
  process?: ProcessEvents;
  /** How long to wait for the log to flush before an immediate exit. */
  flushTimeoutMs?: number;
}

/**
 * The main thread's last line of defence, and its signal handling. A signal or an unexpected exception/rejection
 * starts the one graceful drain (in-flight mail finishes, nothing new is received) and then exits — 0 after a
 * signal, 70 after a crash, so a supervisor restarts it. Never an abrupt exit mid-delivery, except on a second
 * signal or a second crash, which exit at once: unfinished messages were never deleted and reappear in SQS.
 * (A poller thread's own crash is not seen here: it ends that thread only, and the supervisor restarts it.)
 */
export function installShutdownHandlers(options: ShutdownOptions): void {
  const proc = options.process ?? process;
  const { logger } = options;
  let draining = false;
  let signals = 0;
  let crashes = 0;
  let exitCode: number = EXIT_CODES.stopped;
  let exiting = false;

  const exitAfterFlush = (code: number): void => {
    if (exiting) return;
    exiting = true;
    let exited = false;
    const exit = () => {
      if (!exited) proc.exit(code);
      exited = true;
    };
    // The log line saying why must reach stdout first, but a stuck destination must not keep us alive.
    setTimeout(exit, options.flushTimeoutMs ?? 500).unref();
    logger.flush(exit);
  };

  const drain = (): void => {
    if (draining) return;
    draining = true;
    void options.stop().then(
      () => exitAfterFlush(exitCode),
      (error: unknown) => {
        logger.error({ err: errorFields(error) }, 'error during shutdown');
        exitAfterFlush(EXIT_CODES.shutdownFailed);
      },
    );
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      exitAfterFlush(EXIT_CODES.secondSignal);
      return;
    }
    logger.info({ signal }, 'signal received');
    drain();
  };

  const onCrash = (kind: 'uncaughtException' | 'unhandledRejection', error: unknown): void => {
    crashes += 1;
    exitCode = EXIT_CODES.crashed;
    if (crashes > 1) {
      logger.fatal({ err: errorFields(error), kind }, 'another unexpected error while draining: exiting now');
      exitAfterFlush(EXIT_CODES.crashed);
      return;
    }
    logger.fatal(
      { err: errorFields(error), kind },
      'unexpected error in the main thread: draining in-flight mail, then exiting to be restarted',
    );
    drain();
  };

  if (options.signals !== false) {
    proc.on('SIGTERM', onSignal);
    proc.on('SIGINT', onSignal);
  }
  proc.on('uncaughtException', (error) => onCrash('uncaughtException', error));
  proc.on('unhandledRejection', (reason) => onCrash('unhandledRejection', reason));
}

function errorFields(error: unknown): { message: string; stack?: string } {
  if (error instanceof Error) return { message: error.message, ...(error.stack && { stack: error.stack }) };
  return { message: String(error) };
}
