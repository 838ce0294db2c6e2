/**
 * The daemon's verdict on a stored mail, read back from the S3 audit metadata (src/aws/audit-metadata.ts) or, for a
 * plain delivery, from the message's ledger record, which then holds it instead: waiting for it after `inject` and
 * `replay`, and saying every effect it records — who got a copy, what was forwarded, which auto-replies went out,
 * what failed — for the console, JSON and `local:send`.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';

import {
  REPLAY_GENERATION_KEY,
  finalMetadata,
  readVerdict,
  type AuditStatus,
  type RecordedVerdict,
} from '../aws/audit-metadata.ts';
import {
  LEDGER_RETENTION_SECONDS,
  createDynamoLedger,
  messageKey,
  type EffectLedger,
  type RecordedMessage,
} from '../aws/effect-ledger.ts';
import { systemClock } from '../clock.ts';
import type { Config } from '../config/config.ts';
import { awsError, awsErrorName } from '../errors.ts';
import type { AwsClients } from '../aws/clients.ts';
import type { Output } from './output.ts';

/** Where the commands read what became of a stored mail: its object, and the ledger (a plain delivery's verdict). */
export interface VerdictReader {
  readonly s3: S3Client;
  /** The daemon's ledger (IDEMPOTENCY_TABLE); absent when it is off, and every verdict is then on the object. */
  readonly ledger?: EffectLedger;
}

export function verdictReader(context: { config: Config; clients: AwsClients }): VerdictReader {
  const table = context.config.tables.idempotency;
  return {
    s3: context.clients.s3,
    ...(table && { ledger: createDynamoLedger(context.clients.ddb, { table, clock: systemClock }) }),
  };
}

/** A stored mail in a domain's bucket. */
export interface DomainMail {
  bucket: string;
  key: string;
  domain: string;
}

export type StoredMail =
  | { kind: 'stored'; metadata: Record<string, string>; lastModified?: Date; size?: number }
  | { kind: 'missing' };

/** HeadObject: the object's user metadata, or `missing` when there is no such object. */
export async function headMail(s3: S3Client, bucket: string, key: string): Promise<StoredMail> {
  try {
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return {
      kind: 'stored',
      metadata: head.Metadata ?? {},
      ...(head.LastModified && { lastModified: head.LastModified }),
      ...(head.ContentLength !== undefined && { size: head.ContentLength }),
    };
  } catch (error) {
    const name = awsErrorName(error);
    if (name === 'NotFound' || name === 'NoSuchKey') return { kind: 'missing' };
    throw awsError('S3_ERROR', `HeadObject s3://${bucket}/${key}`, error);
  }
}

/** HeadObject, completed from the ledger when the object has no verdict (see {@link withLedgerVerdicts}). */
export async function readStoredMail(reader: VerdictReader, mail: DomainMail): Promise<StoredMail> {
  const stored = await headMail(reader.s3, mail.bucket, mail.key);
  if (stored.kind === 'missing') return stored;
  const [completed] = await withLedgerVerdicts(reader, mail.domain, [{ ...stored, key: mail.key }]);
  return { ...stored, metadata: completed?.metadata ?? stored.metadata };
}

/**
 * Completes the metadata of mails without an S3 verdict from their ledger records: a plain delivery keeps its
 * verdict there (pipeline/audit.ts), given here in the S3 keys (`processed_by` ending in ` (ledger)`, the envelope
 * recipients from the record's delivery marks). A mail with neither, older than the ledger keeps records, may have
 * been delivered long ago: `processed` is `unknown` then, never taken for unprocessed.
 */
export async function withLedgerVerdicts<
  T extends { key: string; metadata: Record<string, string>; lastModified?: Date },
>(reader: VerdictReader, domain: string, mails: readonly T[], now = Date.now()): Promise<T[]> {
  const { ledger } = reader;
  const open = mails.filter((m) => m.metadata.status === undefined);
  if (!ledger || open.length === 0) return [...mails];
  const keyOf = (m: T) =>
    messageKey(
      m.key.slice(m.key.lastIndexOf('/') + 1),
      domain,
      Number(m.metadata[REPLAY_GENERATION_KEY] ?? '0') || 0,
    );
  const records = await ledger.read(open.map(keyOf));
  const forgottenBefore = now - LEDGER_RETENTION_SECONDS * 1000;
  return mails.map((mail) => {
    if (mail.metadata.status !== undefined) return mail;
    const record = records.get(keyOf(mail));
    if (record?.verdict)
      return { ...mail, metadata: { ...mail.metadata, ...ledgerMetadata(record, domain) } };
    const old = mail.lastModified !== undefined && mail.lastModified.getTime() < forgottenBefore;
    return old ? { ...mail, metadata: { ...mail.metadata, processed: 'unknown' } } : mail;
  });
}

