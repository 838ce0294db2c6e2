/**
 * Blocklist decision: which recipients of a message refuse mail from its sender. Pure logic; loading the
 * entries from storage is someone else's job. Patterns use Python `fnmatch` semantics (see
 * `fnmatch.ts`), as the original daemon did, so existing entries keep their meaning.
 */
import { compileFnmatch, type CompiledPattern } from './fnmatch.ts';

export interface BlockDecision {
  /** The recipient exactly as passed in, so callers can correlate decisions with their own list. */
  recipient: string;
  blocked: boolean;
  /** The first pattern (as stored) that matched the sender; present only when blocked. */
  pattern?: string;
}

/** Enough for every hot pattern; bounded because patterns come from a user-editable database. */
const PATTERN_CACHE_LIMIT = 10_000;
const patternCache = new Map<string, CompiledPattern>();

function compiled(pattern: string): CompiledPattern {
  const hit = patternCache.get(pattern);
  if (hit !== undefined) {
    // Re-insert so Map iteration order approximates recency and eviction drops the coldest entry.
    patternCache.delete(pattern);
    patternCache.set(pattern, hit);
    return hit;
  }
  const fresh = compileFnmatch(pattern);
  patternCache.set(pattern, fresh);
  if (patternCache.size > PATTERN_CACHE_LIMIT) {
    const oldest = patternCache.keys().next();
    if (oldest.done !== true) patternCache.delete(oldest.value);
  }
  return fresh;
}

/** Bounces (`MAIL FROM:<>`) must always get through, and an SMTP path may still carry its angle brackets. */
function normalizeSender(sender: unknown): string {
  if (typeof sender !== 'string') return '';
  let s = sender.trim();
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1).trim();
  return s.toLowerCase();
}

export function checkBlocked(
  sender: string,
  recipients: readonly string[],
  entries: ReadonlyMap<string, readonly string[]>,
): BlockDecision[] {
  const from = normalizeSender(sender);
  return recipients.map((recipient) => {
    if (from === '') return { recipient, blocked: false };
    const patterns: readonly unknown[] | undefined = entries.get(recipient.trim().toLowerCase());
    if (patterns === undefined) return { recipient, blocked: false };
    // Rows come from a database a UI writes to; a malformed element must not throw or block everyone.
    for (const pattern of patterns) {
      if (typeof pattern !== 'string' || pattern === '') continue;
      if (compiled(pattern).matches(from)) return { recipient, blocked: true, pattern };
    }
    return { recipient, blocked: false };
  });
}
