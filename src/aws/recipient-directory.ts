import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Clock } from '../clock.ts';
import { MAIL_LIMITS, type MailLimit } from '../mail/mail-limits.ts';
import { BATCH_GET_MAX_KEYS, batchGet, stringList } from './dynamo.ts';

/** A recipient's rule (table `email-rules`): an out-of-office reply and forward targets. */
export interface RecipientRule {
  oooActive: boolean;
  oooMessage: string;
  oooContentType: 'text' | 'html';
  forwards: string[];
}

/** What the rules and blocklist tables hold for one recipient. */
export interface RecipientEntry {
  rule?: RecipientRule;
  blockedPatterns: string[];
  /** Bounds the recipient's items went past (the data was cut to them); absent when none. */
  limits?: MailLimit[];
}

/** The rules and blocklists of the hosted addresses. */
export interface RecipientDirectory {
  /** Every recipient's entry in one BatchGetItem over both tables (unprocessed keys retried), cached per thread. */
  lookup(recipients: readonly string[]): Promise<Map<string, RecipientEntry>>;
}

export interface DynamoDirectoryOptions {
  tables: { rules: string; blocklist: string };
  clock: Clock;
  /** Per-thread cache lifetime of entries; 0 disables. */
  cacheSeconds: number;
  /** Told when a recipient's item is read over a bound (MAIL_LIMITS) and cut to it, for the log. */
  onLimit?: (recipient: string, limit: MailLimit) => void;
}

export function createDynamoDirectory(
  ddb: DynamoDBDocumentClient,
  options: DynamoDirectoryOptions,
): RecipientDirectory {
  const { tables, clock } = options;
  const cache = new Map<string, { at: number; entry: RecipientEntry }>();
  const cacheMs = options.cacheSeconds * 1000;

  function noteCut(recipient: string, entry: RecipientEntry, limit: MailLimit): void {
    if (entry.limits?.includes(limit)) return;
    (entry.limits ??= []).push(limit);
    options.onLimit?.(recipient, limit);
  }

  async function read(recipients: readonly string[]): Promise<Map<string, RecipientEntry>> {
    const result = new Map<string, RecipientEntry>();
    for (const r of recipients) result.set(r, { blockedPatterns: [] });
    // 50 recipients × 2 tables per call.
    for (let i = 0; i < recipients.length; i += BATCH_GET_MAX_KEYS / 2) {
      const keys = recipients.slice(i, i + BATCH_GET_MAX_KEYS / 2).map((r) => ({ email_address: r }));
      const items = await batchGet(ddb, clock, {
        [tables.rules]: { Keys: keys },
        [tables.blocklist]: { Keys: keys },
      });
      for (const item of items[tables.rules] ?? []) {
        const key = String(item.email_address ?? '').toLowerCase();
        const entry = result.get(key);
        if (entry) entry.rule = toRule(item, (limit) => noteCut(key, entry, limit));
      }
      for (const item of items[tables.blocklist] ?? []) {
        const key = String(item.email_address ?? '').toLowerCase();
        const entry = result.get(key);
        if (!entry) continue;
        entry.blockedPatterns = blockedPatterns(item.blocked_patterns, (limit) => noteCut(key, entry, limit));
      }
    }
    return result;
  }

  return {
    async lookup(recipients) {
      const unique = [...new Set(recipients.map((r) => r.toLowerCase()))];
      const now = clock.now();
      const result = new Map<string, RecipientEntry>();
      const missing: string[] = [];
      for (const r of unique) {
        const hit = cacheMs > 0 ? cache.get(r) : undefined;
        if (hit && now - hit.at < cacheMs) result.set(r, hit.entry);
        else missing.push(r);
      }
      if (missing.length === 0) return result;
      for (const [r, entry] of await read(missing)) {
        result.set(r, entry);
        if (cacheMs > 0) cache.set(r, { at: now, entry });
      }
      if (cache.size > 10_000) {
        for (const [key, value] of cache) if (now - value.at >= cacheMs) cache.delete(key);
      }
      return result;
    },
  };
}

/**
 * A rules item, each mail-facing size cut to its bound (an item may be 400 KB of whatever a UI wrote). A forward
 * target that is not a usable mailbox (over MAIL_LIMITS.forwardTargetChars, no `@`, a control character or space)
 * is skipped: sending to it could only fail, and its ledger key would be refused.
 */
function toRule(item: Record<string, unknown>, onLimit: (limit: MailLimit) => void): RecipientRule {
  const message = typeof item.ooo_message === 'string' ? item.ooo_message : '';
  const targets = stringList(item.forwards).map((f) => f.trim().toLowerCase());
  const usable = targets.filter(usableForwardTarget);
  if (usable.length < targets.length) onLimit('forward-target');
  return {
    oooActive: item.ooo_active === true,
    oooMessage: boundedText(message, MAIL_LIMITS.oooMessageChars, () => onLimit('ooo-message')),
    oooContentType: item.ooo_content_type === 'html' ? 'html' : 'text',
    forwards: bounded([...new Set(usable)], MAIL_LIMITS.forwards, () => onLimit('forwards')),
  };
}

function usableForwardTarget(target: string): boolean {
  return target.length <= MAIL_LIMITS.forwardTargetChars && /^[^\s@]+@[^\s@]+$/.test(target);
}

/** Patterns over MAIL_LIMITS.patternChars are skipped; the rest are cut to MAIL_LIMITS.blockedPatterns. */
function blockedPatterns(value: unknown, onLimit: (limit: MailLimit) => void): string[] {
  const patterns = stringList(value);
  const usable = patterns.filter((p) => p.length <= MAIL_LIMITS.patternChars);
  if (usable.length < patterns.length) onLimit('blocked-patterns');
  return bounded(usable, MAIL_LIMITS.blockedPatterns, () => onLimit('blocked-patterns'));
}

function bounded<T>(list: T[], max: number, onCut: () => void): T[] {
  if (list.length <= max) return list;
  onCut();
  return list.slice(0, max);
}

/** Cut on a code point boundary, so a surrogate pair is never split. */
function boundedText(text: string, maxChars: number, onCut: () => void): string {
  if (text.length <= maxChars) return text;
  onCut();
  const end = /[\uD800-\uDBFF]/.test(text[maxChars - 1] ?? '') ? maxChars - 1 : maxChars;
  return text.slice(0, end);
}
