import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { domainOf, normalizeEnvelopeAddress } from '../../src/mail/envelope-address.ts';
import {
  parseSqsBody,
  unusableRecipientsOf,
  type ParsedBody,
  type SesReceipt,
} from '../../src/pipeline/notification.ts';
import {
  DEFAULT_TOPIC_ARN,
  sesNotification,
  sesSetupNotification,
  snsEnvelope,
  type SesReceivedNotification,
} from '../harness/ses-events.ts';

const MESSAGE_ID = 'o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1';
const TIMESTAMP = new Date('2024-05-01T12:34:56.789Z');
const MIME = Buffer.from(
  'From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: Hi\r\n\r\nGr\u00fc\u00dfe\r\n',
  'utf8',
);

/** An S3-action notification with every field SES sets. */
function s3Notification(
  overrides: Partial<Parameters<typeof sesNotification>[0]> = {},
): SesReceivedNotification {
  return sesNotification({
    messageId: MESSAGE_ID,
    source: 'alice@sender.test',
    recipients: ['bob@example.com'],
    bucket: 'example-com-emails',
    objectKeyPrefix: 'inbound/',
    raw: MIME,
    timestamp: TIMESTAMP,
    ...overrides,
  });
}

/** A JSON copy of a notification that can be edited freely (fields removed, wrong types put in). */
function editable(n: SesReceivedNotification): Record<string, unknown> & {
  mail: Record<string, unknown>;
  receipt: Record<string, unknown> & { action: Record<string, unknown> };
} {
  return JSON.parse(JSON.stringify(n)) as Record<string, unknown> & {
    mail: Record<string, unknown>;
    receipt: Record<string, unknown> & { action: Record<string, unknown> };
  };
}

function receiptOf(parsed: ParsedBody): SesReceipt {
  assert.equal(parsed.kind, 'receipt', `expected a receipt, got ${JSON.stringify(parsed)}`);
  if (parsed.kind !== 'receipt') throw new Error('unreachable');
  return parsed.receipt;
}

function reasonOf(parsed: ParsedBody): string {
  assert.equal(parsed.kind, 'invalid', `expected invalid, got ${JSON.stringify(parsed)}`);
  if (parsed.kind !== 'invalid') throw new Error('unreachable');
  return parsed.reason;
}

const ALL_PASS = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' } as const;

