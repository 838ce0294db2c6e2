import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  evaluateHealth,
  staleBoundMs,
  type DomainHealthInput,
  type HealthInput,
} from '../../src/daemon/health.ts';

const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);

function input(domains: DomainHealthInput[], extra: Partial<HealthInput> = {}): HealthInput {
  return {
    domains,
    now: T0 + 10_000,
    startedAt: T0,
    staleAfterMs: staleBoundMs(20),
    draining: false,
    mailServerOk: true,
    ...extra,
  };
}

const polling = (domain: string, lastPollAt = T0 + 9_000): DomainHealthInput => ({
  domain,
  status: { domain, state: 'polling', inFlight: 0, lastPollAt },
  restarts: 0,
});

describe('evaluateHealth', () => {
  it('derives the stuck-poller bound from the long-poll wait, at least a minute', () => {
    assert.equal(staleBoundMs(20), 75_000);
    assert.equal(staleBoundMs(1), 60_000);
  });

  it('is healthy and ready when every poller polls and the mail server answered', () => {
    const report = evaluateHealth(input([polling('a.test'), polling('b.test')]));
    assert.equal(report.healthy, true);
    assert.equal(report.ready, true);
    assert.deepEqual(report.body.domains[0], {
      domain: 'a.test',
      state: 'polling',
      lastPollAt: new Date(T0 + 9_000).toISOString(),
      inFlight: 0,
      restarts: 0,
    });
  });

  it('shows the SES events consumer without making it part of health or readiness', () => {
    for (const state of ['queue-missing', 'failing', 'off'] as const) {
      const outboundEvents = { state, queue: 'ses-outbound-events', lastError: 'queue does not exist' };
      const report = evaluateHealth(input([polling('a.test')], { outboundEvents }));
      assert.equal(report.healthy, true, state);
      assert.equal(report.ready, true, state);
      assert.deepEqual(report.body.outboundEvents, outboundEvents);
    }
    assert.equal(evaluateHealth(input([polling('a.test')])).body.outboundEvents, undefined);
  });

  it('is unhealthy when a poller is dead or restarting', () => {
    for (const state of ['dead', 'restarting'] as const) {
      const report = evaluateHealth(
        input([
          polling('a.test'),
          { domain: 'b.test', status: { domain: 'b.test', state, inFlight: 0 }, restarts: 2 },
        ]),
      );
      assert.equal(report.healthy, false, state);
      assert.equal(report.ready, false, state);
      assert.equal(report.body.status, 'unhealthy');
    }
  });

  it('calls a poller stuck when it has neither polled nor finished a message within the bound', () => {
    const now = T0 + 200_000;
    const stuck = evaluateHealth(input([polling('a.test', now - 76_000)], { now }));
    assert.equal(stuck.healthy, false);
    assert.equal(stuck.body.domains[0]?.state, 'stale');
    const busy: DomainHealthInput = {
      domain: 'a.test',
      status: {
        domain: 'a.test',
        state: 'polling',
        inFlight: 10,
        lastPollAt: now - 76_000,
        lastActivityAt: now - 1_000,
      },
      restarts: 0,
    };
    assert.equal(evaluateHealth(input([busy], { now })).healthy, true, 'busy with slow mail is alive');
  });

  it('stays live but not ready for a missing queue, a pause, or a silent mail server', () => {
    const missing: DomainHealthInput = {
      domain: 'c.test',
      status: {
        domain: 'c.test',
        state: 'error',
        inFlight: 0,
        lastError: 'queue c-test-queue does not exist',
      },
      restarts: 0,
    };
    const report = evaluateHealth(input([polling('a.test'), missing]));
    assert.equal(report.healthy, true);
    assert.equal(report.ready, false);
    assert.equal(report.body.domains[1]?.lastError, 'queue c-test-queue does not exist');

    const paused: DomainHealthInput = {
      domain: 'a.test',
      status: { domain: 'a.test', state: 'paused', inFlight: 0, pausedReason: 'mail server unreachable' },
      restarts: 0,
    };
    const pausedReport = evaluateHealth(input([paused]));
    assert.equal(pausedReport.healthy, true);
    assert.equal(pausedReport.ready, false);
    assert.equal(pausedReport.body.domains[0]?.pausedReason, 'mail server unreachable');

    const down = evaluateHealth(input([polling('a.test')], { mailServerOk: false }));
    assert.equal(down.ready, false);
    assert.equal(down.body.mailServer, 'down');
  });

  it('shows a domain whose mail server refuses it as degraded with the reply: live, not ready', () => {
    const reply = '554 5.7.1 <x@a.test>: Relay access denied';
    for (const state of ['polling', 'paused'] as const) {
      const degraded: DomainHealthInput = {
        domain: 'a.test',
        status: { domain: 'a.test', state, inFlight: 0, degraded: reply, lastPollAt: T0 + 9_000 },
        restarts: 0,
      };
      const report = evaluateHealth(input([degraded, polling('b.test')]));
      assert.equal(report.healthy, true, state);
      assert.equal(report.ready, false, state);
      assert.equal(report.body.status, 'ok');
      assert.equal(report.body.domains[0]?.state, 'degraded');
      assert.equal(report.body.domains[0]?.degradedReason, reply);
      assert.equal(report.body.domains[1]?.state, 'polling');
    }
  });

  it('shows a domain held by a failed table check in state error naming the table: live, not ready', () => {
    const problem = 'table email-rules (rules): key schema is id (HASH); the daemon needs ...';
    const held: DomainHealthInput = {
      domain: 'a.test',
      status: { domain: 'a.test', state: 'error', inFlight: 0, lastError: problem },
      restarts: 0,
    };
    const report = evaluateHealth(input([held]));
    assert.equal(report.healthy, true);
    assert.equal(report.ready, false);
    assert.deepEqual(
      { state: report.body.domains[0]?.state, lastError: report.body.domains[0]?.lastError },
      { state: 'error', lastError: problem },
    );
  });

  it('is not ready while draining', () => {
    const report = evaluateHealth(input([polling('a.test')], { draining: true }));
    assert.equal(report.ready, false);
    assert.equal(report.body.draining, true);
  });
});
