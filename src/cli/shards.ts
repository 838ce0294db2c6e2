/**
 * `unified-worker shards --count n`: which domains of DOMAINS each shard serves (SHARD=i/n), with their queues, for
 * writing one deployment per shard and its KEDA triggers (docs/scaling.md). Reads no AWS resource.
 */
import { Command } from 'commander';

import { queueNameFor } from '../config/config.ts';
import { domainsOfShard } from '../config/shards.ts';
import { command, type CliApp, type CommonOptions } from './command.ts';
import { EXIT_OK, UsageError } from './exit.ts';
import { plural } from './output.ts';

interface ShardsOptions extends CommonOptions {
  count: string;
}

/** More shards than this would be a replica per handful of domains: a wrong number, not a plan. */
const MAX_SHARDS = 1024;

export function shardsCommand(app: CliApp): Command {
  const definition = new Command('shards')
    .description('list the domains (and queues) of each shard of DOMAINS, as SHARD=i/n splits them')
    .requiredOption('--count <n>', 'the number of shards (n)');
  return command<ShardsOptions>(app, definition, {
    domains: 'required',
    run: async ({ config, out }, options) => {
      const count = Number(options.count);
      if (!/^\d+$/.test(options.count.trim()) || count < 1 || count > MAX_SHARDS)
        throw new UsageError(`--count must be an integer 1..${MAX_SHARDS}, got "${options.count}"`);
      const shards = Array.from({ length: count }, (_, index) => {
        const domains = domainsOfShard(config.domains, { index, count });
        return {
          shard: `${index}/${count}`,
          domains: domains.map((domain) => ({
            domain,
            queue: queueNameFor(config.queueNameTemplate, domain),
          })),
        };
      });
      for (const { shard, domains } of shards) {
        out.line(`SHARD=${shard}: ${plural(domains.length, 'domain')}`);
        for (const { domain, queue } of domains) out.line(`  ${domain}  (queue ${queue})`);
        if (domains.length === 0) out.line('  none: a daemon with this SHARD refuses to start');
      }
      out.result({ count, shards });
      return EXIT_OK;
    },
  });
}
