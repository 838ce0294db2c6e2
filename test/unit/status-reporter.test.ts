import assert from 'node:assert/strict';
import type { MessagePort } from 'node:worker_threads';
import { describe, it } from 'node:test';
import type { DomainStatus, ThreadMessage } from '../../src/daemon/protocol.ts';
import { createStatusReporter } from '../../src/daemon/thread-relays.ts';

function recordingPort() {
  const posts: ThreadMessage[] = [];
  const port = { postMessage: (message: ThreadMessage) => posts.push(message) } as unknown as MessagePort;
  const reported = () => posts.map((m) => (m.type === 'status' ? m.statuses.map(describeStatus) : m.type));
  return { port, posts, reported };
}

const describeStatus = (s: DomainStatus) => `${s.domain}:${s.state}:${s.lastPollAt ?? '-'}`;

describe('createStatusReporter', () => {
  it('sends a domain first report and every change of state at once, alone', () => {
    const { port, reported } = recordingPort();
    const reporter = createStatusReporter(port);
    reporter.report({ domain: 'a.test', state: 'starting', inFlight: 0 });
    reporter.report({ domain: 'b.test', state: 'starting', inFlight: 0 });
    reporter.report({ domain: 'a.test', state: 'polling', inFlight: 0, lastPollAt: 1 });
    assert.deepEqual(reported(), [['a.test:starting:-'], ['b.test:starting:-'], ['a.test:polling:1']]);
    reporter.flush();
  });

  it('holds reports that change only times and counts, and sends them together, the latest of each domain', () => {
    const { port, reported } = recordingPort();
    const reporter = createStatusReporter(port);
    for (const domain of ['a.test', 'b.test']) reporter.report({ domain, state: 'polling', inFlight: 0 });
    reporter.report({ domain: 'a.test', state: 'polling', inFlight: 0, lastPollAt: 1 });
    reporter.report({ domain: 'b.test', state: 'polling', inFlight: 2, lastPollAt: 2 });
    reporter.report({ domain: 'a.test', state: 'polling', inFlight: 0, lastPollAt: 3 });
    assert.equal(reported().length, 2, 'nothing sent for the polls yet');
    reporter.flush();
    assert.deepEqual(reported().at(-1), ['a.test:polling:3', 'b.test:polling:2']);
    reporter.flush();
    assert.equal(reported().length, 3, 'an empty flush sends nothing');
  });

  it('sends what is held along with a decisive report, and counts a new error or pause as decisive', () => {
    const { port, reported } = recordingPort();
    const reporter = createStatusReporter(port);
    for (const domain of ['a.test', 'b.test']) reporter.report({ domain, state: 'polling', inFlight: 0 });
    reporter.report({ domain: 'a.test', state: 'polling', inFlight: 0, lastPollAt: 5 });
    reporter.report({ domain: 'b.test', state: 'polling', inFlight: 0, lastError: 'ReceiveMessage failed' });
    assert.deepEqual(reported().at(-1), ['a.test:polling:5', 'b.test:polling:-']);
    reporter.report({
      domain: 'a.test',
      state: 'polling',
      inFlight: 0,
      pausedReason: 'mail server unreachable',
    });
    assert.deepEqual(reported().at(-1), ['a.test:polling:-']);
  });

  it('sends held reports by itself within the batch interval', async () => {
    const { port, reported } = recordingPort();
    const reporter = createStatusReporter(port);
    reporter.report({ domain: 'a.test', state: 'polling', inFlight: 0 });
    reporter.report({ domain: 'a.test', state: 'polling', inFlight: 0, lastPollAt: 7 });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.deepEqual(reported().at(-1), ['a.test:polling:7']);
  });
});
