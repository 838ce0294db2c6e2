import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  isConnectionError,
  outcomesFromError,
  outcomesFromInfo,
  statusForCode,
  type DeliveryStatus,
} from '../../src/smtp/classify.ts';

/** Shaped like nodemailer's SMTP errors (`_formatError`): message, code, response, responseCode, command. */
function smtpError(
  message: string,
  fields: { code?: string; response?: string; responseCode?: number; command?: string; recipient?: string },
): Error & typeof fields {
  return Object.assign(new Error(message), fields);
}

describe('statusForCode', () => {
  const cases: Array<[number | undefined, DeliveryStatus]> = [
    [200, 'delivered'],
    [250, 'delivered'],
    [251, 'delivered'],
    [299, 'delivered'],
    [300, 'deferred'],
    [354, 'deferred'],
    [421, 'deferred'],
    [450, 'deferred'],
    [452, 'deferred'],
    [499, 'deferred'],
    [500, 'rejected'],
    [550, 'rejected'],
    [554, 'rejected'],
    [599, 'rejected'],
    [600, 'deferred'],
    [199, 'deferred'],
    [0, 'deferred'],
    [-550, 'deferred'],
    [undefined, 'deferred'],
    [Number.NaN, 'deferred'],
    [550.5, 'deferred'],
    [Number.POSITIVE_INFINITY, 'deferred'],
  ];
  for (const [code, expected] of cases) {
    it(`classifies ${String(code)} as ${expected}`, () => {
      assert.equal(statusForCode(code), expected);
    });
  }
});

