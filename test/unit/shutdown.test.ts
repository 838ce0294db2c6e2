/**
 * The main thread's last line of defence, with an EventEmitter standing in for `process` (real signals and a real
 * crash of the built daemon are tested in test/integration/hostile.test.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log/logger.ts';
import { EXIT_CODES, installShutdownHandlers, type ProcessEvents } from '../../src/daemon/shutdown.ts';

interface Harness {
  proc: EventEmitter & ProcessEvents;
  exits: number[];
  logs: Array<{ level: string; msg: string; err?: { message: string; stack?: string } }>;
  stops: number;
  /** Resolves or rejects the drain started by the handlers. */
  finishDrain(error?: Error): void;
  settle(): Promise<void>;
}

function harness(): Harness {
  const logs: Harness['logs'] = [];
  const logger = createLogger({
    level: 'info',
    redactAddresses: false,
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logs.push(JSON.parse(line));
        callback();
      },
    }),
  });
  const exits: number[] = [];
  const proc = Object.assign(new EventEmitter(), { exit: (code: number) => void exits.push(code) });
  let finish: (error?: Error) => void = () => undefined;
  const h: Harness = {
    proc,
    exits,
    logs,
    stops: 0,
    finishDrain: (error) => finish(error),
    settle: () => new Promise((resolve) => setTimeout(resolve, 20)),
  };
  installShutdownHandlers({
    logger,
    process: proc,
    flushTimeoutMs: 5,
    stop: () => {
      h.stops += 1;
      return new Promise<void>(
        (resolve, reject) => (finish = (error) => (error ? reject(error) : resolve())),
      );
    },
  });
  return h;
}

describe('installShutdownHandlers', () => {
  it('drains on SIGTERM and exits 0 only when the drain is done', async () => {
    const h = harness();
    h.proc.emit('SIGTERM', 'SIGTERM');
    await h.settle();
    assert.equal(h.stops, 1);
    assert.deepEqual(h.exits, [], 'no exit while in-flight mail drains');
    h.finishDrain();
    await h.settle();
    assert.deepEqual(h.exits, [EXIT_CODES.stopped]);
  });

  it('turns an uncaught exception into the same drain, logs its stack, and exits 70 after it', async () => {
    const h = harness();
    h.proc.emit('uncaughtException', new Error('boom in a timer'));
    await h.settle();
    assert.equal(h.stops, 1);
    assert.deepEqual(h.exits, []);
    const fatal = h.logs.find((l) => l.level === 'fatal');
    assert.equal(fatal?.err?.message, 'boom in a timer');
    assert.match(fatal?.err?.stack ?? '', /shutdown\.test\.ts/);
    h.finishDrain();
    await h.settle();
    assert.deepEqual(h.exits, [EXIT_CODES.crashed]);
  });

  it('does the same for an unhandled rejection, whatever was rejected', async () => {
    const h = harness();
    h.proc.emit('unhandledRejection', 'not even an Error');
    await h.settle();
    assert.equal(h.logs.find((l) => l.level === 'fatal')?.err?.message, 'not even an Error');
    h.finishDrain();
    await h.settle();
    assert.deepEqual(h.exits, [EXIT_CODES.crashed]);
  });

  it('exits at once on a second unexpected error while draining', async () => {
    const h = harness();
    h.proc.emit('uncaughtException', new Error('first'));
    h.proc.emit('unhandledRejection', new Error('second'));
    await h.settle();
    assert.equal(h.stops, 1);
    assert.deepEqual(h.exits, [EXIT_CODES.crashed], 'exited without waiting for the drain');
  });

  it('exits at once with 130 on a second signal', async () => {
    const h = harness();
    h.proc.emit('SIGTERM', 'SIGTERM');
    h.proc.emit('SIGINT', 'SIGINT');
    await h.settle();
    assert.deepEqual(h.exits, [EXIT_CODES.secondSignal]);
  });

  it('keeps draining when a first signal arrives during a crash drain, and still exits 70', async () => {
    const h = harness();
    h.proc.emit('uncaughtException', new Error('boom'));
    h.proc.emit('SIGTERM', 'SIGTERM');
    await h.settle();
    assert.equal(h.stops, 1);
    assert.deepEqual(h.exits, []);
    h.finishDrain();
    await h.settle();
    assert.deepEqual(h.exits, [EXIT_CODES.crashed]);
  });

  it('exits 1 when the drain itself fails', async () => {
    const h = harness();
    h.proc.emit('SIGTERM', 'SIGTERM');
    h.finishDrain(new Error('pool would not close'));
    await h.settle();
    assert.deepEqual(h.exits, [EXIT_CODES.shutdownFailed]);
    assert.ok(h.logs.some((l) => l.msg === 'error during shutdown'));
  });
});
