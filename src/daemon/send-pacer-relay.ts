import { errorMessage } from '../errors.ts';
import { GetAccountCommand } from '@aws-sdk/client-sesv2';
import type { MessagePort } from 'node:worker_threads';
import { createAwsClients, type AwsClients } from '../aws/clients.ts';
import { TokenBucketPacer } from '../flow-control/send-pacer.ts';
import { systemClock } from '../clock.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import type { CoordinatorMetrics } from './coordinator-metrics.ts';
import type { CoordinatorMessage, ThreadMessage } from './protocol.ts';

/** SES's starting quota for accounts out of the sandbox; used when GetAccount cannot be read. */
export const DEFAULT_SES_SEND_RATE = 14;
/**
 * Of the account's MaxSendRate, the share the pacer uses: SES counts over any one second, so sends paced at exactly
 * the quota are throttled by the slightest timing jitter.
 */
const QUOTA_SHARE = 0.9;
/** The account's quota can be raised at any time; a refresh now and then picks that up. */
const QUOTA_REFRESH_MS = 10 * 60_000;

type PermitMessage = Extract<ThreadMessage, { type: 'ses-permit' | 'ses-permit-cancel' | 'ses-throttled' }>;

/**
 * The one SES send pacer of the process, in the main thread: every domain thread asks it for a permit before each
 * send (poller-thread.ts), so all domains together stay within the account's MaxSendRate.
 */
export class SendPacerRelay {
  private readonly pacer: TokenBucketPacer;
  private readonly pending = new Map<string, AbortController>();
  private clients: AwsClients | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly metrics: CoordinatorMetrics,
  ) {
    this.pacer = new TokenBucketPacer({
      rate: config.sesMaxSendRate || DEFAULT_SES_SEND_RATE * QUOTA_SHARE,
      clock: systemClock,
    });
    metrics.sesPacer(() => ({ rate: this.pacer.currentRate, waiting: this.pacer.waiting }));
  }

  /** Reads the account's quota (unless SES_MAX_SEND_RATE fixes it), now and every ten minutes. */
  start(): void {
    if (this.config.sesMaxSendRate > 0) return;
    this.clients = createAwsClients(this.config.aws);
    void this.refreshQuota();
    this.refreshTimer = setInterval(() => void this.refreshQuota(), QUOTA_REFRESH_MS);
    this.refreshTimer.unref();
  }

  stop(): void {
    clearInterval(this.refreshTimer);
    for (const abort of this.pending.values()) abort.abort();
    this.clients?.destroy();
  }

  /** Handles a thread's pacing message; `thread` tells the threads' request ids apart. */
  handle(port: MessagePort, thread: string, message: PermitMessage): void {
    if (message.type === 'ses-throttled') {
      this.metrics.sesThrottled();
      this.pacer.throttled();
      return;
    }
    const key = `${thread}:${message.id}`;
    if (message.type === 'ses-permit-cancel') {
      this.pending.get(key)?.abort();
      return;
    }
    const abort = new AbortController();
    this.pending.set(key, abort);
    this.pacer
      .acquire({ signal: abort.signal })
      .then(
        () => post(port, { type: 'ses-permit', id: message.id }),
        () => undefined,
      )
      .finally(() => this.pending.delete(key));
  }

  private async refreshQuota(): Promise<void> {
    try {
      const account = await this.clients!.sesv2.send(new GetAccountCommand({}));
      const rate = account.SendQuota?.MaxSendRate;
      if (rate !== undefined && rate > 0) this.pacer.setQuota(rate * QUOTA_SHARE);
    } catch (error) {
      this.logger.warn(
        { err: errorMessage(error), rate: this.pacer.currentRate },
        'could not read the SES sending rate (GetAccount); pacing sends at the last known rate',
      );
    }
  }
}

function post(port: MessagePort, message: CoordinatorMessage): void {
  port.postMessage(message);
}
