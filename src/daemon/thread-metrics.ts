import type { MessagePort } from 'node:worker_threads';
import type { CoordinatorMessage, MetricsSnapshot } from './protocol.ts';

/** A thread busy on CPU must not hold up a scrape. */
const METRICS_TIMEOUT_MS = 2_000;

/**
 * The metrics fan-out: every poller thread has its own registry, so a scrape asks each running thread for a
 * snapshot over its port and takes whatever answered within the timeout.
 */
export class ThreadMetricsCollector {
  private nextId = 1;
  private readonly waiting = new Map<number, (snapshot: MetricsSnapshot) => void>();

  constructor(private readonly timeoutMs = METRICS_TIMEOUT_MS) {}

  async collect(ports: readonly MessagePort[]): Promise<MetricsSnapshot[]> {
    const snapshots = await Promise.all(ports.map((port) => this.ask(port)));
    return snapshots.filter((s): s is MetricsSnapshot => s !== undefined);
  }

  /** A thread's `metrics` answer. */
  answer(id: number, snapshot: MetricsSnapshot): void {
    this.waiting.get(id)?.(snapshot);
    this.waiting.delete(id);
  }

  private ask(port: MessagePort): Promise<MetricsSnapshot | undefined> {
    return new Promise((resolve) => {
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(undefined);
      }, this.timeoutMs);
      this.waiting.set(id, (snapshot) => {
        clearTimeout(timer);
        resolve(snapshot);
      });
      const message: CoordinatorMessage = { type: 'collect-metrics', id };
      port.postMessage(message);
    });
  }
}
