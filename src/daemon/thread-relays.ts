/**
 * The poller thread's side of the services the coordinator runs for every thread: the shared delivery pool, the
 * process's SES pacer and the domains' status, each over the thread's MessagePort (protocol.ts).
 */
import type { MessagePort } from 'node:worker_threads';
import { permitAborted, type SendPacer } from '../flow-control/send-pacer.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { DeliveryRequest, MailDelivery } from '../smtp/transport.ts';
import type { DomainStatus, ThreadMessage } from './protocol.ts';

export interface PacerProxy extends SendPacer {
  grant(id: number): void;
}

/** A permit wait this short is no wait: only a longer one frees the message's slot in the poller. */
const PERMIT_WAIT_NOTICE_MS = 20;

/** The coordinator's SES pacer (send-pacer-relay.ts), asked over the thread's port; one for all its domains. */
export function createPacerProxy(port: MessagePort): PacerProxy {
  let nextId = 1;
  const pending = new Map<number, () => void>();
  const post = (message: ThreadMessage) => port.postMessage(message);
  return {
    acquire({ signal, onWait } = {}) {
      if (signal?.aborted) return Promise.reject(permitAborted());
      const id = nextId++;
      let waited = false;
      const notice = setTimeout(() => {
        waited = true;
        onWait?.(true);
      }, PERMIT_WAIT_NOTICE_MS);
      return new Promise<void>((resolve, reject) => {
        const finish = () => {
          clearTimeout(notice);
          signal?.removeEventListener('abort', onAbort);
          pending.delete(id);
          if (waited) onWait?.(false);
        };
        const onAbort = () => {
          finish();
          post({ type: 'ses-permit-cancel', id });
          reject(permitAborted());
        };
        pending.set(id, () => {
          finish();
          resolve();
        });
        signal?.addEventListener('abort', onAbort, { once: true });
        post({ type: 'ses-permit', id });
      });
    },
    throttled: () => post({ type: 'ses-throttled' }),
    grant: (id) => pending.get(id)?.(),
  };
}

export interface DeliveryRelay {
  /** The pool as one domain of this thread sees it: its deliveries are queued under its name (fair share). */
  forDomain(domain: string): MailDelivery;
  settle(id: number, results: RecipientDelivery[]): void;
}

/**
 * Delivery through the coordinator's pool. Mail bytes are transferred, not copied, when the Buffer owns its whole
 * ArrayBuffer (large mails always do); small pooled Buffers are copied, which costs less than the bookkeeping.
 */
export function createDeliveryRelay(port: MessagePort): DeliveryRelay {
  let nextId = 1;
  const pending = new Map<number, (results: RecipientDelivery[]) => void>();
  const deliver = (domain: string, request: DeliveryRequest): Promise<RecipientDelivery[]> => {
    const id = nextId++;
    const raw = request.raw;
    const owned =
      raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength && request.transfer === true;
    const buffer = owned ? (raw.buffer as ArrayBuffer) : new Uint8Array(raw).buffer;
    const message: ThreadMessage = {
      type: 'deliver',
      id,
      domain,
      route: request.route,
      from: request.from,
      to: [...request.to],
      raw: buffer,
    };
    return new Promise((resolve) => {
      pending.set(id, resolve);
      port.postMessage(message, [buffer]);
    });
  };
  return {
    forDomain: (domain) => ({
      deliver: (request) => deliver(domain, request),
      verify: async () => true,
      connectionsInUse: () => 0,
      sendsWaiting: () => 0,
      close: async () => undefined,
    }),
    settle(id, results) {
      pending.get(id)?.(results);
      pending.delete(id);
    },
  };
}

export interface StatusReporter {
  report(status: DomainStatus): void;
  /** Sends what is pending now (the thread is ending). */
  flush(): void;
}

/** How long a report that changes only times and counts may wait for the thread's others. */
const STATUS_BATCH_MS = 1_000;

/**
 * A thread's status reports, sent to the coordinator together. An idle domain reports after every long poll, and a
 * thread serving many domains would otherwise post a message for each (BENCHMARKS.md, "Many domains"). A report that
 * changes what /health and /ready decide on (the state, a pause, a hold, an error) is sent at once.
 */
export function createStatusReporter(port: MessagePort): StatusReporter {
  const pending = new Map<string, DomainStatus>();
  const sent = new Map<string, string>();
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (pending.size === 0) return;
    const statuses = [...pending.values()];
    pending.clear();
    port.postMessage({ type: 'status', statuses } satisfies ThreadMessage);
  };
  return {
    report(status) {
      pending.set(status.domain, status);
      const decisive = decisiveFields(status);
      if (sent.get(status.domain) !== decisive) {
        sent.set(status.domain, decisive);
        flush();
      } else {
        timer ??= setTimeout(flush, STATUS_BATCH_MS).unref();
      }
    },
    flush,
  };
}

function decisiveFields({ state, pausedReason, degraded, lastError }: DomainStatus): string {
  // Every idle domain's poll passes here: a join, not JSON (a NUL appears in none of these texts).
  return `${state}\0${pausedReason ?? ''}\0${degraded ?? ''}\0${lastError ?? ''}`;
}
