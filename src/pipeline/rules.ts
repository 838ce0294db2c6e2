import { completeAfterEffect, effectKey } from '../aws/effect-ledger.ts';
import type { RecipientRule } from '../aws/tables.ts';
import { WorkerError } from '../errors.ts';
import { composeAutoReply } from '../mail/autoreply-compose.ts';
import { autoReplyDecision } from '../mail/autoreply-policy.ts';
import { rewriteForForward } from '../mail/forward.ts';
import type { MailView } from '../mail/mail-view.ts';
import type { ForwardRoute } from '../metrics/pipeline-metrics.ts';
import { domainOf, type SesReceipt } from './notification.ts';
import type { PipelinePorts } from './ports.ts';

export type EffectKind = 'autoreply' | 'forward';

/**
 * `sent`: done now; `done-before`: an earlier attempt did it (ledger); `suppressed`: a rule said no (with reason);
 * `failed`: permanent failure of this effect only; `deferred`: temporary failure, worth retrying the message.
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
}

export interface RuleInput {
  receipt: SesReceipt;
  raw: Buffer;
  view: MailView;
  isSesBounce: boolean;
  hasLoopMarker: boolean;
  recipient: string;
  rule: RecipientRule;
}

/**
 * Stage 6: the effects of one delivered recipient's rules. Each effect is a separate, ledger-guarded step, so a
 * retried message repeats none that already happened.
 */
export async function runRules(input: RuleInput, ports: PipelinePorts): Promise<EffectResult[]> {
  const results: EffectResult[] = [];
  if (input.rule.oooActive) results.push(await autoReply(input, ports));
  const seen = new Set<string>();
  for (const target of input.rule.forwards) {
    if (seen.has(target)) continue;
    seen.add(target);
    results.push(await forward(input, target, ports));
  }
  return results;
}

function routeFor(target: string, ports: PipelinePorts): ForwardRoute {
  return ports.hostedDomains.includes(domainOf(target)) ? 'internal' : 'ses';
}

async function autoReply(input: RuleInput, ports: PipelinePorts): Promise<EffectResult> {
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

  const key = effectKey(receipt.sesMessageId, recipient, 'autoreply');
  const claim = await ports.ledger.claim(key);
  if (claim === 'done') return { ...base, status: 'done-before' };
  if (claim === 'busy')
    return { ...base, status: 'deferred', reason: 'claimed by another worker', claimed: true };

  let won = false;
  try {
    won = await ports.rules.claimAutoReply(recipient, target, now, intervalMs);
    if (!won) {
      await ports.ledger.complete(key);
      return { ...base, status: 'suppressed', reason: 'already-replied-within-interval' };
    }
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
    await send(route, { from: recipient, envelopeFrom: '', to: target, raw: reply.raw }, ports);
  } catch (error) {
    if (won) await ports.rules.releaseAutoReply(recipient, target, now).catch(() => undefined);
    await ports.ledger.release(key).catch(() => undefined);
    return failure(base, error, ports);
  }
  await recordDone(key, ports);
  ports.metrics.autoReplySent(ports.domain);
  return { ...base, status: 'sent' };
}

async function forward(input: RuleInput, target: string, ports: PipelinePorts): Promise<EffectResult> {
  const { recipient, receipt } = input;
  const route = routeFor(target, ports);
  const base = { kind: 'forward' as const, recipient, target, route };
  if (target === recipient) return { ...base, status: 'suppressed', reason: 'forward-to-self' };

  const key = effectKey(receipt.sesMessageId, recipient, `forward:${target}`);
  const claim = await ports.ledger.claim(key);
  if (claim === 'done') return { ...base, status: 'done-before' };
  if (claim === 'busy')
    return { ...base, status: 'deferred', reason: 'claimed by another worker', claimed: true };
  try {
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
    await send(route, { from: recipient, envelopeFrom: recipient, to: target, raw }, ports);
  } catch (error) {
    await ports.ledger.release(key).catch(() => undefined);
    return failure(base, error, ports);
  }
  await recordDone(key, ports);
  ports.metrics.forwardSent(ports.domain, route);
  return { ...base, status: 'sent' };
}

function recordDone(key: string, ports: PipelinePorts): Promise<void> {
  return completeAfterEffect(
    ports.ledger,
    key,
    (ms) => ports.clock.sleep(ms),
    (error) => ports.logger.error({ key, err: String(error) }, 'effect done but not recorded in the ledger'),
  );
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
}

async function send(route: ForwardRoute, mail: Outgoing, ports: PipelinePorts): Promise<void> {
  if (route === 'ses') {
    await ports.ses.send({ from: mail.from, destinations: [mail.to], raw: mail.raw });
    return;
  }
  const [result] = await ports.delivery.deliver({
    route: 'internal',
    from: mail.envelopeFrom,
    to: [mail.to],
    raw: mail.raw,
  });
  if (!result || result.status === 'delivered') return;
  throw new WorkerError(
    result.status === 'rejected' ? 'SMTP_PERMANENT' : 'SMTP_TEMPORARY',
    `internal delivery to ${mail.to} failed: ${result.response ?? 'no reply'}`,
    {
      temporary: result.status === 'deferred',
      ...(result.code !== undefined && { responseCode: result.code }),
    },
  );
}

function failure(base: Omit<EffectResult, 'status'>, error: unknown, ports: PipelinePorts): EffectResult {
  const temporary = error instanceof WorkerError ? error.temporary : true;
  const reason = error instanceof WorkerError ? `${error.code}: ${error.message}` : String(error);
  // Without the ledger a retried message would deliver the local copies again; a temporary failure is then
  // recorded as failed instead of retried (logged at error), and the mail itself is still delivered.
  const status = temporary && ports.ledger.enabled ? 'deferred' : 'failed';
  return { ...base, status, reason };
}
