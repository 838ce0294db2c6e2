import type { Logger } from '../log/logger.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { MailDelivery } from '../smtp/transport.ts';

/** Re-check of the mail server once it answered. */
const VERIFY_INTERVAL_MS = 30_000;
/** Re-check while it has not answered (startup, outage): readiness should follow a recovery within seconds. */
const VERIFY_RETRY_MS = 2_000;

/**
 * Whether the mail server answers, for /ready. `verify()` opens a connection of its own, outside the pool, so it
 * only runs while the server has not proven itself through deliveries: under load the pool alone stays within
 * SMTP_MAX_CONNECTIONS. A delivery nobody answered triggers an immediate re-check.
 */
export class MailServerMonitor {
  private okNow = false;
  private lastAnswerAt = 0;
  private verifying = false;
  private timer: NodeJS.Timeout | undefined;
  private dueAt = 0;
  private stopped = false;

  constructor(
    private readonly delivery: MailDelivery,
    private readonly logger: Logger,
    private readonly host: string,
    private readonly onChange: (ok: boolean) => void = () => undefined,
  ) {}

  get ok(): boolean {
    return this.okNow;
  }

  start(): void {
    void this.verify();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Learns from a delivery's outcomes: any reply code proves the server is there. */
  noteDelivery(results: readonly RecipientDelivery[]): void {
    if (results.some((r) => r.code !== undefined)) {
      this.lastAnswerAt = Date.now();
      this.set(true);
    } else if (results.length > 0) {
      // Nobody answered (refused, timed out): look again soon instead of reporting ready for up to 30 s.
      this.lastAnswerAt = 0;
      this.schedule(0);
    }
  }

  private set(ok: boolean): void {
    if (ok !== this.okNow) {
      this.logger[ok ? 'info' : 'warn'](
        { host: this.host },
        ok ? 'mail server answered' : 'mail server not answering',
      );
    }
    this.okNow = ok;
    this.onChange(ok);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    // Only ever move the next check earlier; the check itself schedules the one after it.
    if (this.timer && this.dueAt <= Date.now() + ms) return;
    clearTimeout(this.timer);
    this.dueAt = Date.now() + ms;
    this.timer = setTimeout(() => void this.verify(), ms);
    this.timer.unref();
  }

  private async verify(): Promise<void> {
    this.timer = undefined;
    if (this.verifying || this.stopped) return;
    this.verifying = true;
    try {
      const provenByTraffic =
        this.okNow &&
        (Date.now() - this.lastAnswerAt < VERIFY_INTERVAL_MS || this.delivery.connectionsInUse() > 0);
      if (!provenByTraffic) this.set(await this.delivery.verify());
    } finally {
      this.verifying = false;
    }
    this.schedule(this.okNow ? VERIFY_INTERVAL_MS : VERIFY_RETRY_MS);
  }
}
