/**
 * The metric names the daemon declares, read from the registries it builds (not from a scrape, so metrics without
 * samples yet count too), for the tests that check names used elsewhere: rules, dashboard, docs.
 */
import { createCoordinatorMetrics } from '../../src/daemon/coordinator-metrics.ts';
import { createPipelineMetrics } from '../../src/metrics/pipeline-metrics.ts';

export interface DeclaredMetric {
  type: string;
  labelNames: string[];
}

/**
 * Named by the rules, the dashboard and the docs before the daemon exports them: the per-domain dead-letter queue
 * gauges, which the daemon's queue monitor adds. Each is excused only while no registry declares it, so the checks
 * hold for it by themselves from the moment it exists.
 */
export const AWAITED_METRICS: readonly string[] = [
  'ses_worker_dlq_messages',
  'ses_worker_dlq_oldest_message_age_seconds',
];

/** Every `ses_worker_*` metric of the pipeline and coordinator registries, with its type and label names. */
export async function declaredMetrics(): Promise<Map<string, DeclaredMetric>> {
  const registries = [
    createPipelineMetrics().registry,
    createCoordinatorMetrics({ connectionsInUse: () => 0, sendsWaiting: () => 0 } as never, 1).registry,
  ];
  const declared = new Map<string, DeclaredMetric>();
  for (const registry of registries) {
    for (const metric of await registry.getMetricsAsJSON()) {
      if (!metric.name.startsWith('ses_worker_')) continue;
      const live = registry.getSingleMetric(metric.name) as unknown as { labelNames: string[] };
      declared.set(metric.name, { type: String(metric.type), labelNames: [...live.labelNames].sort() });
    }
    registry.clear();
  }
  return declared;
}

/** The awaited names no registry declares yet: what the checks may not find today. */
export function stillAwaited(declared: ReadonlyMap<string, unknown>): Set<string> {
  return new Set(AWAITED_METRICS.filter((name) => !declared.has(name)));
}