describe('parseSqsBody with an S3 action', () => {
  it('reads the receipt out of the SNS envelope around the SES notification', () => {
    const body = snsEnvelope(JSON.stringify(s3Notification()));
    assert.deepEqual(parseSqsBody(body), {
      kind: 'receipt',
      receipt: {
        sesMessageId: MESSAGE_ID,
        source: 'alice@sender.test',
        recipients: ['bob@example.com'],
        invalidRecipients: [],
        timestamp: '2024-05-01T12:34:56.789Z',
        verdicts: ALL_PASS,
        mail: { kind: 's3', bucket: 'example-com-emails', key: `inbound/${MESSAGE_ID}` },
      },
    });
  });

  it('reads the same receipt from the bare notification (raw message delivery)', () => {
    const notification = s3Notification();
    const raw = parseSqsBody(JSON.stringify(notification));
    const enveloped = parseSqsBody(snsEnvelope(JSON.stringify(notification)));
    assert.deepEqual(raw, enveloped);
    assert.deepEqual(receiptOf(raw).mail, {
      kind: 's3',
      bucket: 'example-com-emails',
      key: `inbound/${MESSAGE_ID}`,
    });
  });

  it('accepts a hand-written notification in the documented SES format', () => {
    const body = JSON.stringify({
      Type: 'Notification',
      MessageId: '2b1e7c1e-5b7c-5c1e-9d0e-2a1b3c4d5e6f',
      TopicArn: DEFAULT_TOPIC_ARN,
      Subject: 'Amazon SES Email Receipt Notification',
      Message: JSON.stringify({
        notificationType: 'Received',
        mail: {
          timestamp: '2015-09-11T20:32:33.936Z',
          source: '61967230-7A45-4A9D-BEC9-87CBCF2211C9@example.com',
          messageId: 'd6iitobk75ur44p8kdnnp7g2n800',
          destination: ['recipient@example.com'],
          headersTruncated: false,
          headers: [{ name: 'Subject', value: 'Example subject' }],
          commonHeaders: { subject: 'Example subject' },
        },
        receipt: {
          timestamp: '2015-09-11T20:32:33.936Z',
          processingTimeMillis: 222,
          recipients: ['recipient@example.com'],
          spamVerdict: { status: 'PASS' },
          virusVerdict: { status: 'PASS' },
          spfVerdict: { status: 'PASS' },
          dkimVerdict: { status: 'PASS' },
          dmarcVerdict: { status: 'PASS' },
          action: {
            type: 'S3',
            topicArn: 'arn:aws:sns:us-east-1:012345678912:example-topic',
            bucketName: 'my-S3-bucket',
            objectKeyPrefix: 'email',
            objectKey: 'email/d6iitobk75ur44p8kdnnp7g2n800',
          },
        },
      }),
      Timestamp: '2015-09-11T20:32:34.124Z',
      SignatureVersion: '1',
    });
    assert.deepEqual(receiptOf(parseSqsBody(body)), {
      sesMessageId: 'd6iitobk75ur44p8kdnnp7g2n800',
      source: '61967230-7A45-4A9D-BEC9-87CBCF2211C9@example.com',
      recipients: ['recipient@example.com'],
      invalidRecipients: [],
      timestamp: '2015-09-11T20:32:33.936Z',
      verdicts: ALL_PASS,
      mail: { kind: 's3', bucket: 'my-S3-bucket', key: 'email/d6iitobk75ur44p8kdnnp7g2n800' },
    });
  });

  it('lower-cases and trims recipients and drops blank ones', () => {
    const n = s3Notification({ recipients: ['  Bob@Example.COM ', 'CAROL@example.com', '   ', ''] });
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).recipients, [
      'bob@example.com',
      'carol@example.com',
    ]);
  });

  it('keeps recipients in notification order, duplicates included', () => {
    const n = s3Notification({ recipients: ['b@example.com', 'a@example.com', 'B@example.com'] });
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).recipients, [
      'b@example.com',
      'a@example.com',
      'b@example.com',
    ]);
  });

  it('trims the envelope sender and keeps its case', () => {
    const n = s3Notification({ source: '  Alice@Sender.TEST ' });
    assert.equal(receiptOf(parseSqsBody(JSON.stringify(n))).source, 'Alice@Sender.TEST');
  });

  it('reports a null sender and a missing timestamp as empty strings', () => {
    const n = editable(s3Notification({ source: '' }));
    delete n.mail.timestamp;
    const receipt = receiptOf(parseSqsBody(JSON.stringify(n)));
    assert.equal(receipt.source, '');
    assert.equal(receipt.timestamp, '');
  });

  it('reports a non-string source as the null sender', () => {
    const n = editable(s3Notification());
    n.mail.source = 42;
    assert.equal(receiptOf(parseSqsBody(JSON.stringify(n))).source, '');
  });

  it('accepts an empty recipient list', () => {
    const n = s3Notification({ recipients: [] });
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).recipients, []);
  });

  it('accepts a body with surrounding whitespace', () => {
    const body = `\n  ${JSON.stringify(s3Notification())}  \n`;
    assert.equal(receiptOf(parseSqsBody(body)).sesMessageId, MESSAGE_ID);
  });
});

