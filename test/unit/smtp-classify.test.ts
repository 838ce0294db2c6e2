import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  classify,
  enhancedStatus,
  isRetryableBeforeData,
  outcomesFromError,
  outcomesFromInfo,
  stageOf,
  type RecipientDelivery,
  type SmtpStage,
} from '../../src/smtp/classify.ts';

/**
 * What nodemailer 10 handed the worker for each answer of the real Postfix 3.7 + Dovecot 2.3 of the e2e suite,
 * captured by scripts/mailserver/capture-replies.ts (run it again after upgrading either).
 */
interface CapturedCase {
  what: string;
  to: string[];
  rejected?: Record<string, unknown>;
  resolved?: Record<string, unknown>;
}
const captured = JSON.parse(
  readFileSync(new URL('../fixtures/smtp-replies/real.json', import.meta.url), 'utf8'),
) as { cases: Record<string, CapturedCase> };

/** The classifier's answer for a captured case, as the transport would produce it. */
function outcomesOf(name: string): RecipientDelivery[] {
  const c = captured.cases[name];
  assert.ok(c, `captured case ${name}`);
  if (c.rejected) return outcomesFromError(c.to, c.rejected);
  assert.ok(c.resolved, `${name} has an outcome`);
  return outcomesFromInfo(c.to, c.resolved);
}

const summary = (r: RecipientDelivery) => [
  r.recipient,
  r.status,
  r.stage,
  r.code,
  r.enhanced,
  !!r.deploymentFault,
];

/** Shaped like nodemailer's SMTP errors (`_formatError`): message, code, response, responseCode, command. */
function smtpError(
  message: string,
  fields: {
    code?: string;
    response?: string;
    responseCode?: number;
    command?: string;
    recipient?: string;
    originalCode?: string;
    timeoutType?: string;
  },
): Error & typeof fields {
  return Object.assign(new Error(message), fields);
}