describe('outcomesFromInfo', () => {
  it('reports every accepted recipient delivered with the code and text of the final reply', () => {
    const info = {
      accepted: ['bob@example.com', 'carol@example.com'],
      rejected: [],
      response: '250 2.0.0 Ok: queued as 4XyZ1abc',
      envelope: { from: 'alice@sender.test', to: ['bob@example.com', 'carol@example.com'] },
      messageId: '<x@sender.test>',
    };
    assert.deepEqual(outcomesFromInfo(['bob@example.com', 'carol@example.com'], info), [
      {
        recipient: 'bob@example.com',
        status: 'delivered',
        code: 250,
        response: '250 2.0.0 Ok: queued as 4XyZ1abc',
      },
      {
        recipient: 'carol@example.com',
        status: 'delivered',
        code: 250,
        response: '250 2.0.0 Ok: queued as 4XyZ1abc',
      },
    ]);
  });

  it('takes the code from the reply text', () => {
    assert.deepEqual(
      outcomesFromInfo(['bob@example.com'], { accepted: ['bob@example.com'], response: '251 forwarded' }),
      [{ recipient: 'bob@example.com', status: 'delivered', code: 251, response: '251 forwarded' }],
    );
  });

  it('defaults to 250 without a response and then reports no response', () => {
    assert.deepEqual(outcomesFromInfo(['bob@example.com'], { accepted: ['bob@example.com'] }), [
      { recipient: 'bob@example.com', status: 'delivered', code: 250 },
    ]);
  });

  it('defaults to 250 when the reply text does not start with a code', () => {
    assert.deepEqual(outcomesFromInfo(['bob@example.com'], { response: 'Ok' }), [
      { recipient: 'bob@example.com', status: 'delivered', code: 250, response: 'Ok' },
    ]);
  });

  it('reports a RCPT-time permanent rejection per recipient', () => {
    const info = {
      accepted: ['bob@example.com'],
      rejected: ['nobody@example.com'],
      rejectedErrors: [
        smtpError('Recipient command failed: 550 5.1.1 <nobody@example.com>: Recipient address rejected', {
          code: 'EENVELOPE',
          response: '550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown',
          responseCode: 550,
          command: 'RCPT TO',
          recipient: 'nobody@example.com',
        }),
      ],
      response: '250 2.0.0 Ok: queued as ABC',
    };
    assert.deepEqual(outcomesFromInfo(['bob@example.com', 'nobody@example.com'], info), [
      {
        recipient: 'bob@example.com',
        status: 'delivered',
        code: 250,
        response: '250 2.0.0 Ok: queued as ABC',
      },
      {
        recipient: 'nobody@example.com',
        status: 'rejected',
        code: 550,
        response: '550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown',
      },
    ]);
  });

  it('reports a temporary rejection as deferred', () => {
    const info = {
      accepted: [],
      rejected: ['full@example.com'],
      rejectedErrors: [
        {
          recipient: 'full@example.com',
          responseCode: 452,
          response: '452 4.2.2 Mailbox full',
          code: 'EENVELOPE',
        },
      ],
    };
    assert.deepEqual(outcomesFromInfo(['full@example.com'], info), [
      { recipient: 'full@example.com', status: 'deferred', code: 452, response: '452 4.2.2 Mailbox full' },
    ]);
  });

  it('matches rejections case-insensitively and reports the recipient as the caller spelled it', () => {
    const info = {
      rejected: ['NoBody@Example.COM'],
      rejectedErrors: [{ recipient: 'NoBody@Example.COM', responseCode: 550, response: '550 no such user' }],
    };
    assert.deepEqual(outcomesFromInfo(['nobody@example.com'], info), [
      { recipient: 'nobody@example.com', status: 'rejected', code: 550, response: '550 no such user' },
    ]);
  });

  it('defers a rejected recipient that has no reply code', () => {
    const info = { accepted: ['bob@example.com'], rejected: ['Carol@Example.com'], response: '250 ok' };
    assert.deepEqual(outcomesFromInfo(['bob@example.com', 'carol@example.com'], info), [
      { recipient: 'bob@example.com', status: 'delivered', code: 250, response: '250 ok' },
      { recipient: 'carol@example.com', status: 'deferred', response: 'rejected without a reply code' },
    ]);
  });

  it('defers a rejectedErrors entry without a code and keeps its message', () => {
    const info = {
      rejected: ['bob@example.com'],
      rejectedErrors: [{ recipient: 'bob@example.com', message: 'Recipient command failed' }],
    };
    assert.deepEqual(outcomesFromInfo(['bob@example.com'], info), [
      { recipient: 'bob@example.com', status: 'deferred', response: 'Recipient command failed' },
    ]);
  });

  it('defers a "rejection" carrying a 2xx code, which cannot be one', () => {
    const info = {
      rejectedErrors: [{ recipient: 'bob@example.com', responseCode: 250, response: '250 ok?' }],
    };
    assert.deepEqual(outcomesFromInfo(['bob@example.com'], info), [
      { recipient: 'bob@example.com', status: 'deferred', code: 250, response: '250 ok?' },
    ]);
  });

  it('ignores malformed rejectedErrors entries', () => {
    const info = {
      rejectedErrors: [null, 'bob@example.com', { responseCode: 550 }, { recipient: 7, responseCode: 550 }],
      response: '250 ok',
    };
    assert.deepEqual(outcomesFromInfo(['bob@example.com'], info), [
      { recipient: 'bob@example.com', status: 'delivered', code: 250, response: '250 ok' },
    ]);
  });

  it('returns one outcome per requested recipient, in order, and none for an empty list', () => {
    assert.deepEqual(outcomesFromInfo([], { response: '250 ok' }), []);
    const outcomes = outcomesFromInfo(['c@example.com', 'a@example.com', 'b@example.com'], {
      rejectedErrors: [{ recipient: 'a@example.com', responseCode: 550, response: '550 no' }],
    });
    assert.deepEqual(
      outcomes.map((o) => [o.recipient, o.status]),
      [
        ['c@example.com', 'delivered'],
        ['a@example.com', 'rejected'],
        ['b@example.com', 'delivered'],
      ],
    );
  });

  it('reports LMTP per-recipient DATA failures next to deliveries', () => {
    // nodemailer (LMTP): a recipient refused after DATA moves from accepted to rejected with an EMESSAGE error.
    const info = {
      accepted: ['bob@example.com'],
      rejected: ['carol@example.com'],
      rejectedErrors: [
        smtpError('Message failed for recipient carol@example.com: 552 5.2.2 Mailbox full', {
          code: 'EMESSAGE',
          response: '552 5.2.2 <carol@example.com> Quota exceeded (mailbox for user is full)',
          responseCode: 552,
          command: 'DATA',
          recipient: 'carol@example.com',
        }),
      ],
      response: '250 2.0.0 <bob@example.com> abc Saved',
    };
    assert.deepEqual(outcomesFromInfo(['bob@example.com', 'carol@example.com'], info), [
      {
        recipient: 'bob@example.com',
        status: 'delivered',
        code: 250,
        response: '250 2.0.0 <bob@example.com> abc Saved',
      },
      {
        recipient: 'carol@example.com',
        status: 'rejected',
        code: 552,
        response: '552 5.2.2 <carol@example.com> Quota exceeded (mailbox for user is full)',
      },
    ]);
  });

  it('does not give a delivered LMTP recipient the failure code of the last recipient', () => {
    // With LMTP, nodemailer sets info.response to the reply for the LAST recipient; when that one failed, the
    // delivered recipients must not be reported as "delivered, code 452, Mailbox full".
    const info = {
      accepted: ['bob@example.com'],
      rejected: ['carol@example.com'],
      rejectedErrors: [
        {
          recipient: 'carol@example.com',
          code: 'EMESSAGE',
          responseCode: 452,
          response: '452 4.2.2 <carol@example.com> Mailbox full',
        },
      ],
      response: '452 4.2.2 <carol@example.com> Mailbox full',
    };
    const [bob] = outcomesFromInfo(['bob@example.com', 'carol@example.com'], info);
    assert.deepEqual(bob, { recipient: 'bob@example.com', status: 'delivered', code: 250 });
  });
});