describe('parseSqsBody with an SNS action (mail inline)', () => {
  it('decodes BASE64 content into the exact mail bytes', () => {
    const n = sesNotification({
      messageId: MESSAGE_ID,
      source: 'alice@sender.test',
      recipients: ['bob@example.com'],
      inlineContent: MIME,
      timestamp: TIMESTAMP,
    });
    const receipt = receiptOf(parseSqsBody(snsEnvelope(JSON.stringify(n))));
    assert.equal(receipt.mail.kind, 'inline');
    if (receipt.mail.kind !== 'inline') return;
    assert.ok(Buffer.isBuffer(receipt.mail.data));
    assert.ok(receipt.mail.data.equals(MIME), receipt.mail.data.toString('latin1'));
    assert.equal(receipt.sesMessageId, MESSAGE_ID);
    assert.deepEqual(receipt.recipients, ['bob@example.com']);
  });

  it('decodes UTF8 content as UTF-8 text', () => {
    const n = editable(
      sesNotification({
        messageId: MESSAGE_ID,
        source: 'alice@sender.test',
        recipients: ['bob@example.com'],
        inlineContent: MIME,
      }),
    );
    n.receipt.action.encoding = 'UTF8';
    n.content = MIME.toString('utf8');
    const receipt = receiptOf(parseSqsBody(JSON.stringify(n)));
    assert.deepEqual(receipt.mail, { kind: 'inline', data: MIME });
  });

  it('treats content as UTF8 when the action names no encoding', () => {
    const n = editable(
      sesNotification({
        messageId: MESSAGE_ID,
        source: 'alice@sender.test',
        recipients: ['bob@example.com'],
        inlineContent: MIME,
      }),
    );
    delete n.receipt.action.encoding;
    n.content = 'Subject: x\r\n\r\n\u00e9';
    const receipt = receiptOf(parseSqsBody(JSON.stringify(n)));
    assert.deepEqual(receipt.mail, {
      kind: 'inline',
      data: Buffer.from('Subject: x\r\n\r\n\u00c3\u00a9', 'latin1'),
    });
  });

  it('accepts the encoding name in any case', () => {
    const n = editable(
      sesNotification({
        messageId: MESSAGE_ID,
        source: 'alice@sender.test',
        recipients: ['bob@example.com'],
        inlineContent: MIME,
      }),
    );
    n.receipt.action.encoding = 'base64';
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).mail, { kind: 'inline', data: MIME });
  });

  it('prefers inline content over an S3 location when both are present', () => {
    const n = editable(s3Notification());
    n.content = Buffer.from('Subject: inline\r\n\r\nx').toString('base64');
    n.receipt.action.encoding = 'BASE64';
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).mail, {
      kind: 'inline',
      data: Buffer.from('Subject: inline\r\n\r\nx'),
    });
  });
});

describe('parseSqsBody with SES setup messages', () => {
  it('recognises the setup notification inside an SNS envelope', () => {
    assert.deepEqual(parseSqsBody(sesSetupNotification()), { kind: 'setup' });
  });

  it('recognises the setup notification for an S3 action delivered raw', () => {
    assert.deepEqual(
      parseSqsBody(
        sesSetupNotification({ bucket: 'example-com-emails', objectKeyPrefix: 'in/', rawDelivery: true }),
      ),
      { kind: 'setup' },
    );
  });

  it('recognises a bare setup notification that has no mail or receipt', () => {
    assert.deepEqual(parseSqsBody('{"notificationType":"AMAZON_SES_SETUP_NOTIFICATION"}'), { kind: 'setup' });
  });

  it('recognises an SES event-publishing setup event', () => {
    assert.deepEqual(parseSqsBody(snsEnvelope('{"eventType":"Setup"}')), { kind: 'setup' });
  });

  it('recognises the plain-text "Successfully validated SNS topic" message', () => {
    const body = snsEnvelope(
      'Successfully validated SNS topic for Amazon SES event publishing.',
      DEFAULT_TOPIC_ARN,
      { subject: 'Amazon SES Setup Notification' },
    );
    assert.deepEqual(parseSqsBody(body), { kind: 'setup' });
  });
});