describe('classification of what the real Postfix and Dovecot answered', () => {
  it('Postfix: an unknown mailbox (550 5.1.1 at RCPT) is a verdict on that recipient', () => {
    assert.deepEqual(outcomesOf('smtp-unknown-mailbox').map(summary), [
      ['nobody@example.com', 'invalid', 'rcpt', 550, '5.1.1', false],
    ]);
  });

  it('Postfix: one unknown mailbox next to a valid one: delivered and invalid', () => {
    assert.deepEqual(outcomesOf('smtp-unknown-mailbox-and-valid').map(summary), [
      ['alice@example.com', 'delivered', 'content', 250, '2.0.0', false],
      ['nobody@example.com', 'invalid', 'rcpt', 550, '5.1.1', false],
    ]);
  });

  it('Postfix: a domain it is not configured for (554 5.7.1 Relay access denied) is a deployment fault', () => {
    for (const name of ['smtp-unconfigured-domain', 'smtp-unconfigured-domain-two-recipients']) {
      const outcomes = outcomesOf(name);
      assert.ok(outcomes.length > 0);
      for (const o of outcomes) {
        assert.equal(o.status, 'deferred', name);
        assert.equal(o.deploymentFault, true, name);
        assert.equal(o.stage, 'rcpt');
        assert.equal(o.enhanced, '5.7.1');
        assert.match(o.response ?? '', /Relay access denied/);
      }
    }
  });

  it('Postfix: a client outside its permitted networks (554 5.7.1 Client host rejected) is a deployment fault', () => {
    const [o] = outcomesOf('internal-client-host-rejected');
    assert.deepEqual(o && summary(o), ['alice@example.com', 'deferred', 'rcpt', 554, '5.7.1', true]);
    assert.match(o?.response ?? '', /Client host rejected/);
  });

  it('Postfix: 451 4.2.1 at RCPT is temporary, not a deployment fault', () => {
    assert.deepEqual(outcomesOf('smtp-temporary-rcpt').map(summary), [
      ['busy@example.com', 'deferred', 'rcpt', 451, '4.2.1', false],
    ]);
  });

  it('Postfix: a header_checks REJECT after DATA is a verdict on the content for every recipient', () => {
    assert.deepEqual(outcomesOf('smtp-content-rejected').map(summary), [
      ['alice@example.com', 'rejected', 'content', 550, '5.7.1', false],
      ['bob@example.com', 'rejected', 'content', 550, '5.7.1', false],
    ]);
  });

  it('Postfix: the size limit (552 5.3.4 after DATA) is a verdict on the content', () => {
    assert.deepEqual(outcomesOf('smtp-size-limit').map(summary), [
      ['alice@example.com', 'rejected', 'content', 552, '5.3.4', false],
    ]);
  });

  it('Dovecot LMTP: an unknown user and an unknown domain get the same 550 5.1.1: both invalid', () => {
    assert.deepEqual(outcomesOf('lmtp-unknown-mailbox').map(summary), [
      ['nobody@example.com', 'invalid', 'rcpt', 550, '5.1.1', false],
    ]);
    assert.deepEqual(outcomesOf('lmtp-unconfigured-domain').map(summary), [
      ['someone@unconfigured.test', 'invalid', 'rcpt', 550, '5.1.1', false],
    ]);
  });

  it('Dovecot LMTP: a per-recipient 552 5.2.2 after DATA rejects that recipient only', () => {
    assert.deepEqual(outcomesOf('lmtp-quota-one-of-two').map(summary), [
      // info.response is the LAST recipient's reply (the failure): the delivered one must not inherit it.
      ['alice@example.com', 'delivered', 'content', 250, undefined, false],
      ['tiny@example.com', 'rejected', 'content', 552, '5.2.2', false],
    ]);
    assert.deepEqual(outcomesOf('lmtp-quota-only').map(summary), [
      ['tiny@example.com', 'rejected', 'content', 552, '5.2.2', false],
    ]);
  });

  it('Dovecot LMTP: two recipients delivered', () => {
    assert.deepEqual(
      outcomesOf('lmtp-delivered').map((o) => [o.recipient, o.status]),
      [
        ['alice@example.com', 'delivered'],
        ['bob@example.com', 'delivered'],
      ],
    );
  });

  it('a refused connection is temporary, placed before the session, and worth an immediate retry', () => {
    const c = captured.cases['connection-refused'];
    assert.deepEqual(outcomesOf('connection-refused').map(summary), [
      ['alice@example.com', 'deferred', 'connect', undefined, undefined, false],
    ]);
    assert.equal(isRetryableBeforeData(c?.rejected), true);
  });

  it('no captured 5xx reply is ever retried immediately', () => {
    for (const [name, c] of Object.entries(captured.cases)) {
      if (c.rejected && typeof c.rejected.responseCode === 'number')
        assert.equal(isRetryableBeforeData(c.rejected), false, name);
    }
  });
});

