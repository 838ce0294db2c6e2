import { effectName } from '../aws/effect-ledger.ts';
import { rewriteSplitForForward } from '../mail/forward.ts';
import { deliveryId } from './delivery-id.ts';
import { forwardedCopyBytes, guardedStep, routeFor, sendEffect, type EffectBase } from './effect-step.ts';
import type { EffectInput } from './effects.ts';
import type { GuardContext } from './guarded-effect.ts';
import type { SesVerdicts } from './notification.ts';
import type { EffectResult } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';
import { verdictFields } from './verdicts.ts';

/**
 * One forward of the mail to one target of a recipient's rule, sent once (the ledger). Mail SES marked spam or virus
 * FAIL does not go to outside addresses through SES unless FORWARD_SPAM_POLICY=tag: forwarding what SES itself
 * flagged is how SES accounts get paused. Forwards within the hosted domains go to our own mail server and are kept.
 */
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
  const flagged = route === 'ses' ? flaggedBySes(receipt.verdicts) : undefined;
  if (flagged && ports.options.forwardSpamPolicy === 'skip')
    return { ...base, status: 'suppressed', reason: flagged };

  const key = effectName(recipient, `forward:${target}`);
  const result = await guardedStep(
    key,
    base,
    guard,
    ports,
    async (step) => {
      const raw = forwardedCopy(input, target, ports, flagged !== undefined);
      const effect = { kind: 'forward', recipient, target } as const;
      const id = deliveryId(receipt.sesMessageId, input.generation, effect, ports.options.deliveryIdSecret);
      const mail = { from: recipient, envelopeFrom: recipient, to: target, raw, id };
      return sendEffect(route, { ...mail, ...(input.permit && { permit: input.permit }) }, base, ports, step);
    },
    { copyBytes: forwardedCopyBytes(input.raw.length) },
  );
  if (result.status === 'sent') ports.metrics.forwardSent(ports.domain, route);
  return result;
}

/** What SES said that keeps the mail from going out through SES: a virus first, then spam. */
function flaggedBySes(verdicts: SesVerdicts): 'virus' | 'spam' | undefined {
  if (verdicts.virus === 'FAIL') return 'virus';
  return verdicts.spam === 'FAIL' ? 'spam' : undefined;
}

/**
 * The original bytes with the forward's header edits: From, subject prefix, our loop marker (and theirs kept); mail
 * SES flagged carries SES's verdicts on top, so the receiving side can file it (FORWARD_SPAM_POLICY=tag).
 */
function forwardedCopy(input: EffectInput, target: string, ports: PipelinePorts, tagged: boolean): Buffer {
  const { recipient, receipt } = input;
  return rewriteSplitForForward(input.split, {
    ...(tagged && { verdictFields: verdictFields(receipt.verdicts) }),
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
