import { effectName } from '../aws/effect-ledger.ts';
import { composeAutoReply } from '../mail/autoreply-compose.ts';
import { autoReplyDecision } from '../mail/autoreply-policy.ts';
import { deliveryId } from './delivery-id.ts';
import {
  AUTO_REPLY_MAX_BYTES,
  failure,
  guardedStep,
  routeFor,
  sendEffect,
  type EffectBase,
  type EffectStep,
  type Ran,
} from './effect-step.ts';
import type { EffectInput } from './effects.ts';
import type { GuardContext } from './guarded-effect.ts';
import type { EffectResult } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

/**
 * The out-of-office reply of one recipient (RFC 3834 / RFC 5230 rules in mail/autoreply-policy.ts), at most one per
 * sender per OOO_REPLY_INTERVAL_DAYS (the reply log), sent once (the ledger).
 */
export async function autoReply(
  input: EffectInput,
  ports: PipelinePorts,
  guard: GuardContext,
): Promise<EffectResult> {
  const { recipient, view, receipt } = input;
  const decision = autoReplyDecision({
    view,
    // An unusable envelope sender went on as the null sender; the policy names it for what it was.
    envelopeSender: receipt.invalidSource?.address ?? receipt.source,
    recipient,
    isSesBounce: input.isSesBounce,
    hasLoopMarker: input.hasLoopMarker,
    requireAddressed: ports.options.oooRequireAddressed,
    ...(ports.options.oooRequireAuthenticated && {
      requireAuthenticated: { verdicts: receipt.verdicts, hostedDomains: ports.hostedDomains },
    }),
  });
  if (!decision.reply)
    return { kind: 'autoreply', recipient, target: '', status: 'suppressed', reason: decision.reason };
  const target = decision.to.address;
  const route = routeFor(target, ports);
  const base: EffectBase = { kind: 'autoreply', recipient, target, route };
  const key = effectName(recipient, 'autoreply');
  const result = await guardedStep(
    key,
    base,
    guard,
    ports,
    (step) => reserveAndSend(input, decision.to, base, ports, step),
    { copyBytes: AUTO_REPLY_MAX_BYTES },
  );
  if (result.status === 'sent') ports.metrics.autoReplySent(ports.domain);
  return result;
}

/** Reserves the reply in the reply log, then composes and sends it; a reply not sent gives the reservation back. */
async function reserveAndSend(
  input: EffectInput,
  to: { address: string; name: string },
  base: EffectBase,
  ports: PipelinePorts,
  step: EffectStep,
): Promise<Ran> {
  const { recipient, receipt } = input;
  const target = to.address;
  const now = ports.clock.now();
  const intervalMs = ports.options.oooReplyIntervalDays * 86_400_000;
  if (!(await ports.replies.reserve(recipient, target, now, intervalMs))) {
    return {
      result: { ...base, status: 'suppressed', reason: 'already-replied-within-interval' },
      record: true,
    };
  }
  let ran: Ran;
  try {
    const reply = await composeAutoReply({
      recipient,
      to,
      original: input.view,
      message: input.rule.oooMessage,
      contentType: input.rule.oooContentType,
      subjectPrefix: ports.options.autoReplySubjectPrefix,
      loopMarker: {
        name: ports.loopMarker.name,
        value: ports.loopMarker.valueFor({
          kind: 'auto-reply',
          sesMessageId: receipt.sesMessageId,
          origin: recipient,
          target,
        }),
      },
      messageIdDomain: ports.domain,
      now: new Date(now),
    });
    // RFC 3834 §3.3: auto-replies go out with a null envelope sender so they can never bounce back into a loop.
    ran = await sendEffect(
      base.route ?? 'ses',
      {
        from: recipient,
        envelopeFrom: '',
        to: target,
        raw: reply.raw,
        id: deliveryId(
          receipt.sesMessageId,
          input.generation,
          { kind: 'autoreply', recipient },
          ports.options.deliveryIdSecret,
        ),
        ...(input.permit && { permit: input.permit }),
      },
      base,
      ports,
      step,
    );
  } catch (error) {
    ran = failure(base, error, ports);
  }
  // A reply that was not sent must not block the next mail's reply for the whole interval.
  if (ran.result.status !== 'sent' && !ran.record)
    await ports.replies.cancel(recipient, target, now).catch(() => undefined);
  return ran;
}