describe('classify: stage and enhanced status decide', () => {
  const cases: Array<[SmtpStage, number | undefined, string | undefined, string, boolean?]> = [
    ['content', 250, '250 2.0.0 Ok: queued', 'delivered'],
    ['rcpt', 550, '550 5.1.1 <x@example.com>: User unknown', 'invalid'],
    ['rcpt', 550, '550 5.1.0 Address rejected', 'invalid'],
    ['rcpt', 553, '553 5.1.3 Bad destination mailbox address syntax', 'invalid'],
    ['rcpt', 550, '550 5.1.6 Mailbox has moved', 'invalid'],
    ['rcpt', 552, '552 5.2.2 Mailbox is full', 'invalid'],
    ['rcpt', 550, '550 5.2.1 Mailbox disabled', 'invalid'],
    ['rcpt', 550, '550 User unknown', 'invalid'],
    ['rcpt', 551, '551 User not local', 'invalid'],
    // X.1.2: the server does not know the destination system: our domain is missing from its configuration.
    ['rcpt', 550, '550 5.1.2 Bad destination system address', 'deferred', true],
    // X.1.7 / X.1.8 are about the sender SES already accepted.
    ['rcpt', 553, '553 5.1.8 <s@x.test>: Sender address rejected: Domain not found', 'deferred', true],
    ['rcpt', 550, '550 5.1.7 Bad sender mailbox syntax', 'deferred', true],
    ['rcpt', 554, '554 5.7.1 <x@unknown.test>: Relay access denied', 'deferred', true],
    ['rcpt', 554, '554 5.3.0 System error', 'deferred', true],
    ['rcpt', 554, '554 Transaction failed', 'deferred', true],
    ['mail', 553, '553 5.7.1 <s@x.test>: Sender address rejected: not owned by user', 'deferred', true],
    ['connect', 554, '554 5.7.1 Service unavailable', 'deferred', true],
    ['data', 554, '554 5.5.1 Error: no valid recipients', 'deferred', true],
    ['content', 550, '550 5.7.1 Message content rejected', 'rejected'],
    ['content', 552, '552 5.3.4 Message size exceeds fixed limit', 'rejected'],
    ['content', 554, '554 5.7.0 Spam', 'rejected'],
    ['content', 451, '451 4.3.0 Error: queue file write error', 'deferred'],
    ['rcpt', 450, '450 4.1.1 unverified address', 'deferred'],
    ['rcpt', 421, '421 4.4.2 Timeout', 'deferred'],
    ['unknown', undefined, 'Connection closed unexpectedly', 'deferred'],
    ['unknown', 600, '600 what', 'deferred'],
  ];
  for (const [stage, code, response, status, fault] of cases) {
    it(`${stage} ${response ?? code} -> ${status}${fault ? ' (deployment fault)' : ''}`, () => {
      const result = classify('x@example.com', {
        stage,
        ...(code !== undefined && { code }),
        ...(response !== undefined && { response }),
      });
      assert.equal(result.status, status);
      assert.equal(result.deploymentFault === true, fault === true);
      assert.equal(result.stage, stage);
      assert.equal(result.code, code);
    });
  }

  it('a 2xx reported as a failure is no delivery', () => {
    const result = classify('x@example.com', { stage: 'rcpt', code: 250, response: '250 ok?', failed: true });
    assert.equal(result.status, 'deferred');
  });

  it('reads the enhanced status only when its class matches the reply code', () => {
    assert.equal(enhancedStatus('550 5.1.1 <x>: unknown'), '5.1.1');
    assert.equal(enhancedStatus('550-5.7.1 first line'), '5.7.1');
    assert.equal(enhancedStatus('250 2.0.0 Ok'), '2.0.0');
    assert.equal(enhancedStatus('550 4.1.1 mismatched class'), undefined);
    assert.equal(enhancedStatus('550 User unknown'), undefined);
    assert.equal(enhancedStatus('550 5.1.1x not a code'), undefined);
    assert.equal(enhancedStatus(undefined), undefined);
  });
});

