/**
 * The daemon's verdict on a stored mail, read back from the S3 audit metadata (src/aws/audit-metadata.ts): waiting
 * for it after `inject` and `replay`, and saying every effect it records — who got a copy, what was forwarded,
 * which auto-replies went out, what failed — for the console, JSON and `local:send`.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';

import { readVerdict, type RecordedVerdict } from '../aws/audit-metadata.ts';
import { awsError, awsErrorName } from '../errors.ts';
import type { Output } from './output.ts';

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

/** Polls the object's metadata until a verdict answers `isAnswer`, the object is gone, or `timeoutMs` passed. */
export async function waitForOutcome(
  s3: S3Client,
  location: { bucket: string; key: string },
  timeoutMs: number,
  isAnswer: IsAnswer = anyVerdict,
): Promise<Outcome> {
  const deadline = Date.now() + timeoutMs;
  let pause = FIRST_POLL_MS;
  for (;;) {
    const stored = await headMail(s3, location.bucket, location.key);
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
export interface AwaitedMail {
  label: string;
  bucket: string;
  key: string;
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
  s3: S3Client,
  out: Output,
  mails: readonly AwaitedMail[],
  timeoutMs: number,
  isAnswer: IsAnswer = anyVerdict,
): Promise<{ outcomes: AwaitedOutcome[]; allFinal: boolean }> {
  const outcomes = await Promise.all(
    mails.map(async (mail) => {
      const outcome = await waitForOutcome(s3, mail, timeoutMs, isAnswer);
      const [first, ...rest] = describeOutcome(outcome);
      out.line(`${mail.label}: ${first ?? ''}`);
      for (const line of rest) out.line(line);
      return { ...mail, outcome: outcomeReport(outcome) };
    }),
  );
  return { outcomes, allFinal: outcomes.every((o) => o.outcome.final) };
}
