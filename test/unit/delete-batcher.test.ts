import { afterEach, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import type { MailQueue, QueueAttributes, QueueEntry, QueueMessage } from '../../src/aws/queue.ts';
import { createLogger, type Logger } from '../../src/log/logger.ts';
import { DeleteBatcher } from '../../src/poller/delete-batcher.ts';

/** In-memory MailQueue: records every deleteBatch call and fails the receipt handles it is told to. */
class FakeQueue implements MailQueue {
  readonly url = 'https://sqs.us-east-1.amazonaws.com/123456789012/example-com-queue';
  readonly deleteCalls: QueueEntry[][] = [];
  /** Receipt handles whose delete SQS reports as failed. */
  readonly failHandles = new Set<string>();
  /** When set, the next deleteBatch waits for this promise before answering. */
  gate: Promise<void> | undefined;
  /** When set, deleteBatch rejects with it. */
  throwError: Error | undefined;

  async receive(_options: {
    maxMessages: number;
    waitTimeSeconds: number;
    signal?: AbortSignal;
  }): Promise<QueueMessage[]> {
    return [];
  }

  async deleteBatch(entries: readonly QueueEntry[]): Promise<QueueEntry[]> {
    this.deleteCalls.push([...entries]);
    if (this.gate) await this.gate;
    if (this.throwError) throw this.throwError;
    return entries.filter((e) => this.failHandles.has(e.receiptHandle));
  }

  async changeVisibility(_entry: QueueEntry, _seconds: number): Promise<void> {}

  async changeVisibilityBatch(_entries: readonly QueueEntry[], _seconds: number): Promise<void> {}

  async attributes(): Promise<QueueAttributes> {
    return { visible: 0, inFlight: 0, visibilityTimeoutSeconds: 30, hasRedrivePolicy: false };
  }
}

/** A pino logger writing JSON lines into memory. */
function memoryLogger(): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  const logger = createLogger({ level: 'info', redactAddresses: false, destination });
  return {
    logger,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function entry(i: number): QueueEntry {
  return { messageId: `msg-${i}`, receiptHandle: `handle-${i}` };
}

function entries(from: number, count: number): QueueEntry[] {
  return Array.from({ length: count }, (_, i) => entry(from + i));
}

describe('DeleteBatcher', () => {
  afterEach(() => {
    mock.timers.reset();
  });

  it('sends 25 entries as batches of 10, 10 and 5, in order', async () => {
    const queue = new FakeQueue();
    const { logger, lines } = memoryLogger();
    const batcher = new DeleteBatcher(queue, logger, { lingerMs: 60_000 });
    for (const e of entries(0, 25)) batcher.add(e);
    await batcher.flush();
    assert.deepEqual(queue.deleteCalls, [entries(0, 10), entries(10, 10), entries(20, 5)]);
    assert.deepEqual(lines(), []);
  });

  it('sends a full batch of 10 as soon as it is complete, without waiting for the linger', async () => {
    const queue = new FakeQueue();
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, { lingerMs: 60_000 });
    for (const e of entries(0, 9)) batcher.add(e);
    await tick();
    assert.equal(queue.deleteCalls.length, 0);
    batcher.add(entry(9));
    await tick();
    assert.deepEqual(queue.deleteCalls, [entries(0, 10)]);
    await batcher.flush();
    assert.equal(queue.deleteCalls.length, 1, 'nothing left to flush');
  });

  it('sends a partial batch when the linger timer fires', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const queue = new FakeQueue();
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, { lingerMs: 25 });
    batcher.add(entry(1));
    mock.timers.tick(10);
    batcher.add(entry(2));
    batcher.add(entry(3));
    mock.timers.tick(14);
    await tick();
    assert.equal(queue.deleteCalls.length, 0, 'the linger runs from the first add, not the last');
    mock.timers.tick(1);
    await tick();
    assert.deepEqual(queue.deleteCalls, [entries(1, 3)]);
  });

  it('uses a 25 ms linger by default', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const queue = new FakeQueue();
    const batcher = new DeleteBatcher(queue, memoryLogger().logger);
    batcher.add(entry(1));
    mock.timers.tick(24);
    await tick();
    assert.equal(queue.deleteCalls.length, 0);
    mock.timers.tick(1);
    await tick();
    assert.deepEqual(queue.deleteCalls, [[entry(1)]]);
  });

  it('sends a partial batch with real timers after the linger', async () => {
    const queue = new FakeQueue();
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, { lingerMs: 5 });
    batcher.add(entry(1));
    batcher.add(entry(2));
    const deadline = Date.now() + 2_000;
    while (queue.deleteCalls.length === 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(queue.deleteCalls, [entries(1, 2)]);
  });

  it('starts a new linger for entries added after a flush', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const queue = new FakeQueue();
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, { lingerMs: 25 });
    batcher.add(entry(1));
    await batcher.flush();
    assert.deepEqual(queue.deleteCalls, [[entry(1)]]);
    mock.timers.tick(25);
    await tick();
    assert.equal(queue.deleteCalls.length, 1, 'the cleared timer does not fire an empty flush');
    batcher.add(entry(2));
    mock.timers.tick(25);
    await tick();
    assert.deepEqual(queue.deleteCalls, [[entry(1)], [entry(2)]]);
  });

  it('makes no call when flushed with nothing pending', async () => {
    const queue = new FakeQueue();
    const batcher = new DeleteBatcher(queue, memoryLogger().logger);
    await batcher.flush();
    await batcher.flush();
    assert.deepEqual(queue.deleteCalls, []);
  });

  it('flush resolves only after the batches sent earlier have been answered', async () => {
    const queue = new FakeQueue();
    let open: () => void = () => undefined;
    queue.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, { lingerMs: 60_000 });
    for (const e of entries(0, 10)) batcher.add(e); // sent at once, then held at the gate
    let flushed = false;
    const flushing = batcher.flush().then(() => {
      flushed = true;
    });
    await tick();
    assert.equal(flushed, false);
    open();
    await flushing;
    assert.equal(flushed, true);
  });

  it('sends batches side by side: one whose call hangs holds up no later batch, and flush waits for all', async () => {
    const queue = new FakeQueue();
    let open: () => void = () => undefined;
    queue.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, { lingerMs: 60_000 });
    for (const e of entries(0, 20)) batcher.add(e);
    await tick();
    assert.deepEqual(queue.deleteCalls, [entries(0, 10), entries(10, 10)], 'the second batch did not wait');
    let flushed = false;
    const flushing = batcher.flush().then(() => (flushed = true));
    await tick();
    assert.equal(flushed, false, 'flush waits for the hanging batches');
    open();
    await flushing;
    assert.equal(flushed, true);
  });

  it('logs the message ids SQS failed to delete, once per batch', async () => {
    const queue = new FakeQueue();
    queue.failHandles.add('handle-3');
    queue.failHandles.add('handle-12');
    queue.failHandles.add('handle-13');
    const { logger, lines } = memoryLogger();
    const batcher = new DeleteBatcher(queue, logger, { lingerMs: 60_000 });
    for (const e of entries(0, 15)) batcher.add(e);
    await batcher.flush();
    const logged = lines().map(({ level, msg, failed }) => ({ level, msg, failed }));
    assert.deepEqual(logged, [
      { level: 'error', msg: 'SQS delete failed; messages will reappear', failed: ['msg-3'] },
      { level: 'error', msg: 'SQS delete failed; messages will reappear', failed: ['msg-12', 'msg-13'] },
    ]);
  });

  it('counts every message SQS did not delete, whether it reported them or the call threw', async () => {
    const queue = new FakeQueue();
    queue.failHandles.add('handle-3');
    queue.failHandles.add('handle-12');
    const counted: number[] = [];
    const batcher = new DeleteBatcher(queue, memoryLogger().logger, {
      lingerMs: 60_000,
      onFailed: (count) => counted.push(count),
    });
    for (const e of entries(0, 15)) batcher.add(e);
    await batcher.flush();
    queue.throwError = new Error('socket hang up');
    for (const e of entries(20, 4)) batcher.add(e);
    await batcher.flush();
    assert.deepEqual(counted, [1, 1, 4]);
  });

  it('logs nothing when every delete succeeds', async () => {
    const queue = new FakeQueue();
    const { logger, lines } = memoryLogger();
    const batcher = new DeleteBatcher(queue, logger);
    for (const e of entries(0, 3)) batcher.add(e);
    await batcher.flush();
    assert.equal(queue.deleteCalls.length, 1);
    assert.deepEqual(lines(), []);
  });

  it('keeps deleting later batches after one deleteBatch call threw', async () => {
    const queue = new FakeQueue();
    const { logger } = memoryLogger();
    const batcher = new DeleteBatcher(queue, logger, { lingerMs: 60_000 });
    queue.throwError = new Error('socket hang up');
    batcher.add(entry(1));
    await batcher.flush().catch(() => undefined);
    queue.throwError = undefined;
    batcher.add(entry(2));
    await batcher.flush().catch(() => undefined);
    assert.deepEqual(queue.deleteCalls, [[entry(1)], [entry(2)]]);
  });
});