describe('parseSqsBody with invalid bodies', () => {
  it('rejects an undefined body', () => {
    assert.deepEqual(parseSqsBody(undefined), { kind: 'invalid', reason: 'empty body' });
  });

  it('rejects an empty or whitespace-only body', () => {
    assert.deepEqual(parseSqsBody(''), { kind: 'invalid', reason: 'empty body' });
    assert.deepEqual(parseSqsBody(' \r\n\t '), { kind: 'invalid', reason: 'empty body' });
  });

  it('rejects a body that is not JSON and says why', () => {
    assert.match(reasonOf(parseSqsBody('From: alice@sender.test')), /^body is not JSON \(.+\)$/);
  });

  it('rejects a truncated JSON body', () => {
    const body = JSON.stringify(s3Notification());
    assert.match(reasonOf(parseSqsBody(body.slice(0, body.length - 10))), /^body is not JSON/);
  });

  it('rejects a JSON array, a string, a number and null', () => {
    for (const body of ['[]', '[{"notificationType":"Received"}]', '"Received"', '42', 'null']) {
      assert.deepEqual(parseSqsBody(body), { kind: 'invalid', reason: 'body is not a JSON object' }, body);
    }
  });

  it('rejects an SNS SubscriptionConfirmation', () => {
    const body = JSON.stringify({
      Type: 'SubscriptionConfirmation',
      MessageId: '165545c9-2a5c-472c-8df2-7ff2be2b3b1b',
      Token: '2336412f37f',
      TopicArn: DEFAULT_TOPIC_ARN,
      Message:
        'You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL.',
      SubscribeURL: 'https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription',
    });
    assert.deepEqual(parseSqsBody(body), {
      kind: 'invalid',
      reason: 'SNS message of type SubscriptionConfirmation is not a notification',
    });
  });

  it('rejects an SNS UnsubscribeConfirmation', () => {
    assert.equal(
      reasonOf(parseSqsBody('{"Type":"UnsubscribeConfirmation","Message":"x"}')),
      'SNS message of type UnsubscribeConfirmation is not a notification',
    );
  });

  it('rejects an SNS envelope without a Message string', () => {
    assert.equal(reasonOf(parseSqsBody('{"Type":"Notification"}')), 'SNS envelope has no Message string');
    assert.equal(
      reasonOf(parseSqsBody('{"Type":"Notification","Message":{"notificationType":"Received"}}')),
      'SNS envelope has no Message string',
    );
  });

  it('rejects an SNS envelope whose Message is not JSON', () => {
    assert.deepEqual(parseSqsBody(snsEnvelope('Hello from SNS')), {
      kind: 'invalid',
      reason: 'SNS Message is not JSON',
    });
  });

  it('rejects an SNS envelope whose Message is a JSON array', () => {
    assert.deepEqual(parseSqsBody(snsEnvelope('[1,2]')), {
      kind: 'invalid',
      reason: 'notification is not a JSON object',
    });
  });

  it('rejects SES bounce and complaint notifications', () => {
    assert.equal(
      reasonOf(
        parseSqsBody(snsEnvelope('{"notificationType":"Bounce","bounce":{"bounceType":"Permanent"}}')),
      ),
      'not an SES receipt notification (notificationType="Bounce")',
    );
    assert.equal(
      reasonOf(parseSqsBody('{"notificationType":"Complaint","complaint":{}}')),
      'not an SES receipt notification (notificationType="Complaint")',
    );
  });

  it('rejects a notification without a notificationType', () => {
    const n = editable(s3Notification());
    delete n.notificationType;
    assert.equal(
      reasonOf(parseSqsBody(JSON.stringify(n))),
      'not an SES receipt notification (notificationType=undefined)',
    );
  });

  it('rejects a notification type spelled in another case', () => {
    const n = editable(s3Notification());
    n.notificationType = 'received';
    assert.equal(
      reasonOf(parseSqsBody(JSON.stringify(n))),
      'not an SES receipt notification (notificationType="received")',
    );
  });

  it('rejects a notification without a mail object', () => {
    const n: Record<string, unknown> = editable(s3Notification());
    delete n.mail;
    assert.equal(reasonOf(parseSqsBody(JSON.stringify(n))), 'notification has no mail object');
    n.mail = [];
    assert.equal(reasonOf(parseSqsBody(JSON.stringify(n))), 'notification has no mail object');
  });

  it('rejects a notification without a receipt object', () => {
    const n: Record<string, unknown> = editable(s3Notification());
    delete n.receipt;
    assert.equal(reasonOf(parseSqsBody(JSON.stringify(n))), 'notification has no receipt object');
    n.receipt = 'S3';
    assert.equal(reasonOf(parseSqsBody(JSON.stringify(n))), 'notification has no receipt object');
  });

  it('rejects a missing, empty or non-string messageId', () => {
    for (const value of [undefined, '', 12345, null]) {
      const n = editable(s3Notification());
      if (value === undefined) delete n.mail.messageId;
      else n.mail.messageId = value;
      assert.deepEqual(
        parseSqsBody(JSON.stringify(n)),
        { kind: 'invalid', reason: 'mail.messageId missing' },
        String(value),
      );
    }
  });

  it('rejects a messageId with characters SES never uses', () => {
    for (const id of [
      '../../etc/passwd',
      'abc def',
      'abc/def',
      'id\nX-Injected: 1',
      'ümlaut',
      'a;b',
      'a'.repeat(201),
    ]) {
      const n = editable(s3Notification());
      n.mail.messageId = id;
      assert.deepEqual(
        parseSqsBody(JSON.stringify(n)),
        { kind: 'invalid', reason: 'mail.messageId has unexpected characters' },
        JSON.stringify(id),
      );
    }
  });

  it('accepts a messageId of letters, digits, dots, dashes and underscores up to 200 characters', () => {
    for (const id of ['A', 'a.b-c_d', '0'.repeat(200)]) {
      const n = s3Notification({ messageId: id });
      assert.equal(receiptOf(parseSqsBody(JSON.stringify(n))).sesMessageId, id);
    }
  });

  it('rejects recipients that are not a list', () => {
    for (const value of ['bob@example.com', { 0: 'bob@example.com' }, null]) {
      const n = editable(s3Notification());
      n.receipt.recipients = value;
      assert.deepEqual(
        parseSqsBody(JSON.stringify(n)),
        { kind: 'invalid', reason: 'receipt.recipients is not a list of addresses' },
        JSON.stringify(value),
      );
    }
    const n = editable(s3Notification());
    delete n.receipt.recipients;
    assert.equal(reasonOf(parseSqsBody(JSON.stringify(n))), 'receipt.recipients is not a list of addresses');
  });

  it('rejects a recipient list containing non-strings', () => {
    for (const value of [
      ['bob@example.com', 7],
      [null],
      [['bob@example.com']],
      [{ address: 'bob@example.com' }],
    ]) {
      const n = editable(s3Notification());
      n.receipt.recipients = value;
      assert.equal(
        reasonOf(parseSqsBody(JSON.stringify(n))),
        'receipt.recipients is not a list of addresses',
        JSON.stringify(value),
      );
    }
  });

  it('rejects a receipt without an action', () => {
    const n = editable(s3Notification());
    const receipt: Record<string, unknown> = n.receipt;
    delete receipt.action;
    assert.equal(reasonOf(parseSqsBody(JSON.stringify(n))), 'receipt.action missing');
  });

  it('rejects a Lambda action, which carries no mail', () => {
    const n = editable(s3Notification());
    n.receipt.action = {
      type: 'Lambda',
      functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:Example',
      invocationType: 'Event',
    };
    assert.equal(
      reasonOf(parseSqsBody(JSON.stringify(n))),
      'receipt action "Lambda" carries no mail (no S3 object, no content)',
    );
  });

  it('rejects an SNS action whose content is missing', () => {
    const n = editable(
      sesNotification({
        messageId: MESSAGE_ID,
        source: 'alice@sender.test',
        recipients: ['bob@example.com'],
        inlineContent: MIME,
      }),
    );
    delete n.content;
    assert.equal(
      reasonOf(parseSqsBody(JSON.stringify(n))),
      'receipt action "SNS" carries no mail (no S3 object, no content)',
    );
  });

  it('rejects an S3 action without a bucket', () => {
    for (const value of [undefined, '', 5]) {
      const n = editable(s3Notification());
      if (value === undefined) delete n.receipt.action.bucketName;
      else n.receipt.action.bucketName = value;
      assert.deepEqual(
        parseSqsBody(JSON.stringify(n)),
        { kind: 'invalid', reason: 'action.bucketName missing' },
        String(value),
      );
    }
  });

  it('rejects an S3 action without an object key', () => {
    for (const value of [undefined, '', false]) {
      const n = editable(s3Notification());
      if (value === undefined) delete n.receipt.action.objectKey;
      else n.receipt.action.objectKey = value;
      assert.deepEqual(
        parseSqsBody(JSON.stringify(n)),
        { kind: 'invalid', reason: 'action.objectKey missing' },
        String(value),
      );
    }
  });
});

