import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseOutboundEvent, type ParsedEvent } from '../../src/outbound/outbound-event.ts';
import { sesSendingEvent, snsEnvelope } from '../harness/ses-events.ts';

const TOPIC = 'arn:aws:sns:us-east-1:123456789012:ses-outbound-events';
const MAIL = Buffer.from(
  'From: Jane <jane@example.com>\r\nTo: ghost@remote.test\r\nSubject: Hi\r\n\r\nhello\r\n',
);

function enveloped(event: unknown): string {
  return snsEnvelope(JSON.stringify(event), TOPIC, { subject: 'Amazon SES Email Event Notification' });
}

function send(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const event = sesSendingEvent({
    type: 'Send',
    messageId: '0100018f-1234-abcd-000000',
    source: 'jane@example.com',
    destinations: ['ghost@remote.test'],
    raw: MAIL,
    configurationSet: 'unified-worker',
    sentAt: new Date('2026-01-02T03:04:05.678Z'),
  });
  return { ...event, mail: { ...(event.mail as object), ...overrides } };
}

function malformedReason(parsed: ParsedEvent): string {
  assert.equal(parsed.kind, 'malformed', JSON.stringify(parsed));
  return parsed.kind === 'malformed' ? parsed.reason : '';
}

describe('parseOutboundEvent: SES sending events from the SNS envelope', () => {
  it('reads a Send event: id, source, destinations, timestamp', () => {
    assert.deepEqual(parseOutboundEvent(enveloped(send())), {
      kind: 'record',
      event: {
        type: 'send',
        messageId: '0100018f-1234-abcd-000000',
        source: 'jane@example.com',
        destinations: ['ghost@remote.test'],
        recipients: [],
        sentAt: '2026-01-02T03:04:05.678Z',
      },
    });
  });

  it('reads the same record without the envelope (raw message delivery)', () => {
    const parsed = parseOutboundEvent(JSON.stringify(send()));
    assert.equal(parsed.kind, 'record');
  });

  it('reads a Bounce with its bounced recipients, display names and duplicates removed', () => {
    const event = sesSendingEvent({
      type: 'Bounce',
      messageId: 'id-1',
      source: 'Jane Doe <jane@example.com>',
      destinations: ['a@remote.test', 'Bee <b@remote.test>'],
      bounced: ['a@remote.test', 'Bee <b@remote.test>', 'a@remote.test', 'not an address'],
    });
    const parsed = parseOutboundEvent(enveloped(event));
    assert.equal(parsed.kind, 'record');
    if (parsed.kind !== 'record') return;
    assert.equal(parsed.event.type, 'bounce');
    assert.equal(parsed.event.source, 'Jane Doe <jane@example.com>', 'SES writes the source with its name');
    assert.deepEqual(parsed.event.destinations, ['a@remote.test', 'b@remote.test']);
    assert.deepEqual(parsed.event.recipients, ['a@remote.test', 'b@remote.test']);
  });

  it('reads a Complaint with the complaining recipient', () => {
    const event = sesSendingEvent({
      type: 'Complaint',
      messageId: 'id-2',
      source: 'jane@example.com',
      destinations: ['c@remote.test', 'd@remote.test'],
      complained: ['d@remote.test'],
    });
    const parsed = parseOutboundEvent(enveloped(event));
    assert.equal(parsed.kind === 'record' && parsed.event.type, 'complaint');
    assert.deepEqual(parsed.kind === 'record' && parsed.event.recipients, ['d@remote.test']);
  });

  it('reads an identity feedback notification (notificationType) like the event', () => {
    const event = sesSendingEvent({
      type: 'Bounce',
      messageId: 'id-3',
      source: 'j@example.com',
      destinations: ['x@y.test'],
    });
    const { eventType, ...rest } = event;
    const parsed = parseOutboundEvent(enveloped({ notificationType: eventType, ...rest }));
    assert.equal(parsed.kind === 'record' && parsed.event.type, 'bounce');
  });

  it('ignores the other SES event types (they are deleted, not recorded)', () => {
    for (const [type, label] of [
      ['Delivery', 'delivery'],
      ['Reject', 'reject'],
      ['Open', 'open'],
      ['Click', 'click'],
      ['Rendering Failure', 'rendering-failure'],
      ['DeliveryDelay', 'delivery-delay'],
      ['Subscription', 'subscription'],
    ] as const) {
      assert.deepEqual(parseOutboundEvent(enveloped({ ...send(), eventType: type })), {
        kind: 'ignore',
        type: label,
      });
    }
  });

  it('keeps at most 50 destinations and drops unusable ones', () => {
    const many = Array.from({ length: 80 }, (_, i) => `r${i}@remote.test`);
    const parsed = parseOutboundEvent(enveloped(send({ destination: ['bad address', 7, '', ...many] })));
    assert.ok(parsed.kind === 'record');
    if (parsed.kind !== 'record') return;
    assert.equal(parsed.event.destinations.length, 50);
    assert.equal(parsed.event.destinations[0], 'r0@remote.test');
  });

  it('a mail without destinations is still a record (its bounce can still be matched)', () => {
    const parsed = parseOutboundEvent(enveloped(send({ destination: 'not a list' })));
    assert.deepEqual(parsed.kind === 'record' && parsed.event.destinations, []);
  });
});

