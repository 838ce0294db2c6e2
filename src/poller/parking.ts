import type { MailQueue, QueueMessage } from '../aws/queue.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log/logger.ts';
import type { Component } from '../pipeline/outcome.ts';

export interface ParkingOptions {
  /** Messages held at most; beyond it a message waiting for an outage takes the ordinary retry schedule. */
  capacity: number;
  /** Visibility a parked message is held with, renewed every third of it while it waits. */
  holdSeconds: number;
}

interface Parked {
  message: QueueMessage;
  component: Component;
}

/**
 * Messages that wait for a component to come back (the mail server down, SES refusing to send), held invisible in
 * the queue and retried in place when it does: their receive count does not grow with the outage, so a long
 * outage sends nothing to the dead-letter queue. Should the worker die meanwhile, each reappears after its hold.
 */
export class ParkingLot {
  private readonly parked = new Map<string, Parked>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly queue: MailQueue,
    private readonly logger: Logger,
    private readonly options: ParkingOptions,
  ) {}

  get size(): number {
    return this.parked.size;
  }

  hasRoom(): boolean {
    return this.parked.size < this.options.capacity;
  }

  count(component: Component): number {
    return [...this.parked.values()].filter((p) => p.component === component).length;
  }

  /** Holds a message until `take` hands it back. */
  async park(message: QueueMessage, component: Component): Promise<void> {
    await this.queue.changeVisibility(entryOf(message), this.options.holdSeconds);
    this.parked.set(message.messageId, { message, component });
    this.timer ??= setInterval(() => void this.renew(), (this.options.holdSeconds * 1000) / 3);
  }

  /** Hands back the messages waiting for `component` (at most `limit`), oldest first; they are no longer held. */
  take(component: Component, limit = Infinity): QueueMessage[] {
    const taken: QueueMessage[] = [];
    for (const [id, p] of this.parked) {
      if (taken.length >= limit) break;
      if (p.component !== component) continue;
      this.parked.delete(id);
      taken.push(p.message);
    }
    this.stopIfEmpty();
    return taken;
  }

  /** On shutdown: every parked message is made visible again at once, for another worker to take up. */
  async releaseAll(): Promise<void> {
    const entries = [...this.parked.values()].map((p) => entryOf(p.message));
    this.parked.clear();
    this.stopIfEmpty();
    if (entries.length === 0) return;
    await this.queue
      .changeVisibilityBatch(entries, 0)
      .catch((error: unknown) =>
        this.logger.warn(
          { err: errorMessage(error) },
          'could not release parked messages; they reappear after their hold',
        ),
      );
  }

  private async renew(): Promise<void> {
    const entries = [...this.parked.values()].map((p) => entryOf(p.message));
    await this.queue
      .changeVisibilityBatch(entries, this.options.holdSeconds)
      .catch((error: unknown) =>
        this.logger.warn(
          { err: errorMessage(error), parked: entries.length },
          'could not renew the hold of parked messages',
        ),
      );
  }

  private stopIfEmpty(): void {
    if (this.parked.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

function entryOf(message: QueueMessage): { messageId: string; receiptHandle: string } {
  return { messageId: message.messageId, receiptHandle: message.receiptHandle };
}
