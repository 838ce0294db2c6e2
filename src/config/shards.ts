import { createHash } from 'node:crypto';

/** Shard `index` of `count`; `{ index: 0, count: 1 }` is every domain. */
export interface Shard {
  index: number;
  count: number;
}

export const ALL_DOMAINS: Shard = Object.freeze({ index: 0, count: 1 });

/**
 * The shard a domain belongs to: the first four bytes of SHA-256 of its (lower-case) name, big-endian, mod `count`.
 * It depends on the name and the count alone, so adding a domain never moves another one, every replica agrees
 * without talking to the others, and an operator can compute it in a shell (docs/scaling.md).
 */
export function shardOf(domain: string, count: number): number {
  return createHash('sha256').update(domain, 'utf8').digest().readUInt32BE(0) % count;
}

/** The domains of `domains` that `shard` serves, in their order. */
export function domainsOfShard(domains: readonly string[], shard: Shard): string[] {
  if (shard.count === 1) return [...domains];
  return domains.filter((domain) => shardOf(domain, shard.count) === shard.index);
}

/** Reads `i/n`; undefined when the text is not of that shape (the caller names the setting). */
export function parseShard(text: string): Shard | undefined {
  const match = /^(\d{1,4})\/(\d{1,4})$/.exec(text.trim());
  if (!match) return undefined;
  return { index: Number(match[1]), count: Number(match[2]) };
}