/** A ledger verdict in the S3 keys; a plain delivery's in full (nothing but its recipients to say). */
function ledgerMetadata(record: RecordedMessage, domain: string): Record<string, string> {
  const verdict = record.verdict!;
  const processedBy = { processed_by: `worker-${domain} (ledger)` };
  if (verdict.status !== 'delivered') {
    return { processed: 'true', processed_at: String(verdict.at), status: verdict.status, ...processedBy };
  }
  const metadata = finalMetadata({
    status: verdict.status as Exclude<AuditStatus, 'failed'>,
    at: verdict.at * 1000,
    domain,
    envelopeRecipients: record.delivered,
    invalid: [],
    contentRejected: [],
    failedEffects: [],
    sentEffects: [],
  });
  return { ...metadata, ...processedBy };
}

/**
 * What became of a mail: a final verdict; `removed` (every recipient blocked the sender, so the daemon deleted the
 * object); `gave-up` (retried MAX_RECEIVES times: the notification is in the dead-letter queue); or `pending` (no
 * verdict within the wait: deferred and retried later, or the daemon is not running).
 */
export type Outcome =
  | { kind: 'final'; verdict: RecordedVerdict; metadata: Record<string, string> }
  | { kind: 'removed' }
  | { kind: 'gave-up'; verdict: RecordedVerdict; metadata: Record<string, string> }
  | { kind: 'pending'; waitedMs: number };

/** A verdict the waiting command did not ask about yet (an older one, or none at all). */
export type IsAnswer = (metadata: Record<string, string>) => boolean;

/** A fresh mail: any verdict answers. */
export const anyVerdict: IsAnswer = (metadata) => metadata.status !== undefined;

/** The first looks come soon (a daemon answers within a second); later ones spread out (200 mails waited on). */
const FIRST_POLL_MS = 100;
const LONGEST_POLL_MS = 2_000;

/** Polls the mail's verdict until one answers `isAnswer`, the object is gone, or `timeoutMs` passed. */
export async function waitForOutcome(
  reader: VerdictReader,
  location: DomainMail,
  timeoutMs: number,
  isAnswer: IsAnswer = anyVerdict,
): Promise<Outcome> {
  const deadline = Date.now() + timeoutMs;
  let pause = FIRST_POLL_MS;
  for (;;) {
    const stored = await readStoredMail(reader, location);
    if (stored.kind === 'missing') return { kind: 'removed' };
    if (isAnswer(stored.metadata)) {
      const verdict = readVerdict(stored.metadata);
      if (verdict.processed) return { kind: 'final', verdict, metadata: stored.metadata };
      if (verdict.gaveUp) return { kind: 'gave-up', verdict, metadata: stored.metadata };
    }
    const left = deadline - Date.now();
    if (left <= 0) return { kind: 'pending', waitedMs: timeoutMs };
    await sleep(Math.min(pause, left));
    pause = Math.min(LONGEST_POLL_MS, Math.round(pause * 1.5));
  }
}

/** Final: the daemon is done with the mail (delivered or not); anything else leaves it to be retried. */
export function isFinal(outcome: Outcome): boolean {
  return outcome.kind === 'final' || outcome.kind === 'removed';
}

/** The outcome as one JSON object: the status and every effect recorded. */
export interface OutcomeReport {
  status: string;
  final: boolean;
  /** Who got a copy; `complete` false when the recorded list is cut, absent when the verdict does not say. */
  delivered?: { addresses: string[]; complete: boolean };
  forwarded?: string[];
  autoReplied?: string[];
  /** False when the sent effects are cut, or not recorded by the worker that decided. */
  effectsComplete: boolean;
  invalid?: string[];
  contentRejected?: Array<{ recipient: string; detail: string }>;
  blockedSender?: string;
  failedEffects?: string[];
  failureReason?: string;
}

