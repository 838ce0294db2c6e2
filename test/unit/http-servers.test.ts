/**
 * The health/metrics HTTP server in-process, driven over raw sockets: whatever a client sends, it answers with a
 * 4xx (or closes the socket), counts the reason, and keeps serving.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startHttpServer, type HttpErrorReason, type RunningServer } from '../../src/daemon/http-servers.ts';

/** Sends raw bytes, returns everything the server wrote until it closed (or `waitMs` passed). */
function exchange(port: number, data: string | Buffer, waitMs = 3_000): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.write(data));
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(done, waitMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', done);
    socket.on('error', done);
  });
}

const statusOf = (answer: string): number => Number(/^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1] ?? 0);

describe('startHttpServer on hostile input', () => {
  let server: RunningServer;
  const errors: HttpErrorReason[] = [];
  const handlerErrors: unknown[] = [];
  before(async () => {
    server = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      route: (request) => {
        if (request.url.pathname === '/ok') return { status: 200, body: 'fine\n' };
        if (request.url.pathname === '/throws') throw new Error('sync bug');
        if (request.url.pathname === '/rejects') return Promise.reject(new Error('async bug'));
        return undefined;
      },
      onError: (reason, error) => {
        errors.push(reason);
        if (error !== undefined) handlerErrors.push(error);
      },
      limits: { headersTimeoutMs: 600, requestTimeoutMs: 800, timeoutCheckMs: 100, maxConnections: 20 },
    });
  });
  after(() => server.close());

  const counted = async (reason: HttpErrorReason, request: () => Promise<void>): Promise<void> => {
    const before = errors.filter((e) => e === reason).length;
    await request();
    assert.equal(
      errors.filter((e) => e === reason).length,
      before + 1,
      `one more ${reason}: ${errors.join(',')}`,
    );
  };
  const stillServes = async () =>
    assert.equal(
      statusOf(await exchange(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')),
      200,
    );

  it('answers the request that used to kill the process (absolute-form garbage) with 400', async () => {
    await counted('bad-target', async () => {
      assert.equal(statusOf(await exchange(server.port, 'GET http://[/ HTTP/1.1\r\nHost: x\r\n\r\n')), 400);
    });
    await stillServes();
  });

  it('serves a well-formed absolute-form target like its origin form', async () => {
    const answer = await exchange(
      server.port,
      'GET http://health.local:8080/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    assert.equal(statusOf(answer), 200);
  });

  it('answers a malformed request line and random bytes with 400', async () => {
    await counted('bad-request', async () => {
      assert.equal(statusOf(await exchange(server.port, 'GARBAGE\r\n\r\n')), 400);
    });
    await counted('bad-request', async () => {
      assert.equal(statusOf(await exchange(server.port, Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]))), 400);
    });
    await stillServes();
  });

  it('answers a target that is neither origin- nor absolute-form with 400', async () => {
    await counted('bad-target', async () => {
      assert.equal(statusOf(await exchange(server.port, 'GET * HTTP/1.1\r\nHost: x\r\n\r\n')), 400);
    });
  });

  it('answers headers over the bound with 431', async () => {
    const huge = `GET /ok HTTP/1.1\r\nHost: x\r\nX-Fill: ${'a'.repeat(20_000)}\r\n\r\n`;
    await counted('header-overflow', async () => {
      assert.equal(statusOf(await exchange(server.port, huge)), 431);
    });
    await stillServes();
  });

  it('refuses other methods with 405 and request bodies with 413', async () => {
    await counted('method-not-allowed', async () => {
      assert.equal(
        statusOf(await exchange(server.port, 'DELETE /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')),
        405,
      );
    });
    await counted('body-not-accepted', async () => {
      const post = 'POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello';
      assert.equal(statusOf(await exchange(server.port, post)), 413);
    });
  });

  it('answers a route that throws or rejects with 500, reports the error, and keeps serving', async () => {
    await counted('handler-error', async () => {
      assert.equal(
        statusOf(await exchange(server.port, 'GET /throws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')),
        500,
      );
    });
    await counted('handler-error', async () => {
      assert.equal(
        statusOf(
          await exchange(server.port, 'GET /rejects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
        ),
        500,
      );
    });
    assert.deepEqual(
      handlerErrors.map((e) => (e as Error).message),
      ['sync bug', 'async bug'],
    );
    await stillServes();
  });

  it('answers an unknown path with 404 and does not need a Host header', async () => {
    await counted('not-found', async () => {
      assert.equal(statusOf(await exchange(server.port, 'GET /nothing HTTP/1.0\r\n\r\n')), 404);
    });
  });

  it('times out a client that sends half its headers, or nothing at all', async () => {
    await counted('timeout', async () => {
      assert.equal(statusOf(await exchange(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\n')), 408);
    });
    await counted('timeout', async () => {
      assert.equal(statusOf(await exchange(server.port, '')), 408);
    });
  });

  it('closes connections over the cap at once and serves again when they are gone', async () => {
    const open = await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          new Promise<net.Socket>((resolve) => {
            const socket = net.connect(server.port, '127.0.0.1', () => resolve(socket));
            socket.on('error', () => undefined);
          }),
      ),
    );
    await counted('connection-limit', async () => {
      assert.equal(await exchange(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n'), '');
    });
    for (const socket of open) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    await stillServes();
  });
});
