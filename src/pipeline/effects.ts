/**
 * Stage 7: the effects of the rules of every delivered recipient — an auto-reply, then a forward to each target —
 * all at once. Nothing runs on mail carrying our own loop marker, nor on a header block past its bound. Bodies are
 * decoded only when an auto-reply may quote them, the one consumer of bodies. Never throws: a failure is the
 * effect's result.
 */
import type { RecipientEntry, RecipientRule } from '../aws/recipient-directory.ts';
import type { PermitOptions } from '../flow-control/send-pacer.ts';
import { headersIncomplete } from '../mail/mail-limits.ts';
import type { SplitMessage } from '../mail/header-block.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { Attempt } from './attempt.ts';
import { autoReply } from './autoreply-effect.ts';
import type { BounceResult } from './bounce.ts';
import { forward } from './forward-effect.ts';
import type { SesReceipt } from './notification.ts';
import type { EffectResult } from './outcome.ts';
import type { ParsedHeaders } from './parse.ts';
import { withBodies } from './parse.ts';
import type { PipelinePorts } from './ports.ts';

/** What one recipient's effects work from. */
export interface EffectInput {
  receipt: SesReceipt;
  /** The mail as received (forwards carry the original bytes, not the bounce rewrite). */
  raw: Buffer;
  /** `raw` split into its header fields and the rest (split once for every forward). */
  split: SplitMessage;
  view: MailView;
  isSesBounce: boolean;
  hasLoopMarker: boolean;
  recipient: string;
  rule: RecipientRule;
  /** Replay generation: part of the ledger key and the delivery id of every effect. */
  generation: number;
  /** Waiting for an SES send permit: the signal that ends the wait (shutdown), the notice that it is waiting. */
  permit?: PermitOptions;
}

export interface EffectsResult {
  effects: EffectResult[];
  /** The view the effects used: with bodies when an auto-reply needed them (the audit reads its limits). */
  view: MailView;
}

export async function runEffects(
  attempt: Attempt,
  raw: Buffer,
  parsed: ParsedHeaders,
  bounce: BounceResult,
  entries: ReadonlyMap<string, RecipientEntry>,
  ports: PipelinePorts,
): Promise<EffectsResult> {
  const withRules = recipientsWithRules(attempt, parsed, entries);
  const view = await bodiesIfQuoted(attempt, raw, parsed.view, withRules, ports);
  const lists = await Promise.all(
    withRules.map(({ recipient, rule }) => {
      const input: EffectInput = {
        receipt: attempt.receipt,
        raw,
        split: parsed.split,
        view,
        isSesBounce: bounce.isSesBounce,
        hasLoopMarker: parsed.loopMarker,
        recipient,
        rule,
        generation: attempt.generation,
        permit: attempt.permit,
      };
      return effectsOf(input, ports, attempt);
    }),
  );
  const effects = lists.flat();
  attempt.progress.effects.push(...effects);
  return { effects, view };
}

function recipientsWithRules(
  attempt: Attempt,
  parsed: ParsedHeaders,
  entries: ReadonlyMap<string, RecipientEntry>,
): Array<{ recipient: string; rule: RecipientRule }> {
  if (parsed.loopMarker || headersIncomplete(parsed.view.limits)) return [];
  return attempt.recipients.flatMap((recipient) => {
    const rule = entries.get(recipient)?.rule;
    const delivered = attempt.progress.recipients.get(recipient)?.state === 'delivered';
    return rule && delivered ? [{ recipient, rule }] : [];
  });
}

async function bodiesIfQuoted(
  attempt: Attempt,
  raw: Buffer,
  view: MailView,
  withRules: ReadonlyArray<{ rule: RecipientRule }>,
  ports: PipelinePorts,
): Promise<MailView> {
  if (!withRules.some(({ rule }) => rule.oooActive)) return view;
  const full = await withBodies(raw, view, { timeoutMs: ports.options.parseTimeoutMs });
  if (full.parseError) {
    ports.logger.warn(
      { sesMessageId: attempt.receipt.sesMessageId, parseError: full.parseError },
      'MIME parse failed; the auto-reply quotes no body',
    );
  }
  return full;
}

function effectsOf(input: EffectInput, ports: PipelinePorts, attempt: Attempt): Promise<EffectResult[]> {
  const effects: Array<Promise<EffectResult>> = [];
  if (input.rule.oooActive) effects.push(autoReply(input, ports, attempt.guard));
  for (const target of new Set(input.rule.forwards))
    effects.push(forward(input, target, ports, attempt.guard));
  return Promise.all(effects);
}