describe('parseOutboundEvent: anything else is malformed, with a reason, and never throws', () => {
  const cases: Array<[string, string | undefined, RegExp]> = [
    ['no body', undefined, /empty/],
    ['blank body', '  ', /empty/],
    ['not JSON', 'hello', /not a JSON object/],
    ['a JSON array', '[1,2]', /not a JSON object/],
    [
      'an SNS envelope whose Message is not JSON',
      JSON.stringify({ Type: 'Notification', Message: '{' }),
      /Message is not a JSON object/,
    ],
    ['an SNS envelope without Message', JSON.stringify({ Type: 'Notification' }), /without a Message/],
    [
      'an SNS subscription confirmation',
      JSON.stringify({ Type: 'SubscriptionConfirmation', SubscribeURL: 'https://x' }),
      /confirm the subscription/,
    ],
    ['no event type', JSON.stringify({ mail: {} }), /no eventType/],
    [
      'a received-mail notification (a receipt rule publishing to the wrong topic: never deleted)',
      JSON.stringify({ notificationType: 'Received', mail: {}, receipt: {} }),
      /"Received" is not an SES sending event/,
    ],
    [
      'an unknown event type',
      JSON.stringify({ eventType: 'Teleport', mail: {} }),
      /not an SES sending event/,
    ],
    ['a Send without mail', JSON.stringify({ eventType: 'Send' }), /no mail object/],
    ['a Send without messageId', JSON.stringify(send({ messageId: undefined })), /messageId/],
    ['a messageId with a space', JSON.stringify(send({ messageId: 'a b' })), /messageId/],
    ['a messageId over 1 KB', JSON.stringify(send({ messageId: 'x'.repeat(1025) })), /too long/],
    ['no source', JSON.stringify(send({ source: 42 })), /source/],
    [
      'a source with CR LF',
      JSON.stringify(send({ source: 'a@b.test\r\nBcc: x@y.test' })),
      /control character/,
    ],
    [
      'a Bounce without bounce object',
      JSON.stringify({ ...send(), eventType: 'Bounce' }),
      /no bounce object/,
    ],
    [
      'a Complaint whose recipients are not a list',
      JSON.stringify({ ...send(), eventType: 'Complaint', complaint: { complainedRecipients: 'x' } }),
      /no complaint object/,
    ],
    ['a body over 1 MiB', JSON.stringify({ x: 'y'.repeat(1024 * 1024) }), /over 1 MiB/],
  ];
  for (const [what, body, reason] of cases) {
    it(what, () => assert.match(malformedReason(parseOutboundEvent(body)), reason));
  }

  it('the type label of a malformed event is the known type, else unknown', () => {
    const bounce = parseOutboundEvent(JSON.stringify({ eventType: 'Bounce' }));
    assert.equal(bounce.kind === 'malformed' && bounce.type, 'bounce');
    const other = parseOutboundEvent(JSON.stringify({ eventType: 'x'.repeat(10_000) }));
    assert.equal(other.kind === 'malformed' && other.type, 'unknown');
    assert.ok(other.kind === 'malformed' && other.reason.length <= 500, 'reasons are cut');
  });

  it('no input of a seeded mutation run throws', () => {
    const base = enveloped(send());
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2_000; i++) {
      const chars = [...base];
      for (let j = 0; j < 5; j++)
        chars[Math.floor(random() * chars.length)] = String.fromCharCode(random() * 128);
      const parsed = parseOutboundEvent(chars.join(''));
      assert.ok(['record', 'ignore', 'malformed'].includes(parsed.kind));
    }
  });
});
