/**
 * The DNS lookup of the MX check, behind an interface so tests and the local stack can point it at their own DNS
 * server (DOCTOR_DNS_SERVERS) or replace it. Each lookup is one try with the doctor's deadline.
 */
import { Resolver } from 'node:dns/promises';

export interface MxRecord {
  exchange: string;
  priority: number;
}

export interface MxResolver {
  resolveMx(domain: string): Promise<MxRecord[]>;
  /** Ends every lookup still running (they reject with ECANCELLED). */
  cancel(): void;
}

/** node:dns's resolver (c-ares, not getaddrinfo), on `servers` or the system's. */
export function createMxResolver(servers: readonly string[], timeoutMs: number): MxResolver {
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  if (servers.length > 0) resolver.setServers([...servers]);
  return {
    resolveMx: (domain) => resolver.resolveMx(domain),
    cancel: () => resolver.cancel(),
  };
}
