import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { TABLES } from '../aws/resources.ts';
import { checkTable, type TableCheckResult } from '../aws/table-check.ts';
import type { Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';

export interface TableGuardOptions {
  ddb: DynamoDBDocumentClient;
  tables: Config['tables'];
  domain: string;
  logger: Logger;
  metrics: Pick<PipelineMetrics, 'deploymentCheck' | 'deploymentFault'>;
  /** After every check: what makes the tables unusable, one entry per table; empty when they all are fine. */
  onResult: (problems: readonly string[]) => void;
  /** Re-check interval while a check fails. */
  recheckMs?: number;
  /** Shortest time between a check and one triggered by a failing table call. */
  suspicionIntervalMs?: number;
}

/**
 * Checks every table the domain uses (DescribeTable, DescribeTimeToLive: src/aws/table-check.ts) before it receives
 * any mail, again every 30 s while one fails, and at once when a table call fails as a missing or misshapen table
 * would. A wrong table is a deployment fault found once and shown (/health, /ready, a metric, the log), instead of
 * every mail walking its retry schedule into the dead-letter queue on its own. TTL being off is only a warning.
 */
export class TableGuard {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<readonly string[]> | undefined;
  private again = false;
  private stopped = false;
  private failing = new Set<string>();
  private readonly warned = new Set<string>();
  private lastCheckAt = 0;
  private suspicionTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: TableGuardOptions) {}

  /** Runs the checks now (a check already running is followed by one more) and returns the problems found. */
  check(): Promise<readonly string[]> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.runChecks().finally(() => {
      this.running = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        void this.check();
      }
    });
    return this.running;
  }

  /**
   * A table call failed as a missing or misshapen table would: check again now, or, when a check ran moments ago,
   * as soon as the interval has passed (a ValidationException need not be about the table, and every failing mail
   * reports it, so this bounds the checks to one per interval).
   */
  suspect(): void {
    if (this.stopped || this.suspicionTimer) return;
    const wait = this.lastCheckAt + (this.options.suspicionIntervalMs ?? 5_000) - Date.now();
    this.suspicionTimer = setTimeout(
      () => {
        this.suspicionTimer = undefined;
        void this.check();
      },
      Math.max(0, wait),
    );
    this.suspicionTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.suspicionTimer);
  }

  private async runChecks(): Promise<readonly string[]> {
    const { ddb, tables, domain, metrics } = this.options;
    this.lastCheckAt = Date.now();
    const configured = TABLES.filter((spec) => tables[spec.role] !== '');
    const results = await Promise.all(configured.map((spec) => checkTable(ddb, spec, tables[spec.role])));
    const problems: string[] = [];
    const nowFailing = new Set<string>();
    for (const result of results) {
      this.report(result);
      metrics.deploymentCheck(domain, `table:${result.table}`, !result.ok);
      if (result.ok) continue;
      nowFailing.add(result.table);
      metrics.deploymentFault(domain, 'table');
      problems.push(`table ${result.table} (${result.role}): ${result.problems.join('; ')}`);
    }
    for (const table of this.failing) {
      if (!nowFailing.has(table)) this.options.logger.info({ table }, 'table check passes again');
    }
    this.failing = nowFailing;
    if (this.stopped) return problems;
    this.options.onResult(problems);
    clearTimeout(this.timer);
    if (problems.length > 0) {
      this.timer = setTimeout(() => void this.check(), this.options.recheckMs ?? 30_000);
      this.timer.unref();
    }
    return problems;
  }

  private report(result: TableCheckResult): void {
    const { logger } = this.options;
    if (!result.ok) {
      logger.error(
        { table: result.table, role: result.role, problems: result.problems },
        'table check failed: this domain receives no mail until it passes (mail waits in SQS)',
      );
    }
    if (result.inconclusive !== undefined) {
      logger.warn(
        { table: result.table, reason: result.inconclusive },
        'table could not be checked; assuming it is usable',
      );
    }
    for (const warning of result.warnings) {
      const key = `${result.table}\n${warning}`;
      if (this.warned.has(key)) continue;
      this.warned.add(key);
      logger.warn({ table: result.table, warning }, 'table check warning');
    }
  }
}
