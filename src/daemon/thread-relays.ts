/**
 * The poller thread's side of the services the coordinator runs for every thread: the shared delivery pool and the
 * process's SES pacer, each asked over the thread's MessagePort (protocol.ts).
 */
import type { MessagePort } from 'node:worker_threads';
import { permitAborted, type SendPacer } from '../flow-control/send-pacer.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { DeliveryRequest, MailDelivery } from '../smtp/transport.ts';
import type { ThreadMessage } from './protocol.ts';

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