describe('outcomesFromError', () => {
  it('uses the per-recipient replies of an EENVELOPE error (all recipients refused)', () => {
    const error = smtpError("Can't send mail - all recipients were rejected: 452 4.2.2 Mailbox full", {
      code: 'EENVELOPE',
      response: '452 4.2.2 Mailbox full',
      responseCode: 452,
      command: 'RCPT TO',
    });
    Object.assign(error, {
      rejected: ['full@example.com', 'gone@example.com'],
      rejectedErrors: [
        {
          recipient: 'full@example.com',
          code: 'EENVELOPE',
          responseCode: 452,
          response: '452 4.2.2 Mailbox full',
        },
        {
          recipient: 'gone@example.com',
          code: 'EENVELOPE',
          responseCode: 550,
          response: '550 5.1.1 User unknown',
        },
      ],
    });
    assert.deepEqual(outcomesFromError(['full@example.com', 'gone@example.com'], error), [
      { recipient: 'full@example.com', status: 'deferred', code: 452, response: '452 4.2.2 Mailbox full' },
      { recipient: 'gone@example.com', status: 'rejected', code: 550, response: '550 5.1.1 User unknown' },
    ]);
  });

  it('matches per-recipient replies case-insensitively', () => {
    const error = smtpError('all recipients were rejected', { code: 'EENVELOPE', responseCode: 550 });
    Object.assign(error, {
      rejectedErrors: [
        { recipient: 'GONE@example.com', responseCode: 550, response: '550 5.1.1 User unknown' },
      ],
    });
    assert.deepEqual(outcomesFromError(['gone@EXAMPLE.com'], error), [
      { recipient: 'gone@EXAMPLE.com', status: 'rejected', code: 550, response: '550 5.1.1 User unknown' },
    ]);
  });

  it('applies the error reply to recipients without their own reply', () => {
    const error = smtpError('Mail command failed: 553 5.7.1 Sender address rejected', {
      code: 'EENVELOPE',
      response: '553 5.7.1 <spoof@example.com>: Sender address rejected',
      responseCode: 553,
      command: 'MAIL FROM',
    });
    assert.deepEqual(outcomesFromError(['bob@example.com', 'carol@example.com'], error), [
      {
        recipient: 'bob@example.com',
        status: 'rejected',
        code: 553,
        response: '553 5.7.1 <spoof@example.com>: Sender address rejected',
      },
      {
        recipient: 'carol@example.com',
        status: 'rejected',
        code: 553,
        response: '553 5.7.1 <spoof@example.com>: Sender address rejected',
      },
    ]);
  });

  it('rejects every recipient on an EMESSAGE 552 reply to the message data', () => {
    const error = smtpError('Message failed: 552 5.3.4 Message size exceeds fixed limit', {
      code: 'EMESSAGE',
      response: '552 5.3.4 Message size exceeds fixed limit',
      responseCode: 552,
      command: 'DATA',
    });
    assert.deepEqual(outcomesFromError(['a@example.com', 'b@example.com'], error), [
      {
        recipient: 'a@example.com',
        status: 'rejected',
        code: 552,
        response: '552 5.3.4 Message size exceeds fixed limit',
      },
      {
        recipient: 'b@example.com',
        status: 'rejected',
        code: 552,
        response: '552 5.3.4 Message size exceeds fixed limit',
      },
    ]);
  });

  it('defers every recipient on a 451 reply to the message data', () => {
    const error = smtpError('Message failed: 451 4.3.0 Error: queue file write error', {
      code: 'EMESSAGE',
      response: '451 4.3.0 Error: queue file write error',
      responseCode: 451,
    });
    assert.deepEqual(outcomesFromError(['a@example.com'], error), [
      {
        recipient: 'a@example.com',
        status: 'deferred',
        code: 451,
        response: '451 4.3.0 Error: queue file write error',
      },
    ]);
  });

  it('defers every recipient on a connection error and reports its message', () => {
    const error = smtpError('connect ECONNREFUSED 127.0.0.1:25', { code: 'ECONNECTION', command: 'CONN' });
    assert.deepEqual(outcomesFromError(['a@example.com', 'b@example.com'], error), [
      { recipient: 'a@example.com', status: 'deferred', response: 'connect ECONNREFUSED 127.0.0.1:25' },
      { recipient: 'b@example.com', status: 'deferred', response: 'connect ECONNREFUSED 127.0.0.1:25' },
    ]);
  });

  it('defers on a greeting timeout', () => {
    const error = smtpError('Greeting never received', { code: 'ETIMEDOUT', command: 'CONN' });
    assert.deepEqual(outcomesFromError(['a@example.com'], error), [
      { recipient: 'a@example.com', status: 'deferred', response: 'Greeting never received' },
    ]);
  });

  it('ignores a responseCode that is not a number', () => {
    const error = { responseCode: '550', response: '550 no', message: 'x' };
    assert.deepEqual(outcomesFromError(['a@example.com'], error), [
      { recipient: 'a@example.com', status: 'deferred', response: '550 no' },
    ]);
  });

  it('defers on errors that are not objects, with their text as the response', () => {
    assert.deepEqual(outcomesFromError(['a@example.com'], 'socket hang up'), [
      { recipient: 'a@example.com', status: 'deferred', response: 'socket hang up' },
    ]);
    assert.deepEqual(outcomesFromError(['a@example.com'], undefined), [
      { recipient: 'a@example.com', status: 'deferred', response: 'undefined' },
    ]);
    assert.deepEqual(outcomesFromError(['a@example.com'], null), [
      { recipient: 'a@example.com', status: 'deferred', response: 'null' },
    ]);
    assert.deepEqual(outcomesFromError(['a@example.com'], 42), [
      { recipient: 'a@example.com', status: 'deferred', response: '42' },
    ]);
  });

  it('returns an empty list for no recipients', () => {
    assert.deepEqual(outcomesFromError([], new Error('boom')), []);
  });
});

