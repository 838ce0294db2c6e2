import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { createOutboundMetrics, type OutboundMetrics } from '../outbound/outbound-metrics.ts';
import type { MailDelivery } from '../smtp/transport.ts';
import { readBuildInfo } from './build-info.ts';
import type { MetricsSnapshot } from './protocol.ts';

export interface CoordinatorMetrics {
  registry: Registry;
  pollerRestarted(domain: string): void;
  pollerUp(domain: string, up: boolean): void;
  /** A request the health or metrics server could not serve normally (bad request, handler exception, timeout). */
  httpError(server: 'health' | 'metrics', reason: string): void;
  mailServerUp(up: boolean): void;
  /** Reads the SES pacer's state at each scrape. */
  sesPacer(read: () => { rate: number; waiting: number }): void;
  sesThrottled(): void;
  /** The outbound events consumer's (it runs in the main thread). */
  outbound: OutboundMetrics;
  /** The main registry merged with the threads' snapshots: counters and histograms summed per label set. */
  render(threadSnapshots: readonly MetricsSnapshot[]): Promise<string>;
}

/**
 * The main thread's own metrics: process metrics (collected here only — in every thread they would be multiplied
 * by the thread count), the shared pool, and the pollers' supervision.
 */
export function createCoordinatorMetrics(delivery: MailDelivery, maxConnections: number): CoordinatorMetrics {
  const registry = new Registry();
  // The event-loop delay monitor samples every eventLoopMonitoringPrecision ms; the default 10 ms would wake an idle
  // process 100 times a second.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 250 });
  // prom-client names these three gauges `*_total`, which `promtool check metrics` rejects (the suffix is for
  // counters). Their per-type siblings (`nodejs_active_handles{type}` ...) carry the same numbers.
  for (const name of [
    'nodejs_active_handles_total',
    'nodejs_active_requests_total',
    'nodejs_active_resources_total',
  ]) {
    registry.removeSingleMetric(name);
  }
  // The usual build_info idiom: always 1, the version and commit in labels, so a query can join on them
  // (`* on (instance) group_left (version) ses_worker_build_info`) and a dashboard can show what runs where.
  const build = readBuildInfo();
  new Gauge({
    name: 'ses_worker_build_info',
    help: 'Always 1; the labels name the running version (package.json) and commit (written at image build).',
    labelNames: ['version', 'commit'] as const,
    registers: [registry],
  }).set({ version: build.version, commit: build.commit }, 1);
  const restarts = new Counter({
    name: 'ses_worker_poller_restarts_total',
    help: 'Poller threads restarted after dying.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const up = new Gauge({
    name: 'ses_worker_poller_up',
    help: '1 while the domain poller thread is running and polling.',
    labelNames: ['domain'] as const,
    registers: [registry],
  });
  const httpErrors = new Counter({
    name: 'ses_worker_http_errors_total',
    help: 'Requests to the health and metrics servers answered with an error or dropped, by server and reason.',
    labelNames: ['server', 'reason'] as const,
    registers: [registry],
  });
  const mailServer = new Gauge({
    name: 'ses_worker_mail_server_up',
    help: '1 while the mail server answers (deliveries or the readiness check), else 0.',
    registers: [registry],
  });
  mailServer.set(0);
  let pacer: () => { rate: number; waiting: number } = () => ({ rate: 0, waiting: 0 });
  new Gauge({
    name: 'ses_worker_ses_send_rate_per_second',
    help: 'SES sends per second the process-wide pacer allows now (the account quota, lower after throttling).',
    registers: [registry],
    collect() {
      this.set(pacer().rate);
    },
  });
  new Gauge({
    name: 'ses_worker_ses_sends_waiting',
    help: 'Forwards and auto-replies waiting for an SES send permit.',
    registers: [registry],
    collect() {
      this.set(pacer().waiting);
    },
  });
  const throttles = new Counter({
    name: 'ses_worker_ses_throttled_total',
    help: 'SES sends throttled although paced (another sender shares the account quota); the pacer slowed down.',
    registers: [registry],
  });
  new Gauge({
    name: 'ses_worker_smtp_connections_in_use',
    help: 'Connections of the shared SMTP/LMTP pool busy with a transaction.',
    registers: [registry],
    collect() {
      this.set(delivery.connectionsInUse());
    },
  });
  new Gauge({
    name: 'ses_worker_smtp_sends_waiting',
    help: 'Deliveries waiting for a free connection of the shared pool.',
    registers: [registry],
    collect() {
      this.set(delivery.sendsWaiting());
    },
  });
  new Gauge({
    name: 'ses_worker_smtp_connections_max',
    help: 'Upper bound of connections to the mail server (SMTP_MAX_CONNECTIONS).',
    registers: [registry],
    collect() {
      this.set(maxConnections);
    },
  });
  const outbound = createOutboundMetrics(registry);
  return {
    registry,
    outbound,
    pollerRestarted: (domain) => restarts.inc({ domain }),
    pollerUp: (domain, isUp) => up.set({ domain }, isUp ? 1 : 0),
    httpError: (server, reason) => httpErrors.inc({ server, reason }),
    mailServerUp: (isUp) => mailServer.set(isUp ? 1 : 0),
    sesPacer: (read) => {
      pacer = read;
    },
    sesThrottled: () => throttles.inc(),
    async render(threadSnapshots) {
      const all = [await registry.getMetricsAsJSON(), ...threadSnapshots];
      return AggregatorRegistry.aggregate(
        all as Parameters<typeof AggregatorRegistry.aggregate>[0],
      ).metrics();
    },
  };
}
