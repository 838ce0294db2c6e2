/**
 * Up to this many domains, each gets a thread of its own (the design card's shape); beyond it, this many threads
 * share the domains. Measured in BENCHMARKS.md ("Many domains"): an idle thread costs more than an idle domain in a
 * shared thread by an order of magnitude, and past a few threads per core more threads add no throughput.
 */
export const THREAD_PER_DOMAIN_UP_TO = 16;

/**
 * Which domains each poller thread polls: `threads` = POLLER_THREADS (0: one per domain up to
 * {@link THREAD_PER_DOMAIN_UP_TO} domains, that many threads beyond), never more threads than domains. Domains are
 * dealt round-robin in their DOMAINS order, so every thread gets the same number of them, give or take one.
 */
export function threadLayout(domains: readonly string[], threads: number): string[][] {
  const wanted = threads > 0 ? threads : Math.min(domains.length, THREAD_PER_DOMAIN_UP_TO);
  const count = Math.max(1, Math.min(wanted, domains.length));
  const layout: string[][] = Array.from({ length: count }, () => []);
  domains.forEach((domain, i) => layout[i % count]!.push(domain));
  return layout;
}
