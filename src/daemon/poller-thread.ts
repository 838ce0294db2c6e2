/**
 * The body of one domain's worker thread, run by piscina as a long-lived task: it owns its own AWS clients,
 * logger and metrics registry, and delivers through the coordinator's shared pool over its MessagePort.
 */
import type { MessagePort } from 'node:worker_threads';
import { createAwsClients } from '../aws/clients.ts';
import { systemClock } from '../clock.ts';
import { WorkerError } from '../errors.ts';
import { createLogger } from '../log/logger.ts';
import { createPipelineMetrics } from '../metrics/pipeline-metrics.ts';
import { permitAborted, type SendPacer } from '../flow-control/send-pacer.ts';
import type { RecipientDelivery } from '../smtp/classify.ts';
import type { DeliveryRequest, MailDelivery } from '../smtp/transport.ts';
import { MailServerState } from '../poller/mail-server-watch.ts';
import { startDomainRuntime, type DomainRuntime } from './domain-runtime.ts';
import type { CoordinatorMessage, DomainStatus, PollerTask, ThreadMessage } from './protocol.ts';

const QUEUE_RETRY_MS = 30_000;

export default async function runPollerThread(task: PollerTask): Promise<void> {
  const { domain, config, port } = task;
  // No `domain` in the base: the domain runtime adds it as a child binding, and pino would repeat the key.
  const rootLogger = createLogger({ level: config.log.level, redactAddresses: config.log.redactAddresses });
  const logger = rootLogger.child({ domain });
  const metrics = createPipelineMetrics();
  const clients = createAwsClients(config.aws);
  const delivery = createDeliveryProxy(port);
  const sesPacer = createPacerProxy(port);
  const post = (message: ThreadMessage) => port.postMessage(message);
  const postStatus = (status: DomainStatus) => post({ type: 'status', status });

  // Down until the coordinator says otherwise: mail is received only once the mail server is known to answer.
  const mailServer = new MailServerState(false);
  let runtime: DomainRuntime | undefined;
  let stopped = false;
  let wakeUp: (() => void) | undefined;

  port.on('message', (message: CoordinatorMessage) => {
    switch (message.type) {
      case 'delivered':
        delivery.settle(message.id, message.results);
        break;
      case 'ses-permit':
        sesPacer.grant(message.id);
        break;
      case 'mail-server':
        mailServer.set(message.up);
        break;
      case 'collect-metrics':
        void metrics.registry
          .getMetricsAsJSON()
          .then((snapshot) => post({ type: 'metrics', id: message.id, metrics: snapshot as never }));
        break;
      case 'stop':
        stopped = true;
        runtime?.stop();
        wakeUp?.();
        break;
      case 'crash':
        // Thrown outside any promise chain, exactly like an unexpected bug, so the thread really dies.
        setImmediate(() => {
          const error = new Error(
            `poller thread crashed on request (UNSAFE_TEST_HOOKS, ${message.how ?? 'exception'})`,
          );
          if (message.how === 'rejection') void Promise.reject(error);
          else throw error;
        });
        break;
    }
  });

  try {
    while (!stopped) {
      try {
        runtime = await startDomainRuntime({
          config,
          domain,
          clients,
          delivery,
          sesPacer,
          clock: systemClock,
          logger: rootLogger,
          metrics,
          onStatus: (status) => postStatus(status),
          mailServer,
        });
        break;
      } catch (error) {
        const err = error instanceof WorkerError ? error.toJSON() : { message: String(error) };
        logger.error({ err }, 'cannot start the domain poller; retrying');
        postStatus({ domain, state: 'error', inFlight: 0, lastError: err.message });
        await new Promise<void>((resolve) => {
          wakeUp = resolve;
          setTimeout(resolve, QUEUE_RETRY_MS).unref();
        });
      }
    }
    if (runtime) {
      // A stop that arrived while the queue was being resolved found no runtime to stop: stop it now, or run()
      // would poll until the grace period runs out.
      if (stopped) runtime.stop();
      await runtime.run();
    }
  } finally {
    postStatus({ domain, state: 'stopped', inFlight: 0 });
    clients.destroy();
    // The destination writes asynchronously; the thread is terminated soon after this task ends.
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    port.close();
  }
}

interface PacerProxy extends SendPacer {
  grant(id: number): void;
}

/** A permit wait this short is no wait: only a longer one frees the message's slot in the poller. */
const PERMIT_WAIT_NOTICE_MS = 20;

/** The coordinator's SES pacer (send-pacer-relay.ts), asked over the thread's port. */
function createPacerProxy(port: MessagePort): PacerProxy {
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

interface DeliveryProxy extends MailDelivery {
  settle(id: number, results: RecipientDelivery[]): void;
}

/**
 * Delivery through the coordinator's pool. Mail bytes are transferred, not copied, when the Buffer owns its whole
 * ArrayBuffer (large mails always do); small pooled Buffers are copied, which costs less than the bookkeeping.
 */
function createDeliveryProxy(port: MessagePort): DeliveryProxy {
  let nextId = 1;
  const pending = new Map<number, (results: RecipientDelivery[]) => void>();
  return {
    deliver(request: DeliveryRequest) {
      const id = nextId++;
      const raw = request.raw;
      const owned =
        raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength && request.transfer === true;
      const buffer = owned ? (raw.buffer as ArrayBuffer) : new Uint8Array(raw).buffer;
      const message: ThreadMessage = {
        type: 'deliver',
        id,
        route: request.route,
        from: request.from,
        to: [...request.to],
        raw: buffer,
      };
      return new Promise((resolve) => {
        pending.set(id, resolve);
        port.postMessage(message, [buffer]);
      });
    },
    settle(id, results) {
      pending.get(id)?.(results);
      pending.delete(id);
    },
    verify: async () => true,
    connectionsInUse: () => 0,
    sendsWaiting: () => 0,
    close: async () => undefined,
  };
}