describe('parseSqsBody verdicts', () => {
  it('reads every SES verdict status', () => {
    const n = s3Notification({
      verdicts: { spam: 'FAIL', virus: 'GRAY', spf: 'PROCESSING_FAILED', dkim: 'DISABLED', dmarc: 'PASS' },
    });
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).verdicts, {
      spam: 'FAIL',
      virus: 'GRAY',
      spf: 'PROCESSING_FAILED',
      dkim: 'DISABLED',
      dmarc: 'PASS',
    });
  });

  it('upper-cases a lower-case status', () => {
    const n = editable(s3Notification());
    n.receipt.spamVerdict = { status: 'fail' };
    n.receipt.dmarcVerdict = { status: 'Gray' };
    const verdicts = receiptOf(parseSqsBody(JSON.stringify(n))).verdicts;
    assert.equal(verdicts.spam, 'FAIL');
    assert.equal(verdicts.dmarc, 'GRAY');
  });

  it('reports an unknown, missing or malformed verdict as UNKNOWN', () => {
    const n = editable(s3Notification());
    n.receipt.spamVerdict = { status: 'MAYBE' };
    n.receipt.virusVerdict = 'PASS';
    delete n.receipt.spfVerdict;
    n.receipt.dkimVerdict = { status: 1 };
    n.receipt.dmarcVerdict = { status: 'UNKNOWN' };
    assert.deepEqual(receiptOf(parseSqsBody(JSON.stringify(n))).verdicts, {
      spam: 'UNKNOWN',
      virus: 'UNKNOWN',
      spf: 'UNKNOWN',
      dkim: 'UNKNOWN',
      dmarc: 'UNKNOWN',
    });
  });

  it('reports a verdict given as a list as UNKNOWN', () => {
    const n = editable(s3Notification());
    n.receipt.spamVerdict = [{ status: 'PASS' }];
    assert.equal(receiptOf(parseSqsBody(JSON.stringify(n))).verdicts.spam, 'UNKNOWN');
  });
});

