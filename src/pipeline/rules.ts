import { effectKey } from '../aws/effect-ledger.ts';
import type { RecipientRule } from '../aws/tables.ts';
import { WorkerError } from '../errors.ts';
import { composeAutoReply } from '../mail/autoreply-compose.ts';
import { autoReplyDecision } from '../mail/autoreply-policy.ts';
import { rewriteForForward } from '../mail/forward.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { ForwardRoute } from '../metrics/pipeline-metrics.ts';
import { deliveryId, withDeliveryId, type DeliveryEffect } from './delivery-id.ts';
import { runGuarded, type GuardContext } from './guarded-effect.ts';
import type { PermitOptions } from '../aws/send-pacer.ts';
import { domainOf, type SesReceipt } from './notification.ts';
import type { PipelinePorts } from './ports.ts';

export type EffectKind = 'autoreply' | 'forward';

/**
 * `sent`: done now; `done-before`: an earlier attempt did it (ledger); `suppressed`: a rule said no (with reason);
 * `failed`: permanent failure of this effect only, or a send whose outcome is unknown (never repeated);
 * `deferred`: temporary failure, worth retrying the message.
 */
export interface EffectResult {
  kind: EffectKind;
  recipient: string;
  target: string;
  route?: ForwardRoute;
  status: 'sent' | 'done-before' | 'suppressed' | 'failed' | 'deferred';
  reason?: string;
  /** Deferred only because another worker holds a live claim on this effect. */
  claimed?: boolean;
  /** The AWS error name behind a failure (a missing table shows here), not logged. */
  awsCode?: string;
  /** The internal port's reply when it said the deployment is wrong. */
  deploymentFault?: string;
}

