import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Config } from '../config/config.ts';
import type { Logger } from '../log/logger.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import { TableGuard } from './table-guard.ts';

/** What a domain runtime needs of the table checks: TableGuard's own three methods. */
export interface DomainTableChecks {
  check(): Promise<readonly string[]>;
  suspect(): void;
  stop(): void;
}

/** A check younger than this answers a domain that joins, instead of a new round of DescribeTable calls. */
const FRESH_MS = 5_000;

/**
 * The table checks of a poller thread, shared by its domains: every domain uses the same tables, and a thousand
 * domains each checking them would be ten thousand control-plane calls at start (DynamoDB throttles those). The
 * result, and the metrics and hold it implies, go to every domain of the thread; a suspicion raised by any domain
 * checks again for all.
 */
export class SharedTableGuard {
  private readonly members = new Map<string, (problems: readonly string[]) => void>();
  private readonly guard: TableGuard;
  private readonly checks = new Map<string, boolean>();
  private last: { problems: readonly string[]; at: number } | undefined;
  private pending: Promise<readonly string[]> | undefined;
  private readonly metrics: PipelineMetrics;

  constructor(options: {
    ddb: DynamoDBDocumentClient;
    tables: Config['tables'];
    logger: Logger;
    metrics: PipelineMetrics;
  }) {
    const { metrics } = options;
    this.metrics = metrics;
    this.guard = new TableGuard({
      ddb: options.ddb,
      tables: options.tables,
      domain: '',
      logger: options.logger,
      metrics: {
        deploymentCheck: (_domain, check, failing) => {
          this.checks.set(check, failing);
          for (const domain of this.members.keys()) metrics.deploymentCheck(domain, check, failing);
        },
        deploymentFault: (_domain, kind) => {
          for (const domain of this.members.keys()) metrics.deploymentFault(domain, kind);
        },
      },
      onResult: (problems) => {
        this.last = { problems, at: Date.now() };
        for (const onResult of this.members.values()) onResult(problems);
      },
    });
  }

  /** A domain's view: its hold follows every check from now on. */
  join(domain: string, onResult: (problems: readonly string[]) => void): DomainTableChecks {
    this.members.set(domain, onResult);
    // A domain joining after a check gets its result at once (its poller exists by now).
    for (const [check, failing] of this.checks) this.metrics.deploymentCheck(domain, check, failing);
    if (this.last) onResult(this.last.problems);
    return {
      check: () => this.check(),
      suspect: () => this.guard.suspect(),
      stop: () => {
        this.members.delete(domain);
        if (this.members.size === 0) this.guard.stop();
      },
    };
  }

  /** The problems found: a check running now, one finished moments ago, or a new one. */
  private check(): Promise<readonly string[]> {
    if (this.pending) return this.pending;
    if (this.last && Date.now() - this.last.at < FRESH_MS) return Promise.resolve(this.last.problems);
    this.pending = this.guard.check().finally(() => (this.pending = undefined));
    return this.pending;
  }
}