describe('parseSqsBody checks envelope addresses before any SMTP command is built from them', () => {
  const hostile = [
    'x>@example.com',
    '<bob@example.com>',
    'a\r\nRCPT TO:<evil@attacker.test>@example.com',
    'bob\n@example.com',
    'b\u0000ob@example.com',
    'b ob@example.com',
    'bob@exa mple.com',
    `${'l'.repeat(65)}@example.com`,
    `bob@${'d'.repeat(64)}.example.com`,
    'nobody',
    '@example.com',
    'b..ob@example.com',
    'bob\u202e@example.com',
  ];

  it('keeps usable recipients and lists every unusable one with a reason', () => {
    const n = s3Notification({ recipients: ['bob@example.com', ...hostile] });
    const receipt = receiptOf(parseSqsBody(JSON.stringify(n)));
    assert.deepEqual(receipt.recipients, ['bob@example.com']);
    assert.deepEqual(
      receipt.invalidRecipients.map((r) => r.address),
      hostile.map((h) => h.trim().toLowerCase()),
    );
    for (const r of receipt.invalidRecipients) assert.ok(r.reason.length > 0, JSON.stringify(r));
  });

  it('accepts RFC 5321 mailboxes that look unusual: tags, SRS, UTF-8, address literals', () => {
    const unusual = [
      'bob+tag@example.com',
      'srs0=hhh=tt=other.test=bob@example.com',
      'jürgen@example.com',
      'bob@[192.0.2.1]',
      `${'l'.repeat(64)}@example.com`,
    ];
    const receipt = receiptOf(parseSqsBody(JSON.stringify(s3Notification({ recipients: unusual }))));
    assert.deepEqual(receipt.recipients, unusual);
    assert.deepEqual(receipt.invalidRecipients, []);
  });

  it('unquotes a needlessly quoted local part and refuses one that needs its quotes', () => {
    const n = s3Notification({
      recipients: ['"bob.smith"@example.com', '"x"@example.com', '"a,b"@example.com', '"a@b"@example.com'],
      source: '"pat"@external.test',
    });
    const receipt = receiptOf(parseSqsBody(JSON.stringify(n)));
    // What nodemailer sends and the mail server's reply names: a refusal is matched back to the recipient.
    assert.deepEqual(receipt.recipients, ['bob.smith@example.com', 'x@example.com']);
    assert.deepEqual(
      receipt.invalidRecipients.map((r) => [r.address, /quoted local part/.test(r.reason)]),
      [
        ['"a,b"@example.com', true],
        ['"a@b"@example.com', true],
      ],
    );
    assert.equal(receipt.source, 'pat@external.test');
    assert.equal(normalizeEnvelopeAddress('"a b"@example.com'), '"a b"@example.com');
  });

  it('gives each domain only its own unusable recipients, once', () => {
    const n = s3Notification({ recipients: ['x>@example.com', 'x>@example.com', 'y>@other.test'] });
    const receipt = receiptOf(parseSqsBody(JSON.stringify(n)));
    assert.deepEqual(
      unusableRecipientsOf(receipt, 'example.com').map((r) => r.address),
      ['x>@example.com'],
    );
  });

  it('turns an unusable envelope sender into the null sender and keeps the original', () => {
    for (const source of ['evil>@x.test', 'a\r\nRCPT TO:<b@c>', 'a b@x.test', `${'l'.repeat(300)}@x.test`]) {
      const receipt = receiptOf(parseSqsBody(JSON.stringify(s3Notification({ source }))));
      assert.equal(receipt.source, '', JSON.stringify(source));
      assert.equal(receipt.invalidSource?.address.startsWith(source.trim().slice(0, 100)), true);
      assert.ok(receipt.invalidSource.reason.length > 0);
      assert.ok(receipt.invalidSource.address.length <= 321, 'cut for the log');
    }
  });

  it('reads <> as the null sender without calling it unusable', () => {
    const receipt = receiptOf(parseSqsBody(JSON.stringify(s3Notification({ source: '<>' }))));
    assert.equal(receipt.source, '');
    assert.equal(receipt.invalidSource, undefined);
  });

  it('refuses a bucket name or object key that no S3 action writes', () => {
    for (const [field, value] of [
      ['bucketName', 'bucket\r\nx'],
      ['bucketName', '../etc'],
      ['bucketName', 'a'],
      ['objectKey', 'key\r\nHost: evil'],
      ['objectKey', 'k'.repeat(1025)],
    ] as const) {
      const n = editable(s3Notification());
      n.receipt.action[field] = value;
      assert.match(
        reasonOf(parseSqsBody(JSON.stringify(n))),
        new RegExp(field),
        `${field}=${JSON.stringify(value)}`,
      );
    }
  });
});