export interface RuleInput {
  receipt: SesReceipt;
  raw: Buffer;
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

/**
 * Stage 6: the effects of one delivered recipient's rules, all at once. Each effect is a separate, ledger-guarded
 * step, so a retried message repeats none that already happened. Never throws: a failure is the effect's result.
 */
export async function runRules(
  input: RuleInput,
  ports: PipelinePorts,
  guard: GuardContext,
): Promise<EffectResult[]> {
  const effects: Array<Promise<EffectResult>> = [];
  if (input.rule.oooActive) effects.push(autoReply(input, ports, guard));
  for (const target of new Set(input.rule.forwards)) effects.push(forward(input, target, ports, guard));
  return Promise.all(effects);
}

function routeFor(target: string, ports: PipelinePorts): ForwardRoute {
  return ports.hostedDomains.includes(domainOf(target)) ? 'internal' : 'ses';
}

type EffectBase = Omit<EffectResult, 'status'>;

/** What an effect's body reports: its result, and whether the ledger must remember it as done. */
interface Ran {
  result: EffectResult;
  record: boolean;
}

/** Claims `key`, runs `body` if the claim is won, records or releases the claim: the one guarded-effect path. */
async function guarded(
  key: string,
  base: EffectBase,
  guard: GuardContext,
  ports: PipelinePorts,
  body: () => Promise<Ran>,
): Promise<EffectResult> {
  const fates = await runGuarded(
    guard,
    [key],
    async () => {
      let ran: Ran;
      try {
        ran = await body();
      } catch (error) {
        ran = failure(base, error, ports);
      }
      return new Map([[key, ran]]);
    },
    (ran) => ran.record,
  );
  const fate = fates.get(key);
  switch (fate?.state) {
    case 'ran':
      return fate.result.result;
    case 'done-before':
      return { ...base, status: 'done-before' };
    case 'busy':
      return { ...base, status: 'deferred', reason: 'claimed by another worker', claimed: true };
    default:
      return failure(base, fate?.error, ports).result;
  }
}

async function autoReply(input: RuleInput, ports: PipelinePorts, guard: GuardContext): Promise<EffectResult> {
  const { recipient, view, receipt } = input;
  const decision = autoReplyDecision({
    view,
    envelopeSender: receipt.source,
    recipient,
    isSesBounce: input.isSesBounce,
    hasLoopMarker: input.hasLoopMarker,
    requireAddressed: ports.settings.oooRequireAddressed,
  });
  if (!decision.reply)
    return { kind: 'autoreply', recipient, target: '', status: 'suppressed', reason: decision.reason };
  const target = decision.to.address;
  const route = routeFor(target, ports);
  const base = { kind: 'autoreply' as const, recipient, target, route };
  if (
    route === 'ses' &&
    ports.settings.oooRequireAuthenticated &&
    !authenticatedDomain(target, receipt, view)
  ) {
    return { ...base, status: 'suppressed', reason: 'unauthenticated-sender' };
  }
  const now = ports.clock.now();
  const intervalMs = ports.settings.oooReplyIntervalDays * 86_400_000;
  const key = effectKey(receipt.sesMessageId, recipient, 'autoreply', input.generation);
  const effect: DeliveryEffect = { kind: 'autoreply', recipient };

  const result = await guarded(key, base, guard, ports, async () => {
    if (!(await ports.rules.claimAutoReply(recipient, target, now, intervalMs))) {
      return {
        result: { ...base, status: 'suppressed', reason: 'already-replied-within-interval' },
        record: true,
      };
    }
    let ran: Ran;
    try {
      const reply = await composeAutoReply({
        recipient,
        to: decision.to,
        original: view,
        message: input.rule.oooMessage,
        contentType: input.rule.oooContentType,
        subjectPrefix: ports.settings.autoReplySubjectPrefix,
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
      ran = await send(
        route,
        {
          from: recipient,
          envelopeFrom: '',
          to: target,
          raw: reply.raw,
          id: delivery(input, effect),
          ...(input.permit && { permit: input.permit }),
        },
        base,
        ports,
      );
    } catch (error) {
      ran = failure(base, error, ports);
    }
    // A reply that was not sent must not block the next mail's reply for the whole interval.
    if (ran.result.status !== 'sent' && !ran.record)
      await ports.rules.releaseAutoReply(recipient, target, now).catch(() => undefined);
    return ran;
  });
  if (result.status === 'sent') ports.metrics.autoReplySent(ports.domain);
  return result;
}

async function forward(
  input: RuleInput,
  target: string,
  ports: PipelinePorts,
  guard: GuardContext,
): Promise<EffectResult> {
  const { recipient, receipt } = input;
  const route = routeFor(target, ports);
  const base = { kind: 'forward' as const, recipient, target, route };
  if (target === recipient) return { ...base, status: 'suppressed', reason: 'forward-to-self' };

  const key = effectKey(receipt.sesMessageId, recipient, `forward:${target}`, input.generation);
  const result = await guarded(key, base, guard, ports, async () => {
    const raw = rewriteForForward(input.raw, {
      forwardingAddress: recipient,
      originalRecipient: recipient,
      domain: ports.domain,
      subjectPrefix: ports.settings.forwardSubjectPrefix,
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
    const id = delivery(input, { kind: 'forward', recipient, target });
    const mail = { from: recipient, envelopeFrom: recipient, to: target, raw, id };
    return send(route, { ...mail, ...(input.permit && { permit: input.permit }) }, base, ports);
  });
  if (result.status === 'sent') ports.metrics.forwardSent(ports.domain, route);
  return result;
}

function delivery(input: RuleInput, effect: DeliveryEffect): string {
  return deliveryId(input.receipt.sesMessageId, input.generation, effect);
}

/**
 * Anyone can write any From or Reply-To; replying to it blindly turns the responder into a backscatter cannon
 * aimed at whoever was forged. Reply only where SES vouched for the target's domain: SPF passed for the envelope
 * sender's domain, or DKIM/DMARC passed for the From domain.
 */
function authenticatedDomain(target: string, receipt: SesReceipt, view: MailView): boolean {
  const domain = domainOf(target);
  const { spf, dkim, dmarc } = receipt.verdicts;
  if (spf === 'PASS' && domain === domainOf(receipt.source)) return true;
  const fromDomain = view.from ? domainOf(view.from.address) : '';
  return (dkim === 'PASS' || dmarc === 'PASS') && domain === fromDomain;
}

interface Outgoing {
  /** From identity (SES) — an address of our domain. */
  from: string;
  /** SMTP envelope sender on the internal route. */
  envelopeFrom: string;
  to: string;
  raw: Buffer;
  /** Delivery id of the copy handed to our own mail server (the internal route). */
  id: string;
  permit?: PermitOptions;
}

async function send(
  route: ForwardRoute,
  mail: Outgoing,
  base: EffectBase,
  ports: PipelinePorts,
): Promise<Ran> {
  if (route === 'ses') {
    await ports.ses.send({
      from: mail.from,
      destinations: [mail.to],
      raw: mail.raw,
      ...(mail.permit && { permit: mail.permit }),
    });
    return { result: { ...base, status: 'sent' }, record: true };
  }
  const [result] = await ports.delivery.deliver({
    route: 'internal',
    from: mail.envelopeFrom,
    to: [mail.to],
    raw: withDeliveryId(mail.raw, mail.id),
    transfer: true,
  });
  if (result?.status === 'delivered') return { result: { ...base, status: 'sent' }, record: true };
  const reply = result?.response ?? 'no reply';
  const error = new WorkerError(
    result?.status === 'deferred' || result === undefined ? 'SMTP_TEMPORARY' : 'SMTP_PERMANENT',
    `internal delivery to ${mail.to} failed: ${reply}`,
    {
      temporary: result?.status === 'deferred' || result === undefined,
      ...(result?.code !== undefined && { responseCode: result.code }),
    },
  );
  const ran = failure(base, error, ports);
  return result?.deploymentFault ? { ...ran, result: { ...ran.result, deploymentFault: reply } } : ran;
}

/**
 * A failed effect. Deployment faults (DynamoDB, a 5xx that says the mail server is set up wrong) and temporary
 * failures are retried with the message while the ledger is on; without it a retry would deliver the local copies
 * again, so they are recorded as failed (logged at error) and the mail itself is still delivered. A send whose
 * outcome is unknown is recorded as done, so no retry repeats it.
 */
function failure(base: EffectBase, error: unknown, ports: PipelinePorts): Ran {
  const workerError =
    error instanceof WorkerError
      ? error
      : new WorkerError('INTERNAL', String(error), { temporary: true, cause: error });
  const reason = `${workerError.code}: ${workerError.message}`;
  const awsCode = workerError.awsCode !== undefined ? { awsCode: workerError.awsCode } : {};
  if (workerError.code === 'SES_OUTCOME_UNKNOWN') {
    return { result: { ...base, status: 'failed', reason, ...awsCode }, record: true };
  }
  const retry = workerError.temporary || workerError.code === 'DYNAMODB_ERROR';
  const status = retry && ports.ledger.enabled ? 'deferred' : 'failed';
  return { result: { ...base, status, reason, ...awsCode }, record: false };
}
