import { effectName } from '../aws/effect-ledger.ts';
import { rewriteForForward } from '../mail/forward.ts';
import { deliveryId } from './delivery-id.ts';
import { forwardedCopyBytes, guardedStep, routeFor, sendEffect, type EffectBase } from './effect-step.ts';
import type { EffectInput } from './effects.ts';
import type { GuardContext } from './guarded-effect.ts';
import type { EffectResult } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

/** One forward of the mail to one target of a recipient's rule, sent once (the ledger). */
export async function forward(
  input: EffectInput,
  target: string,
  ports: PipelinePorts,
  guard: GuardContext,
): Promise<EffectResult> {
  const { recipient, receipt } = input;
  const route = routeFor(target, ports);
  const base: EffectBase = { kind: 'forward', recipient, target, route };
  if (target === recipient) return { ...base, status: 'suppressed', reason: 'forward-to-self' };

  const key = effectName(recipient, `forward:${target}`);
  const result = await guardedStep(
    key,
    base,
    guard,
    ports,
    async (step) => {
      const raw = forwardedCopy(input, target, ports);
      const id = deliveryId(receipt.sesMessageId, input.generation, { kind: 'forward', recipient, target });
      const mail = { from: recipient, envelopeFrom: recipient, to: target, raw, id };
      return sendEffect(route, { ...mail, ...(input.permit && { permit: input.permit }) }, base, ports, step);
    },
    { copyBytes: forwardedCopyBytes(input.raw.length) },
  );
  if (result.status === 'sent') ports.metrics.forwardSent(ports.domain, route);
  return result;
}

/** The original bytes with the forward's header edits: From, subject prefix, our loop marker (and theirs kept). */
function forwardedCopy(input: EffectInput, target: string, ports: PipelinePorts): Buffer {
  const { recipient, receipt } = input;
  return rewriteForForward(input.raw, {
    forwardingAddress: recipient,
    originalRecipient: recipient,
    domain: ports.domain,
    subjectPrefix: ports.options.forwardSubjectPrefix,
    loopMarker: {
      name: ports.loopMarker.name,
      value: ports.loopMarker.valueFor({
        kind: 'forward',
        sesMessageId: receipt.sesMessageId,
        origin: recipient,
        target,
      }),
      carried: ports.loopMarker.carried(input.view.headers.get(ports.loopMarker.name.toLowerCase()) ?? []),
    },
    messageIdDomain: ports.domain,
    now: new Date(ports.clock.now()),
  });
}