describe('parseSqsBody never throws', () => {
  const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;

  it('reads values nested 100,000 deep as what they are, with a short reason', () => {
    for (const body of [
      `{"Type":${deep}}`,
      `{"notificationType":${deep}}`,
      JSON.stringify({
        ...s3Notification(),
        receipt: { ...s3Notification().receipt, action: { type: 'x' } },
      }).replace('"type":"x"', `"type":${deep}`),
    ]) {
      const reason = reasonOf(parseSqsBody(body));
      assert.ok(reason.length <= 501, `${reason.length} characters`);
      assert.match(reason, /a JSON array/);
    }
  });

  it('cuts every reason to a log-sized length', () => {
    const n = editable(s3Notification());
    n.receipt.action = { type: 'x'.repeat(300_000) };
    assert.ok(reasonOf(parseSqsBody(JSON.stringify(n))).length <= 501);
  });
});

describe('parseSqsBody confines notifications to the expected topics and buckets', () => {
  const TOPIC = 'arn:aws:sns:us-east-1:123456789012:example-com-inbound';
  const sources = { topicArns: [TOPIC], buckets: ['example-com-emails'] };
  const withTopic = (topicArn: string, bucket = 'example-com-emails') => s3Notification({ topicArn, bucket });

  it('accepts a notification from an allowed topic naming an allowed bucket, enveloped or raw', () => {
    const n = withTopic(TOPIC);
    assert.equal(parseSqsBody(snsEnvelope(JSON.stringify(n), TOPIC), sources).kind, 'receipt');
    assert.equal(parseSqsBody(JSON.stringify(n), sources).kind, 'receipt');
  });

  it('refuses another topic, in the SNS envelope or in the SES action, and names the setting', () => {
    const other = 'arn:aws:sns:us-east-1:999999999999:attacker';
    assert.match(
      reasonOf(parseSqsBody(snsEnvelope(JSON.stringify(withTopic(TOPIC)), other), sources)),
      /attacker.*ALLOWED_TOPIC_ARNS/,
    );
    assert.match(reasonOf(parseSqsBody(JSON.stringify(withTopic(other)), sources)), /ALLOWED_TOPIC_ARNS/);
  });

  it('refuses a raw notification that names no topic at all when topics are confined', () => {
    const n = editable(withTopic(TOPIC));
    delete n.receipt.action.topicArn;
    assert.match(reasonOf(parseSqsBody(JSON.stringify(n), sources)), /no SNS topic/);
  });

  it('refuses another bucket and names the setting', () => {
    assert.match(
      reasonOf(parseSqsBody(JSON.stringify(withTopic(TOPIC, 'someone-elses-bucket')), sources)),
      /someone-elses-bucket.*ALLOWED_MAIL_BUCKETS/,
    );
  });

  it('allows anything when the lists are empty', () => {
    const n = withTopic('arn:aws:sns:us-east-1:999999999999:any', 'any-bucket');
    assert.equal(parseSqsBody(JSON.stringify(n), { topicArns: [], buckets: [] }).kind, 'receipt');
  });

  it('still deletes setup notifications from anywhere (they carry no mail)', () => {
    assert.deepEqual(parseSqsBody(sesSetupNotification({ topicArn: 'arn:aws:sns:x:1:y' }), sources), {
      kind: 'setup',
    });
  });
});

describe('domainOf', () => {
  it('returns the lower-cased domain of an address', () => {
    assert.equal(domainOf('Bob@Example.COM'), 'example.com');
    assert.equal(domainOf('bob@sub.example.com'), 'sub.example.com');
  });

  it('takes the part after the last @', () => {
    assert.equal(domainOf('"a@b"@Example.org'), 'example.org');
  });

  it('returns an empty string without an @ or with nothing after it', () => {
    assert.equal(domainOf('postmaster'), '');
    assert.equal(domainOf(''), '');
    assert.equal(domainOf('bob@'), '');
  });
});
