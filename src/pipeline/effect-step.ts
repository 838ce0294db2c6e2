/**
 * What every forward and auto-reply shares: the ledger-guarded step, the route (internal port or SES), the send,
 * its share of the memory budget, and how a failure is judged. Each effect is a separate, identifiable step, so a
 * retried message repeats none that already happened.
 */
import { WorkerError, toWorkerError } from '../errors.ts';
import type { PermitOptions } from '../flow-control/send-pacer.ts';
import { domainOf } from '../mail/envelope-address.ts';
import { withDeliveryId } from './delivery-id.ts';
import type { GuardContext } from './guarded-effect.ts';
import { deferralFor, type EffectResult, type EffectRoute } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';

export type EffectBase = Omit<EffectResult, 'status'>;

/** What an effect's body reports: its result, and whether the ledger must remember it as done. */
export interface Ran {
  result: EffectResult;
  record: boolean;
}

export function routeFor(target: string, ports: PipelinePorts): EffectRoute {
  return ports.hostedDomains.includes(domainOf(target)) ? 'internal' : 'ses';
}

/** What a step's body hands to `sendEffect`: the ledger's mark before an SES send. */
export interface EffectStep {
  /** Marks the effect as being sent through SES; throws (the send is deferred) when that cannot be written. */
  beforeSend(): Promise<void>;
}

/** The size of what a step builds: its copy of the mail (a forward's rewrite, an auto-reply), before any sending. */
export interface StepSize {
  copyBytes: number;
}

/**
 * Runs `body` unless an earlier attempt did the effect (or may have: an SES send it began), within the message's
 * ledger claim and with room in the memory budget for what it builds: the one guarded-effect path.
 */
export async function guardedStep(
  key: string,
  base: EffectBase,
  guard: GuardContext,
  ports: PipelinePorts,
  body: (step: EffectStep) => Promise<Ran>,
  size: StepSize = { copyBytes: 0 },
): Promise<EffectResult> {
  const step: EffectStep = { beforeSend: () => guard.markSending(key) };
  const fates = await guard.run(
    [key],
    async () => {
      let ran: Ran;
      try {
        const free = await guard.budget?.acquireCopy(stepBytes(base.route, size.copyBytes), guard.signal);
        try {
          ran = await body(step);
        } finally {
          free?.();
        }
      } catch (error) {
        ran = failure(base, error, ports);
      }
      return new Map([[key, ran]]);
    },
    (ran) => ran.record,
    { throughSes: base.route === 'ses' },
  );
  const fate = fates.get(key);
  switch (fate?.state) {
    case 'ran':
      return fate.result.result;
    case 'done-before':
      return { ...base, status: 'done-before' };
    case 'maybe-sent':
      return {
        ...base,
        status: 'failed',
        reason:
          'SES_OUTCOME_UNKNOWN: an earlier attempt began this send and never recorded its end; not resent (SES may have sent it)',
      };
    case 'busy':
      return {
        ...base,
        status: 'deferred',
        reason: 'claimed by another worker',
        deferral: { reason: 'claims' },
      };
    default:
      return failure(base, fate?.error, ports).result;
  }
}

/**
 * What a step holds while it runs: its copy, and what sending it builds — for SES the request body (the copy in
 * base64, inside JSON), for the internal port the copy with the delivery id in front.
 */
export function stepBytes(route: EffectRoute | undefined, copyBytes: number): number {
  if (copyBytes <= 0) return 0;
  return route === 'ses' ? copyBytes + sesRequestBytes(copyBytes) : 2 * copyBytes;
}

/** A forward's copy of a mail of `bytes`: the mail with its header edits (From, Subject, loop markers). */
export function forwardedCopyBytes(bytes: number): number {
  return bytes + 16 * 1024;
}

/** An auto-reply's bound: the out-of-office text (64 K characters) and the quote, encoded. */
export const AUTO_REPLY_MAX_BYTES = 512 * 1024;

/** SES's request for a raw mail of `bytes`: its base64 form inside the JSON body. */
export function sesRequestBytes(bytes: number): number {
  return Math.ceil(bytes / 3) * 4 + 1024;
}

export interface Outgoing {
  /** From identity (SES): an address of our domain. */
  from: string;
  /** SMTP envelope sender on the internal route. */
  envelopeFrom: string;
  to: string;
  raw: Buffer;
  /** Delivery id of the copy handed to our own mail server (the internal route). */
  id: string;
  permit?: PermitOptions;
}

export async function sendEffect(
  route: EffectRoute,
  mail: Outgoing,
  base: EffectBase,
  ports: PipelinePorts,
  step: EffectStep,
): Promise<Ran> {
  if (route === 'ses') {
    await ports.ses.send({
      from: mail.from,
      destinations: [mail.to],
      raw: mail.raw,
      ...(mail.permit && { permit: mail.permit }),
      beforeSend: step.beforeSend,
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
  const temporary = result?.status === 'deferred' || result === undefined;
  const error = new WorkerError(
    temporary ? 'SMTP_TEMPORARY' : 'SMTP_PERMANENT',
    `internal delivery to ${mail.to} failed: ${reply}`,
    { temporary, ...(result?.code !== undefined && { responseCode: result.code }) },
  );
  const ran = failure(base, error, ports);
  if (ran.result.status !== 'deferred') return ran;
  if (result?.deploymentFault)
    return {
      ...ran,
      result: { ...ran.result, deferral: { reason: 'deployment', component: 'mail-server', reply } },
    };
  if (result?.code === undefined)
    return {
      ...ran,
      result: { ...ran.result, deferral: { reason: 'unreachable', component: 'mail-server' } },
    };
  return ran;
}

/**
 * A failed effect. Temporary failures and DynamoDB faults are retried with the message while the ledger is on;
 * without it a retry would deliver the local copies again, so they are recorded as failed (logged at error) and the
 * mail itself is still delivered. A send whose outcome is unknown is recorded as done, so no retry repeats it.
 */
export function failure(base: EffectBase, error: unknown, ports: PipelinePorts): Ran {
  const workerError = toWorkerError(error);
  const reason = `${workerError.code}: ${workerError.message}`;
  const awsCode = workerError.awsCode !== undefined ? { awsCode: workerError.awsCode } : {};
  if (workerError.code === 'SES_OUTCOME_UNKNOWN') {
    return { result: { ...base, status: 'failed', reason, ...awsCode }, record: true };
  }
  const retry = workerError.temporary || workerError.code === 'DYNAMODB_ERROR';
  if (!retry || !ports.ledger.enabled)
    return { result: { ...base, status: 'failed', reason, ...awsCode }, record: false };
  return {
    result: { ...base, status: 'deferred', reason, deferral: deferralFor(workerError), ...awsCode },
    record: false,
  };
}