export function outcomeReport(outcome: Outcome): OutcomeReport {
  if (outcome.kind === 'pending') return { status: 'pending', final: false, effectsComplete: false };
  if (outcome.kind === 'removed') {
    return {
      status: 'blocked',
      final: true,
      delivered: { addresses: [], complete: true },
      effectsComplete: true,
    };
  }
  const v = outcome.verdict;
  // Mail nobody received runs no rules, so it has no forwards or auto-replies to record.
  const nobody = v.deliveredTo?.complete === true && v.deliveredTo.addresses.length === 0;
  const sent = v.sentEffects ?? (nobody ? { items: [], complete: true } : undefined);
  const effectsOf = (kind: string) =>
    (sent?.items ?? []).filter((e) => e.startsWith(`${kind}:`)).map((e) => e.slice(kind.length + 1));
  return {
    status: outcome.kind === 'gave-up' ? 'gave-up' : (v.status ?? 'unknown'),
    final: outcome.kind === 'final',
    ...(v.deliveredTo && { delivered: v.deliveredTo }),
    ...(sent && { forwarded: effectsOf('forward'), autoReplied: effectsOf('autoreply') }),
    effectsComplete: sent?.complete ?? false,
    ...(v.invalid.length > 0 && { invalid: v.invalid }),
    ...(v.contentRejected.length > 0 && { contentRejected: v.contentRejected }),
    ...(v.blockedSender !== undefined && { blockedSender: v.blockedSender }),
    ...(v.failedEffects.length > 0 && { failedEffects: v.failedEffects }),
    ...(v.failureReason !== undefined && { failureReason: v.failureReason }),
  };
}

/** `status=partial` and one indented line per effect, for the console. */
export function describeOutcome(outcome: Outcome): string[] {
  if (outcome.kind === 'pending') {
    return [
      `no final outcome within ${outcome.waitedMs / 1000} s: deferred and retried later, or the daemon is not ` +
        "running (see the worker's log for the SES id)",
    ];
  }
  if (outcome.kind === 'removed') {
    return ['status=blocked (every recipient blocks the sender; the S3 object was deleted)'];
  }
  const report = outcomeReport(outcome);
  if (outcome.kind === 'gave-up') {
    return [
      `status=failed, not final: the worker gave up after MAX_RECEIVES (${report.failureReason ?? 'no reason recorded'}); ` +
        'the notification is in the dead-letter queue (dlq show)',
    ];
  }
  return [`status=${report.status}`, ...effectLines(report)];
}

function effectLines(report: OutcomeReport): string[] {
  const lines: string[] = [];
  const list = (items: readonly string[], complete = true) =>
    `${items.join(', ')}${complete ? '' : ', and more (the recorded list is cut)'}`;
  if (report.delivered === undefined) lines.push('  delivered: not recorded (delivered_to)');
  else if (report.delivered.addresses.length > 0 || !report.delivered.complete) {
    lines.push(`  delivered to ${list(report.delivered.addresses, report.delivered.complete)}`);
  }
  for (const recipient of report.invalid ?? [])
    lines.push(`  refused: ${recipient} (mailbox unknown or unusable)`);
  for (const r of report.contentRejected ?? []) lines.push(`  content rejected: ${r.recipient}: ${r.detail}`);
  if (report.blockedSender !== undefined) lines.push(`  blocked sender: ${report.blockedSender}`);
  if (report.forwarded === undefined) {
    lines.push('  forwards and auto-replies: not recorded by this worker (sent_effects)');
  } else {
    if (report.forwarded.length > 0) lines.push(`  forwarded to ${list(report.forwarded)}`);
    if ((report.autoReplied ?? []).length > 0)
      lines.push(`  auto-replied to ${list(report.autoReplied ?? [])}`);
    if (!report.effectsComplete)
      lines.push('  (more forwards or auto-replies went out: the recorded list is cut)');
  }
  for (const effect of report.failedEffects ?? []) lines.push(`  failed: ${effect.replace(':', ' to ')}`);
  return lines;
}

/** A stored mail a command waits on, and the label its lines start with (the domain, or the key). */
export interface AwaitedMail extends DomainMail {
  label: string;
}

export interface AwaitedOutcome {
  label: string;
  bucket: string;
  key: string;
  outcome: OutcomeReport;
}

/**
 * Waits for every mail's verdict at once (one deadline for all), prints each as its lines are known, and returns
 * the reports; `allFinal` is false when any is pending or was given up.
 */
export async function awaitOutcomes(
  reader: VerdictReader,
  out: Output,
  mails: readonly AwaitedMail[],
  timeoutMs: number,
  isAnswer: IsAnswer = anyVerdict,
): Promise<{ outcomes: AwaitedOutcome[]; allFinal: boolean }> {
  const outcomes = await Promise.all(
    mails.map(async (mail) => {
      const outcome = await waitForOutcome(reader, mail, timeoutMs, isAnswer);
      const [first, ...rest] = describeOutcome(outcome);
      out.line(`${mail.label}: ${first ?? ''}`);
      for (const line of rest) out.line(line);
      return { ...mail, outcome: outcomeReport(outcome) };
    }),
  );
  return { outcomes, allFinal: outcomes.every((o) => o.outcome.final) };
}
