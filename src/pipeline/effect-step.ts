/**
 * What every forward and auto-reply shares: the ledger-guarded step, the route (internal port or SES), the send,
 * and how a failure is judged. Each effect is a separate, identifiable step, so a retried message repeats none
 * that already happened.
 */
import { WorkerError, toWorkerError } from '../errors.ts';
import type { PermitOptions } from '../flow-control/send-pacer.ts';
import { domainOf } from '../mail/envelope-address.ts';
import { withDeliveryId } from './delivery-id.ts';
import { runGuarded, type GuardContext } from './guarded-effect.ts';
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

/** Claims `key`, runs `body` if the claim is won, records or abandons the claim: the one guarded-effect path. */
export async function guardedStep(
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