describe('isConnectionError', () => {
  for (const code of [
    'ECONNECTION',
    'ETIMEDOUT',
    'ESOCKET',
    'ECONNRESET',
    'ECONNREFUSED',
    'EPIPE',
    'ETLS',
    'EPROTOCOL',
  ]) {
    it(`treats ${code} without a reply code as a connection error`, () => {
      assert.equal(isConnectionError(smtpError('x', { code })), true);
    });
  }

  it('treats an error that carries a reply code as a server answer', () => {
    assert.equal(isConnectionError(smtpError('x', { code: 'ECONNECTION', responseCode: 421 })), false);
    assert.equal(isConnectionError(smtpError('x', { code: 'EPROTOCOL', responseCode: 554 })), false);
  });

  it('does not treat envelope, message or auth errors as connection errors', () => {
    for (const code of ['EENVELOPE', 'EMESSAGE', 'EAUTH', 'ESTREAM', undefined]) {
      assert.equal(
        isConnectionError(smtpError('x', code === undefined ? {} : { code })),
        false,
        String(code),
      );
    }
  });

  it('matches the code exactly', () => {
    assert.equal(isConnectionError({ code: 'econnection' }), false);
  });

  it('is false for values that are not objects', () => {
    assert.equal(isConnectionError(undefined), false);
    assert.equal(isConnectionError(null), false);
    assert.equal(isConnectionError('ECONNECTION'), false);
    assert.equal(isConnectionError(110), false);
  });
});
