/**
 * Every message between the coordinator (main thread) and a poller thread, which polls one domain or several
 * (POLLER_THREADS). Errors cross as plain data; mail bytes cross as transferred ArrayBuffers (zero copy).
 */
import type { MessagePort } from 'node:worker_threads';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Config } from '../config/config.ts';
import type { PollerStatus } from '../poller/domain-poller.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { DeliveryRoute } from '../smtp/transport.ts';

/** What piscina hands to a poller thread: its domains, the config, and its private channel to the coordinator. */
export interface PollerTask {
  /** The thread's number in the layout (daemon/thread-layout.ts), for its log lines. */
  thread: number;
  domains: string[];
  config: Config;
  port: MessagePort;
}

export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[];

/**
 * A poller's own state, or the supervisor's: `restarting` and `dead` (the thread died), `error` (the domain could not
 * start: its queue cannot be resolved; retried).
 */
export type DomainState = PollerStatus['state'] | 'restarting' | 'dead' | 'error';

export interface DomainStatus extends Omit<PollerStatus, 'state'> {
  state: DomainState;
}

/** Poller thread → coordinator. */
export type ThreadMessage =
  /** The thread's code is loaded and its domains are starting: the next wave of threads may start loading. */
  | { type: 'loaded' }
  /** The latest status of some of the thread's domains (sent in batches: thread-relays.ts). */
  | { type: 'status'; statuses: DomainStatus[] }
  | {
      type: 'deliver';
      id: number;
      /** Whose mail: the pool serves the domains with waiting deliveries in turn. */
      domain: string;
      route: DeliveryRoute;
      from: string;
      to: string[];
      raw: ArrayBuffer;
    }
  | { type: 'metrics'; id: number; metrics: MetricsSnapshot }
  /** May this thread send one mail through SES now? Answered with `ses-permit` when the pacer allows it. */
  | { type: 'ses-permit'; id: number }
  | { type: 'ses-permit-cancel'; id: number }
  /** SES throttled a send although paced: the pacer slows down for every thread. */
  | { type: 'ses-throttled' };

/** Coordinator → poller thread. */
export type CoordinatorMessage =
  | { type: 'delivered'; id: number; results: RecipientDelivery[] }
  | { type: 'collect-metrics'; id: number }
  | { type: 'ses-permit'; id: number }
  /** Whether the mail server answers (the coordinator's monitor): sent at start and on every change. */
  | { type: 'mail-server'; up: boolean }
  | { type: 'stop' }
  /**
   * Test hook (UNSAFE_TEST_HOOKS): makes the thread crash as a bug would (thrown, or a rejection nobody handles); every
   * domain the thread polls goes down with it.
   */
  | { type: 'crash'; how?: 'exception' | 'rejection' };
