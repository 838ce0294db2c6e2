import type { EffectLedger } from '../aws/effect-ledger.ts';
import type { MailStore } from '../aws/mail-store.ts';
import type { OutboundRecords } from '../aws/outbound-records.ts';
import type { RecipientDirectory } from '../aws/recipient-directory.ts';
import type { ReplyLog } from '../aws/reply-log.ts';
import type { MailSender } from '../aws/ses-sender.ts';
import type { Clock } from '../clock.ts';
import type { ByteBudget } from '../flow-control/byte-budget.ts';
import type { Logger } from '../log/logger.ts';
import type { LoopMarker } from '../mail/loop-marker.ts';
import type { PipelineMetrics } from '../metrics/pipeline-metrics.ts';
import type { MailDelivery } from '../smtp/transport.ts';
import type { NotificationSources } from './notification.ts';

/** The part of the Config the per-message pipeline reads; tests can build one by hand. */
export interface PipelineOptions {
  maxMailBytes: number;
  oooReplyIntervalDays: number;
  oooRequireAddressed: boolean;
  /** Auto-reply to external addresses only when SES authenticated their domain (no backscatter to forged senders). */
  oooRequireAuthenticated: boolean;
  /** Rewrite only SES bounces SES authenticated (DMARC/SPF for amazonses.com). */
  bounceRequireAuthenticated: boolean;
  /** Topics and buckets this domain's notifications may name; absent or empty lists: any. */
  notificationSources?: NotificationSources;
  autoReplySubjectPrefix: string;
  forwardSubjectPrefix: string;
  /** A forward to an outside address of mail SES marked spam or virus FAIL: skipped, or sent tagged. */
  forwardSpamPolicy: 'skip' | 'tag';
  virusPolicy: 'tag' | 'reject';
  /** Keys the delivery id of every copy (LOOP_MARKER_SECRET; '' = unkeyed): see delivery-id.ts. */
  deliveryIdSecret: string;
  addVerdictHeaders: boolean;
  parseTimeoutMs: number;
}

/**
 * Everything the pipeline talks to, injected: real AWS/SMTP clients in the daemon, the same clients pointed at
 * emulators in integration tests, a thread proxy for delivery when pollers run in worker threads.
 */
export interface PipelinePorts {
  /** The domain this poller serves; recipients of other domains are ignored. */
  domain: string;
  /** All domains this deployment hosts: forwards and replies to them go through the internal port, not SES. */
  hostedDomains: readonly string[];
  mailStore: MailStore;
  directory: RecipientDirectory;
  outbound: OutboundRecords;
  replies: ReplyLog;
  ses: MailSender;
  delivery: MailDelivery;
  /** Bytes of mail held in memory at once by this poller (IN_FLIGHT_BYTES). */
  budget?: ByteBudget;
  ledger: EffectLedger;
  loopMarker: LoopMarker;
  clock: Clock;
  logger: Logger;
  metrics: PipelineMetrics;
  redact: (address: string) => string;
  options: PipelineOptions;
}
