import { errorMessage } from '../errors.ts';
import type { MailQueue, QueueEntry } from '../aws/queue.ts';
import type { Logger } from '../log/logger.ts';

/**
 * Collects finished messages and deletes them ten at a time (one DeleteMessageBatch), flushing early when a batch
 * is full and otherwise after a short linger, so a slow message in a batch does not hold up the others' deletes.
 * Batches go out side by side: one whose call hangs until its deadline holds up no later delete.
 */
export class DeleteBatcher {
  private pending: QueueEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly sending = new Set<Promise<void>>();

  private readonly lingerMs: number;
  private readonly onFailed: (count: number) => void;

  constructor(
    private readonly queue: MailQueue,
    private readonly logger: Logger,
    options: {
      lingerMs?: number;
      /** Counts messages SQS did not delete (the metric), besides the error log. */
      onFailed?: (count: number) => void;
    } = {},
  ) {
    this.lingerMs = options.lingerMs ?? 25;
    this.onFailed = options.onFailed ?? (() => undefined);
  }

  add(entry: QueueEntry): void {
    this.pending.push(entry);
    if (this.pending.length >= 10) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.lingerMs);
  }

  /** Resolves when everything added so far has been sent to SQS (or failed). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    if (batch.length > 0) {
      const sent = this.send(batch);
      this.sending.add(sent);
      void sent.finally(() => this.sending.delete(sent));
    }
    await Promise.all([...this.sending]);
  }

  private async send(batch: QueueEntry[]): Promise<void> {
    let failed: QueueEntry[];
    try {
      failed = await this.queue.deleteBatch(batch);
    } catch (error) {
      this.logger.error({ err: errorMessage(error) }, 'SQS DeleteMessageBatch threw');
      failed = batch;
    }
    if (failed.length === 0) return;
    this.onFailed(failed.length);
    // Not lost: an undeleted message reappears and the ledger (or S3 metadata) shows it was handled.
    this.logger.error(
      { failed: failed.map((f) => f.messageId) },
      'SQS delete failed; messages will reappear',
    );
  }
}
