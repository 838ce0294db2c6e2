/**
 * Stage 6: the mail, after the bounce rewrite, in one transaction to every recipient not final yet, while this
 * attempt holds the message's ledger lease; a recipient an earlier attempt delivered is not delivered again. The
 * copy carries the delivery id first, then SES's verdicts, then the mail's own bytes, and counts against the
 * message's share of IN_FLIGHT_BYTES while the mail server has it.
 */
import type { WorkerError } from '../errors.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import { deliverName, type Attempt } from './attempt.ts';
import { deliveryId, withDeliveryId } from './delivery-id.ts';
import type { Guarded } from './guarded-effect.ts';
import { deferralFor, type RecipientOutcome } from './outcome.ts';
import type { PipelinePorts } from './ports.ts';
import { detectEol, verdictHeaders } from './verdicts.ts';

export interface DeliveryResult {
  /** A ledger claim failed (DynamoDB): those recipients wait, and this is why. */
  error?: WorkerError;
}

export async function deliverMail(
  attempt: Attempt,
  raw: Buffer,
  ports: PipelinePorts,
): Promise<DeliveryResult> {
  const toDeliver = attempt.recipients.filter((r) => !attempt.progress.recipients.has(r));
  if (toDeliver.length === 0) return {};
  const keyOf = new Map(toDeliver.map((r) => [deliverName(r), r] as const));
  const fates = await attempt.guard.run(
    [...keyOf.keys()],
    (owed) => send(attempt, raw, owed, keyOf, ports),
    (result: RecipientDelivery) => result.status === 'delivered',
  );
  const result: DeliveryResult = {};
  for (const [key, recipient] of keyOf) {
    const fate = fates.get(key);
    if (fate?.state === 'unclaimed') result.error ??= fate.error;
    attempt.progress.recipients.set(recipient, outcomeOf(recipient, fate));
  }
  return result;
}

async function send(
  attempt: Attempt,
  raw: Buffer,
  claimed: readonly string[],
  keyOf: ReadonlyMap<string, string>,
  ports: PipelinePorts,
): Promise<Map<string, RecipientDelivery>> {
  const { receipt, generation } = attempt;
  const verdicts = ports.options.addVerdictHeaders
    ? verdictHeaders(receipt.verdicts, detectEol(raw), raw)
    : undefined;
  const id = deliveryId(
    receipt.sesMessageId,
    generation,
    { kind: 'deliver' },
    ports.options.deliveryIdSecret,
  );
  const free = await attempt.guard.budget?.acquireCopy(
    raw.length + (verdicts?.length ?? 0) + id.length + 64,
    attempt.signal,
  );
  let results: RecipientDelivery[];
  try {
    results = await ports.delivery.deliver({
      route: 'mailbox',
      from: receipt.source,
      to: claimed.map((key) => keyOf.get(key) ?? key),
      raw: withDeliveryId(raw, id, verdicts),
      transfer: true,
    });
  } finally {
    free?.();
  }
  const byRecipient = new Map(results.map((r) => [r.recipient.toLowerCase(), r]));
  return new Map(
    claimed.flatMap((key) => {
      const result = byRecipient.get((keyOf.get(key) ?? '').toLowerCase());
      return result ? [[key, result] as const] : [];
    }),
  );
}

function outcomeOf(recipient: string, fate: Guarded<RecipientDelivery> | undefined): RecipientOutcome {
  switch (fate?.state) {
    case 'done-before':
      return { recipient, state: 'delivered', detail: 'delivered by an earlier attempt', earlier: true };
    case 'busy':
      return {
        recipient,
        state: 'deferred',
        detail: 'being delivered by another worker',
        deferral: { reason: 'claims' },
      };
    case 'ran':
      return fromReply(recipient, fate.result);
    case 'unclaimed':
      return { recipient, state: 'deferred', detail: fate.error.message, deferral: deferralFor(fate.error) };
    default:
      return { recipient, state: 'deferred', detail: 'not claimed', deferral: { reason: 'temporary' } };
  }
}

/** The mail server's answer for one recipient; a deferral says whether it answered, and what. */
function fromReply(recipient: string, result: RecipientDelivery): RecipientOutcome {
  const detail =
    result.deploymentFault && result.response !== undefined
      ? `the mail server's configuration refuses this domain: ${result.response}`
      : result.response;
  const base: RecipientOutcome = {
    recipient,
    state: result.status,
    ...(result.code !== undefined && { code: result.code }),
    ...(detail !== undefined && { detail }),
  };
  if (result.status !== 'deferred') return base;
  if (result.deploymentFault) {
    const reply = result.response ?? `reply ${result.code}`;
    return { ...base, deferral: { reason: 'deployment', component: 'mail-server', reply } };
  }
  if (result.code === undefined)
    return { ...base, deferral: { reason: 'unreachable', component: 'mail-server' } };
  return { ...base, deferral: { reason: 'temporary' } };
}
