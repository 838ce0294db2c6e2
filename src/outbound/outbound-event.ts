/**
 * The SES sending events of the configuration set (SES_CONFIGURATION_SET), as its SNS event destination delivers
 * them to OUTBOUND_EVENTS_QUEUE: an SNS envelope whose `Message` is the event record
 * (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html). Pure: nothing in a
 * body can make this throw; whatever is not a usable sending event is described, never re-serialised.
 */
import { isPlainAddress } from '../mail/header-block.ts';

/** The events that write an outbound record. */
export type RecordedEventType = 'send' | 'bounce' | 'complaint';

/** SES event types that concern sent mail but need no record: deleted, counted. */
export type IgnoredEventType =
  'delivery' | 'delivery-delay' | 'reject' | 'open' | 'click' | 'rendering-failure' | 'subscription';

/** The `type` label of the events metric: every SES event type, `unknown` for anything else. */
export type EventTypeLabel = RecordedEventType | IgnoredEventType | 'unknown';

export interface OutboundEvent {
  type: RecordedEventType;
  /** SES's message id (`mail.messageId`): the outbound table's key. */
  messageId: string;
  /** `mail.source`: the sender as SES saw it, a bare address or `Name <address>`. */
  source: string;
  /** `mail.destination`, at most {@link MAX_ADDRESSES}. */
  destinations: string[];
  /** A bounce's bounced or a complaint's complaining recipients (plain addresses); empty for a send. */
  recipients: string[];
  /** `mail.timestamp`, when SES accepted the mail. */
  sentAt?: string;
}

export type ParsedEvent =
  | { kind: 'record'; event: OutboundEvent }
  | { kind: 'ignore'; type: IgnoredEventType }
  | { kind: 'malformed'; type: EventTypeLabel; reason: string };

/** SES sends to at most 50 recipients per message. */
export const MAX_ADDRESSES = 50;
/** SQS takes messages up to 1 MiB; anything longer did not come from SES through SNS. */
const MAX_BODY_CHARS = 1024 * 1024;
/** DynamoDB refuses a partition key over 2048 bytes; SES ids are about 60 characters. */
const MAX_ID_BYTES = 1024;
const MAX_SOURCE_CHARS = 998;
const MAX_REASON_CHARS = 500;

const RECORDED: Readonly<Record<string, RecordedEventType>> = {
  Send: 'send',
  Bounce: 'bounce',
  Complaint: 'complaint',
};

const IGNORED: Readonly<Record<string, IgnoredEventType>> = {
  Delivery: 'delivery',
  DeliveryDelay: 'delivery-delay',
  Reject: 'reject',
  Open: 'open',
  Click: 'click',
  'Rendering Failure': 'rendering-failure',
  Subscription: 'subscription',
};

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : typeof value;
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

function malformed(reason: string, type: EventTypeLabel = 'unknown'): ParsedEvent {
  return { kind: 'malformed', type, reason: reason.slice(0, MAX_REASON_CHARS) };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The event record: inside an SNS envelope (raw message delivery off), or bare (raw delivery on). */
function unwrap(body: string): Json | string {
  const outer = parseJson(body);
  if (!isObject(outer)) return 'body is not a JSON object';
  if (outer.Type === undefined) return outer;
  if (outer.Type === 'SubscriptionConfirmation') {
    return 'an SNS subscription confirmation: confirm the subscription of this queue to the events topic (its SubscribeURL)';
  }
  if (outer.Type !== 'Notification') return `SNS message of Type ${describe(outer.Type)}, not a Notification`;
  if (typeof outer.Message !== 'string') return 'SNS envelope without a Message string';
  const inner = parseJson(outer.Message);
  return isObject(inner) ? inner : 'SNS Message is not a JSON object';
}

/** Reads one SQS body of the events queue. */
export function parseOutboundEvent(body: string | undefined): ParsedEvent {
  if (body === undefined || body.trim() === '') return malformed('empty body');
  if (body.length > MAX_BODY_CHARS) return malformed(`body of ${body.length} characters is over 1 MiB`);
  const record = unwrap(body);
  if (typeof record === 'string') return malformed(record);
  // `notificationType` is the same record sent as an identity's feedback notification instead of an event.
  const typeName = record.eventType ?? record.notificationType;
  if (typeof typeName !== 'string') return malformed('no eventType: not an SES sending event');
  const ignored = IGNORED[typeName];
  if (ignored) return { kind: 'ignore', type: ignored };
  const type = RECORDED[typeName];
  if (!type) {
    // A received-mail notification here means a receipt rule publishes to this queue's topic; deleting it would
    // lose the mail, so it goes to the dead-letter queue like everything unknown.
    return malformed(`event type ${describe(typeName)} is not an SES sending event`);
  }
  return readMail(record, type);
}

function readMail(record: Json, type: RecordedEventType): ParsedEvent {
  const mail = record.mail;
  if (!isObject(mail)) return malformed('no mail object', type);
  const { messageId, source } = mail;
  if (typeof messageId !== 'string' || !/^[\x21-\x7e]+$/.test(messageId)) {
    return malformed(`mail.messageId ${describe(messageId)} is not an SES message id`, type);
  }
  if (Buffer.byteLength(messageId, 'utf8') > MAX_ID_BYTES) return malformed('mail.messageId too long', type);
  if (typeof source !== 'string' || source.trim() === '' || source.length > MAX_SOURCE_CHARS) {
    return malformed(`mail.source ${describe(source)} is not a sender`, type);
  }
  if (/[\x00-\x1f\x7f]/.test(source)) return malformed('mail.source has a control character', type);
  const recipients = type === 'send' ? [] : affectedRecipients(record, type);
  if (recipients === undefined) return malformed(`no ${type} object with its recipients`, type);
  return {
    kind: 'record',
    event: {
      type,
      messageId,
      source: source.trim(),
      destinations: addressList(
        Array.isArray(mail.destination) ? mail.destination.map(bareAddress) : [],
        (address) => address.length <= 320 && !/[\x00-\x20<>]/.test(address),
      ),
      recipients,
      ...(typeof mail.timestamp === 'string' && mail.timestamp.length <= 64 && { sentAt: mail.timestamp }),
    },
  };
}

/** `bounce.bouncedRecipients[].emailAddress` or `complaint.complainedRecipients[].emailAddress`. */
function affectedRecipients(record: Json, type: 'bounce' | 'complaint'): string[] | undefined {
  const detail = record[type];
  const list = isObject(detail)
    ? detail[type === 'bounce' ? 'bouncedRecipients' : 'complainedRecipients']
    : undefined;
  if (!Array.isArray(list)) return undefined;
  const addresses = list.map((entry) => (isObject(entry) ? bareAddress(entry.emailAddress) : undefined));
  // Only plain addresses: the bounce rewrite puts this address into From, and refuses anything else.
  return addressList(addresses, isPlainAddress);
}

/** SES writes a recipient as `address` or, as it appeared in the mail, `Name <address>`. */
function bareAddress(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const angle = /<([^<>]*)>\s*$/.exec(value);
  return (angle?.[1] ?? value).trim();
}

function addressList(value: unknown, usable: (address: string) => boolean): string[] {
  if (!Array.isArray(value)) return [];
  const unique = new Set<string>();
  for (const item of value) {
    if (unique.size >= MAX_ADDRESSES) break;
    if (typeof item === 'string' && item !== '' && usable(item)) unique.add(item);
  }
  return [...unique];
}