describe('stageOf: where nodemailer says a failure happened', () => {
  const cases: Array<[string, Parameters<typeof smtpError>[1], SmtpStage]> = [
    ['MAIL FROM reply', { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 553 }, 'mail'],
    ['RCPT TO reply', { code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550 }, 'rcpt'],
    ['DATA command refused', { code: 'EENVELOPE', command: 'DATA', responseCode: 554 }, 'data'],
    ['reply to the content', { code: 'EMESSAGE', command: 'DATA', responseCode: 552 }, 'content'],
    ['EHLO refused', { code: 'ECONNECTION', command: 'EHLO', responseCode: 421 }, 'connect'],
    ['LHLO refused', { code: 'EPROTOCOL', command: 'LHLO', responseCode: 500 }, 'connect'],
    ['greeting refused', { code: 'EPROTOCOL', command: 'CONN', responseCode: 554 }, 'connect'],
    ['connection refused', { code: 'ESOCKET', originalCode: 'ECONNREFUSED', command: 'CONN' }, 'connect'],
    ['host not found', { code: 'ESOCKET', originalCode: 'ENOTFOUND', command: 'CONN' }, 'connect'],
    ['connect timeout', { code: 'ETIMEDOUT', timeoutType: 'CONNECTION_TIMEOUT', command: 'CONN' }, 'connect'],
    ['greeting timeout', { code: 'ETIMEDOUT', timeoutType: 'GREETING_TIMEOUT', command: 'CONN' }, 'connect'],
    ['pool gave up before sending', { code: 'ECONNECTION' }, 'connect'],
    // nodemailer tags these CONN wherever they happen: the content may have been sent.
    ['socket timeout', { code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT', command: 'CONN' }, 'unknown'],
    ['reset mid-session', { code: 'ESOCKET', originalCode: 'ECONNRESET', command: 'CONN' }, 'unknown'],
    ['closed unexpectedly', { code: 'ECONNECTION', command: 'CONN' }, 'unknown'],
    ['nothing known', {}, 'unknown'],
  ];
  for (const [what, fields, stage] of cases) {
    it(`${what} -> ${stage}`, () => {
      assert.equal(stageOf(smtpError(what, fields)), stage);
    });
  }

  it('retries immediately only failures without a reply that came before the content', () => {
    assert.equal(
      isRetryableBeforeData(
        smtpError('x', { code: 'ESOCKET', originalCode: 'ECONNREFUSED', command: 'CONN' }),
      ),
      true,
    );
    assert.equal(
      isRetryableBeforeData(
        smtpError('x', { code: 'ETIMEDOUT', timeoutType: 'GREETING_TIMEOUT', command: 'CONN' }),
      ),
      true,
    );
    assert.equal(
      isRetryableBeforeData(
        smtpError('x', { code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT', command: 'CONN' }),
      ),
      false,
    );
    assert.equal(isRetryableBeforeData(smtpError('x', { code: 'ECONNECTION', command: 'CONN' })), false);
    assert.equal(
      isRetryableBeforeData(smtpError('x', { code: 'EPROTOCOL', command: 'CONN', responseCode: 554 })),
      false,
    );
    assert.equal(
      isRetryableBeforeData(smtpError('x', { code: 'EMESSAGE', command: 'DATA', responseCode: 451 })),
      false,
    );
    for (const value of [undefined, null, 'ECONNECTION', 110])
      assert.equal(isRetryableBeforeData(value), false);
  });
});

describe('outcomesFromInfo', () => {
  it('reports every accepted recipient delivered with the code and text of the final reply', () => {
    const info = {
      accepted: ['bob@example.com', 'carol@example.com'],
      rejected: [],
      response: '250 2.0.0 Ok: queued as 4XyZ1abc',
    };
    assert.deepEqual(
      outcomesFromInfo(['bob@example.com', 'carol@example.com'], info).map((o) => [
        o.status,
        o.code,
        o.response,
      ]),
      [
        ['delivered', 250, '250 2.0.0 Ok: queued as 4XyZ1abc'],
        ['delivered', 250, '250 2.0.0 Ok: queued as 4XyZ1abc'],
      ],
    );
  });

  it('defaults to 250 without a response', () => {
    const [o] = outcomesFromInfo(['bob@example.com'], { accepted: ['bob@example.com'] });
    assert.equal(o?.status, 'delivered');
    assert.equal(o?.code, 250);
  });

  it('matches rejections case-insensitively and reports the recipient as the caller spelled it', () => {
    const info = {
      rejected: ['NoBody@Example.COM'],
      rejectedErrors: [
        {
          recipient: 'NoBody@Example.COM',
          command: 'RCPT TO',
          responseCode: 550,
          response: '550 5.1.1 no such user',
        },
      ],
    };
    const [o] = outcomesFromInfo(['nobody@example.com'], info);
    assert.equal(o?.recipient, 'nobody@example.com');
    assert.equal(o?.status, 'invalid');
  });

  it('defers a rejected recipient that has no reply code', () => {
    const info = { accepted: ['bob@example.com'], rejected: ['Carol@Example.com'], response: '250 ok' };
    assert.deepEqual(
      outcomesFromInfo(['bob@example.com', 'carol@example.com'], info).map((o) => [o.recipient, o.status]),
      [
        ['bob@example.com', 'delivered'],
        ['carol@example.com', 'deferred'],
      ],
    );
  });

  it('defers a "rejection" carrying a 2xx code, which cannot be one', () => {
    const info = {
      rejectedErrors: [{ recipient: 'bob@example.com', responseCode: 250, response: '250 ok?' }],
    };
    assert.equal(outcomesFromInfo(['bob@example.com'], info)[0]?.status, 'deferred');
  });

  it('ignores malformed rejectedErrors entries and keeps the order of the request', () => {
    const info = {
      rejectedErrors: [null, 'bob@example.com', { responseCode: 550 }, { recipient: 7, responseCode: 550 }],
      response: '250 ok',
    };
    assert.equal(outcomesFromInfo(['bob@example.com'], info)[0]?.status, 'delivered');
    assert.deepEqual(outcomesFromInfo([], { response: '250 ok' }), []);
    const outcomes = outcomesFromInfo(['c@example.com', 'a@example.com', 'b@example.com'], {
      rejectedErrors: [
        { recipient: 'a@example.com', command: 'RCPT TO', responseCode: 550, response: '550 5.1.1 no' },
      ],
    });
    assert.deepEqual(
      outcomes.map((o) => [o.recipient, o.status]),
      [
        ['c@example.com', 'delivered'],
        ['a@example.com', 'invalid'],
        ['b@example.com', 'delivered'],
      ],
    );
  });
});

describe('outcomesFromError', () => {
  it('applies a MAIL FROM refusal to every recipient, as a deployment fault', () => {
    const error = smtpError('Mail command failed: 553 5.7.1 Sender address rejected', {
      code: 'EENVELOPE',
      response: '553 5.7.1 <spoof@example.com>: Sender address rejected',
      responseCode: 553,
      command: 'MAIL FROM',
    });
    assert.deepEqual(outcomesFromError(['bob@example.com', 'carol@example.com'], error).map(summary), [
      ['bob@example.com', 'deferred', 'mail', 553, '5.7.1', true],
      ['carol@example.com', 'deferred', 'mail', 553, '5.7.1', true],
    ]);
  });

  it('uses the per-recipient replies of an all-rejected EENVELOPE error', () => {
    const error = smtpError("Can't send mail - all recipients were rejected", {
      code: 'EENVELOPE',
      responseCode: 452,
      command: 'RCPT TO',
    });
    Object.assign(error, {
      rejectedErrors: [
        {
          recipient: 'full@example.com',
          command: 'RCPT TO',
          responseCode: 452,
          response: '452 4.2.2 Mailbox full',
        },
        {
          recipient: 'gone@example.com',
          command: 'RCPT TO',
          responseCode: 550,
          response: '550 5.1.1 User unknown',
        },
      ],
    });
    assert.deepEqual(
      outcomesFromError(['full@example.com', 'gone@example.com'], error).map((o) => [o.recipient, o.status]),
      [
        ['full@example.com', 'deferred'],
        ['gone@example.com', 'invalid'],
      ],
    );
  });

  it('defers every recipient on a connection error and reports its message', () => {
    const error = smtpError('connect ECONNREFUSED 127.0.0.1:25', {
      code: 'ESOCKET',
      originalCode: 'ECONNREFUSED',
      command: 'CONN',
    });
    assert.deepEqual(outcomesFromError(['a@example.com', 'b@example.com'], error), [
      {
        recipient: 'a@example.com',
        status: 'deferred',
        stage: 'connect',
        response: 'connect ECONNREFUSED 127.0.0.1:25',
      },
      {
        recipient: 'b@example.com',
        status: 'deferred',
        stage: 'connect',
        response: 'connect ECONNREFUSED 127.0.0.1:25',
      },
    ]);
  });

  it('ignores a responseCode that is not a number', () => {
    const [o] = outcomesFromError(['a@example.com'], {
      responseCode: '550',
      response: '550 no',
      message: 'x',
    });
    assert.equal(o?.status, 'deferred');
    assert.equal(o?.code, undefined);
  });

  it('defers on errors that are not objects, with their text as the response', () => {
    for (const value of ['socket hang up', undefined, null, 42]) {
      const [o] = outcomesFromError(['a@example.com'], value);
      assert.equal(o?.status, 'deferred');
      assert.equal(o?.response, String(value));
    }
    assert.deepEqual(outcomesFromError([], new Error('boom')), []);
  });
});
