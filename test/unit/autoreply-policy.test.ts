import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { MailAddress, MailView } from '../../src/mail/mail-view.ts';
import {
  autoReplyDecision,
  comparableAddress,
  isSystemAddress,
  isValidAddress,
  type AutoReplyInput,
} from '../../src/mail/autoreply-policy.ts';

const ME = 'alice@example.com';
const BOB: MailAddress = { address: 'bob@example.org', name: 'Bob' };

function view(overrides: Partial<MailView> & { headerList?: [string, string][] } = {}): MailView {
  const { headerList = [], ...rest } = overrides;
  const headers = new Map<string, string[]>();
  for (const [name, value] of headerList) {
    const key = name.toLowerCase();
    headers.set(key, [...(headers.get(key) ?? []), value]);
  }
  return {
    headers,
    messageId: '<orig@example.org>',
    subject: 'Hello',
    from: BOB,
    to: [{ address: ME, name: 'Alice' }],
    cc: [],
    references: [],
    text: 'hi',
    contentType: 'text/plain',
    ...rest,
  };
}

function decide(overrides: Partial<AutoReplyInput> = {}, mail: MailView = view()) {
  return autoReplyDecision({
    view: mail,
    envelopeSender: 'bob@example.org',
    recipient: ME,
    isSesBounce: false,
    hasLoopMarker: false,
    requireAddressed: true,
    ...overrides,
  });
}

function reason(overrides: Partial<AutoReplyInput> = {}, mail: MailView = view()): string {
  const d = decide(overrides, mail);
  return d.reply ? 'reply' : d.reason;
}

describe('autoReplyDecision', () => {
  it('replies to an ordinary personal message, to its envelope sender with the From display name', () => {
    assert.deepEqual(decide(), { reply: true, to: { address: 'bob@example.org', name: 'Bob' } });
  });

  describe('Auto-Submitted', () => {
    for (const value of [
      'auto-generated',
      'auto-replied',
      'Auto-Generated; x=y',
      'auto-notified (comment)',
      '',
    ]) {
      it(`suppresses a message with Auto-Submitted: "${value}"`, () => {
        assert.equal(reason({}, view({ headerList: [['Auto-Submitted', value]] })), 'auto-submitted');
      });
    }

    for (const value of ['no', 'No', ' NO ', 'no (human wrote this)', 'no; reason=x']) {
      it(`replies to a message with Auto-Submitted: "${value}"`, () => {
        assert.equal(reason({}, view({ headerList: [['Auto-Submitted', value]] })), 'reply');
      });
    }

    it('suppresses when any of several Auto-Submitted headers is not "no"', () => {
      const mail = view({
        headerList: [
          ['Auto-Submitted', 'no'],
          ['Auto-Submitted', 'auto-generated'],
        ],
      });
      assert.equal(reason({}, mail), 'auto-submitted');
    });
  });

  describe('Precedence', () => {
    for (const value of ['bulk', 'list', 'junk', 'BULK', ' List ', 'bulk (newsletter)']) {
      it(`suppresses a message with Precedence: "${value}"`, () => {
        assert.equal(reason({}, view({ headerList: [['Precedence', value]] })), 'precedence');
      });
    }

    for (const value of ['first-class', 'normal', 'urgent', 'bulky']) {
      it(`replies to a message with Precedence: "${value}"`, () => {
        assert.equal(reason({}, view({ headerList: [['Precedence', value]] })), 'reply');
      });
    }
  });

  describe('List-* headers', () => {
    for (const name of [
      'List-Id',
      'List-Help',
      'List-Subscribe',
      'List-Unsubscribe',
      'List-Post',
      'List-Owner',
      'List-Archive',
      'List-Unsubscribe-Post',
      'list-x-custom',
    ]) {
      it(`suppresses a message carrying ${name}`, () => {
        assert.equal(reason({}, view({ headerList: [[name, '<x>']] })), 'list-header');
      });
    }

    it('replies when a header merely contains "list" elsewhere in its name', () => {
      const mail = view({
        headerList: [
          ['X-Mailing-Lists', 'none'],
          ['Listing', 'x'],
        ],
      });
      assert.equal(reason({}, mail), 'reply');
    });
  });

  describe('X-Auto-Response-Suppress', () => {
    for (const value of ['All', 'OOF', 'oof', 'DR, OOF', 'NDR,all', ' RN , OOF , AutoReply']) {
      it(`suppresses with X-Auto-Response-Suppress: "${value}"`, () => {
        assert.equal(
          reason({}, view({ headerList: [['X-Auto-Response-Suppress', value]] })),
          'suppress-header',
        );
      });
    }

    for (const value of ['None', 'DR, NDR', 'AutoReply', 'RN, NRN', 'Allow', 'OOFX']) {
      it(`replies with X-Auto-Response-Suppress: "${value}"`, () => {
        assert.equal(reason({}, view({ headerList: [['X-Auto-Response-Suppress', value]] })), 'reply');
      });
    }
  });

  describe('envelope sender', () => {
    for (const sender of ['', '<>', '  ', ' <> ']) {
      it(`suppresses the null sender ${JSON.stringify(sender)}`, () => {
        assert.equal(reason({ envelopeSender: sender }), 'empty-sender');
      });
    }

    it('accepts an envelope sender written with angle brackets', () => {
      assert.equal(reason({ envelopeSender: '<bob@example.org>' }), 'reply');
    });

    for (const sender of [
      'MAILER-DAEMON@example.org',
      'postmaster@example.org',
      'LISTSERV@lists.example.org',
      'majordomo@example.org',
      'devel-request@lists.example.org',
      'owner-devel@lists.example.org',
      'devel-bounces@lists.example.org',
      'devel-bounces+alice=example.com@lists.example.org',
      'noreply@example.org',
      'no-reply@example.org',
      'no_reply@example.org',
      'donotreply@example.org',
      'do-not-reply@example.org',
      'do_not_reply@example.org',
      'NoReply-Billing@example.org',
      'no-reply.accounts@example.org',
      'noreply+123@example.org',
      'bounce@example.org',
      'bounces@example.org',
      'bounce-123-abc@example.org',
      'bounces-xyz@example.org',
    ]) {
      it(`suppresses the system envelope sender ${sender}`, () => {
        assert.equal(reason({ envelopeSender: sender }), 'system-sender');
      });
    }

    for (const sender of [
      'notifications@example.org',
      'product-owner@example.org',
      'noreplyguy@example.org',
      'bouncer@example.org',
      'requester@example.org',
      'owner@example.org',
      'postmaster-assistant@example.org',
      '0100018c-abc@amazonses.com',
    ]) {
      it(`replies to the ordinary envelope sender ${sender}`, () => {
        assert.equal(reason({ envelopeSender: sender }), 'reply');
      });
    }

    it('suppresses a message whose envelope sender is the recipient itself', () => {
      assert.equal(reason({ envelopeSender: 'Alice@Example.COM' }), 'self');
    });

    it('suppresses a message whose envelope sender is the recipient with a +tag', () => {
      assert.equal(reason({ envelopeSender: 'alice+lists@example.com' }), 'self');
    });

    it('suppresses a message whose envelope sender is one of the recipient aliases', () => {
      assert.equal(
        reason({ envelopeSender: 'a.smith@example.com', recipientAliases: ['A.Smith@example.com'] }),
        'self',
      );
    });

    it('replies when the envelope sender only shares the local part with the recipient', () => {
      assert.equal(reason({ envelopeSender: 'alice@example.org' }), 'reply');
    });
  });

  describe('SES bounces and loop marker', () => {
    it('suppresses a message flagged as an SES bounce', () => {
      assert.equal(reason({ isSesBounce: true }), 'ses-bounce');
    });

    it("suppresses a message whose envelope sender is SES's MAILER-DAEMON even without the flag", () => {
      assert.equal(reason({ envelopeSender: 'MAILER-DAEMON@amazonses.com' }), 'ses-bounce');
    });

    it("suppresses a message whose From is SES's MAILER-DAEMON even without the flag", () => {
      const mail = view({
        from: { address: 'mailer-daemon@amazonses.com', name: 'Mail Delivery Subsystem' },
      });
      assert.equal(reason({}, mail), 'ses-bounce');
    });

    it('suppresses a message carrying our loop marker', () => {
      assert.equal(reason({ hasLoopMarker: true }), 'loop-marker');
    });
  });

  describe('addressing', () => {
    it('suppresses a message that names the recipient in neither To nor Cc when requireAddressed is on', () => {
      const mail = view({ to: [{ address: 'team@example.com', name: '' }] });
      assert.equal(reason({}, mail), 'not-addressed');
    });

    it('replies to the same message when requireAddressed is off', () => {
      const mail = view({ to: [{ address: 'team@example.com', name: '' }] });
      assert.equal(reason({ requireAddressed: false }, mail), 'reply');
    });

    it('counts the recipient in Cc as addressed', () => {
      const mail = view({ to: [{ address: 'team@example.com', name: '' }], cc: [{ address: ME, name: '' }] });
      assert.equal(reason({}, mail), 'reply');
    });

    it('counts a +tag form of the recipient in To as addressed', () => {
      const mail = view({ to: [{ address: 'alice+travel@example.com', name: '' }] });
      assert.equal(reason({}, mail), 'reply');
    });

    it('counts an alias in To as addressed, with case and +tag ignored', () => {
      const mail = view({ to: [{ address: 'sales+eu@example.com', name: '' }] });
      assert.equal(reason({ recipientAliases: ['Sales@Example.com'] }, mail), 'reply');
    });

    it('counts a +tag recipient as addressed by its base address', () => {
      assert.equal(reason({ recipient: 'alice+ooo@example.com' }), 'reply');
    });

    it('suppresses a message with empty To and Cc (Bcc only) when requireAddressed is on', () => {
      assert.equal(reason({}, view({ to: [], cc: [] })), 'not-addressed');
    });
  });

  describe('reply target: the envelope sender (RFC 3834 §4, as Pigeonhole vacation)', () => {
    const author: MailAddress = { address: 'author@example.org', name: 'A Author' };
    const secretary: MailAddress = { address: 'secretary@example.org', name: 'A Secretary' };
    const cases: Array<{
      name: string;
      envelope: string;
      mail: Partial<MailView>;
      expected: { address: string; name: string } | string;
    }> = [
      {
        name: 'envelope = From: the From display name',
        envelope: 'author@example.org',
        mail: { from: author, sender: secretary },
        expected: { address: 'author@example.org', name: 'A Author' },
      },
      {
        name: 'envelope = Sender: the Sender display name, not the From address',
        envelope: 'secretary@example.org',
        mail: { from: author, sender: secretary },
        expected: { address: 'secretary@example.org', name: 'A Secretary' },
      },
      {
        name: 'envelope in no header: the bare envelope address',
        envelope: 'other@example.org',
        mail: { from: author, sender: secretary },
        expected: { address: 'other@example.org', name: '' },
      },
      {
        name: 'envelope in SRS form: the forwarder reverses it',
        envelope: 'SRS0=HHH=TT=example.org=author@forwarder.example',
        mail: { from: author },
        expected: { address: 'srs0=hhh=tt=example.org=author@forwarder.example', name: '' },
      },
      {
        name: 'Reply-To present: ignored',
        envelope: 'author@example.org',
        mail: {
          from: author,
          headers: new Map([['reply-to', ['Help <help@example.org>']]]),
        },
        expected: { address: 'author@example.org', name: 'A Author' },
      },
      {
        name: 'envelope a system address while From is a person: no reply',
        envelope: 'bounces+123@lists.example.org',
        mail: { from: author },
        expected: 'system-sender',
      },
      {
        name: 'envelope in another letter case than the From header: same address, its name',
        envelope: 'Author@EXAMPLE.org',
        mail: { from: { address: 'author@example.org', name: 'A Author' } },
        expected: { address: 'author@example.org', name: 'A Author' },
      },
      { name: 'null envelope: no reply', envelope: '<>', mail: { from: author }, expected: 'empty-sender' },
      { name: 'missing envelope: no reply', envelope: '', mail: { from: author }, expected: 'empty-sender' },
      {
        name: 'a quoted local part (not header-safe): no reply',
        envelope: '"a b"@example.org',
        mail: { from: author },
        expected: 'unusable-sender',
      },
      {
        name: 'an unusable envelope the notification carried (CR/LF): no reply',
        envelope: 'evil\r\nRCPT TO:<x@y.test>@example.org',
        mail: { from: author },
        expected: 'unusable-sender',
      },
      {
        name: 'a bare word without a domain: no reply',
        envelope: 'mailer-daemon',
        mail: { from: author },
        expected: 'unusable-sender',
      },
      {
        name: 'a UTF-8 local part (not header-safe): no reply',
        envelope: 'jürgen@example.org',
        mail: { from: author },
        expected: 'unusable-sender',
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const mail = view({ to: [{ address: ME, name: '' }], ...c.mail });
        const d = decide({ envelopeSender: c.envelope }, mail);
        if (typeof c.expected === 'string') assert.deepEqual(d, { reply: false, reason: c.expected });
        else assert.deepEqual(d, { reply: true, to: c.expected });
      });
    }

    it('checks "self" against the envelope sender, not the From address', () => {
      const mail = view({ from: { address: ME, name: 'Me' } });
      assert.equal(reason({ envelopeSender: 'bob@example.org' }, mail), 'reply');
      assert.equal(reason({ envelopeSender: 'alice+x@example.com' }, view()), 'self');
    });

    it('checks the system-sender rule against the envelope sender, not Reply-To or From', () => {
      const mail = view({
        from: { address: 'no-reply@example.org', name: '' },
        headers: new Map([['reply-to', ['no-reply@example.org']]]),
      });
      assert.equal(reason({ envelopeSender: 'person@example.org' }, mail), 'reply');
    });
  });

  describe('authenticated target (requireAuthenticated): SES vouched for the reply address', () => {
    const HOSTED = ['example.com'];
    const statuses = ['PASS', 'FAIL', 'GRAY', 'PROCESSING_FAILED'] as const;
    const decideWith = (
      verdicts: { spf: string; dkim: string; dmarc: string },
      envelope: string,
      from: string,
    ) =>
      reason(
        {
          envelopeSender: envelope,
          requireAuthenticated: { verdicts, hostedDomains: HOSTED },
        },
        view({ from: { address: from, name: '' } }),
      );

    // Every combination of SES's three verdicts, with the From domain equal to the envelope's and not: a reply
    // only for SPF PASS (the envelope domain is the reply's) or DMARC PASS with the From domain the reply's.
    for (const spf of statuses)
      for (const dkim of statuses)
        for (const dmarc of statuses)
          for (const sameDomain of [true, false]) {
            const from = sameDomain ? 'person@example.org' : 'ceo@victim.example';
            const expected =
              spf === 'PASS' || (dmarc === 'PASS' && sameDomain) ? 'reply' : 'unauthenticated-sender';
            it(`SPF ${spf}, DKIM ${dkim}, DMARC ${dmarc}, From ${sameDomain ? 'in' : 'outside'} the envelope domain: ${expected}`, () => {
              assert.equal(decideWith({ spf, dkim, dmarc }, 'person@example.org', from), expected);
            });
          }

    it('the reflector of the issue: DKIM PASS, SPF FAIL, DMARC GRAY, From another domain — no reply', () => {
      const verdicts = { spf: 'FAIL', dkim: 'PASS', dmarc: 'GRAY' };
      assert.equal(
        decideWith(verdicts, 'ceo@victim.example', 'ceo@victim.example'),
        'unauthenticated-sender',
      );
      assert.equal(
        decideWith(verdicts, 'x@attacker.example', 'ceo@victim.example'),
        'unauthenticated-sender',
      );
    });

    const legitimate: Array<[string, { spf: string; dkim: string; dmarc: string }, string, string]> = [
      ['a Gmail user', { spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' }, 'pat@gmail.com', 'pat@gmail.com'],
      [
        'a Microsoft 365 tenant with its own domain',
        { spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' },
        'pat@contoso.example',
        'pat@contoso.example',
      ],
      [
        'a domain without DMARC record (GRAY) but with SPF',
        { spf: 'PASS', dkim: 'GRAY', dmarc: 'GRAY' },
        'pat@small.example',
        'pat@small.example',
      ],
      [
        'a forwarder rewriting the envelope (SRS): SPF PASS for the forwarder',
        { spf: 'PASS', dkim: 'PASS', dmarc: 'FAIL' },
        'SRS0=abc=TT=small.example=pat@forwarder.example',
        'pat@small.example',
      ],
      [
        'a sender whose SPF is soft-failing but DMARC passes through DKIM alignment',
        { spf: 'FAIL', dkim: 'PASS', dmarc: 'PASS' },
        'pat@aligned.example',
        'pat@aligned.example',
      ],
    ];
    for (const [name, verdicts, envelope, from] of legitimate) {
      it(`replies to ${name}`, () => {
        assert.equal(decideWith(verdicts, envelope, from), 'reply');
      });
    }

    it('needs no verdict for a reply inside the hosted domains (it goes through our own mail server)', () => {
      const verdicts = { spf: 'FAIL', dkim: 'FAIL', dmarc: 'FAIL' };
      assert.equal(decideWith(verdicts, 'colleague@example.com', 'colleague@example.com'), 'reply');
    });

    it('does not count a DMARC PASS for the From domain when the reply goes to another domain', () => {
      const verdicts = { spf: 'FAIL', dkim: 'PASS', dmarc: 'PASS' };
      assert.equal(
        decideWith(verdicts, 'ret-4711@esp.example', 'pat@brand.example'),
        'unauthenticated-sender',
      );
    });
  });

  describe('order of reasons', () => {
    const everything = view({
      to: [{ address: 'team@example.com', name: '' }],
      from: undefined,
      headerList: [
        ['Auto-Submitted', 'auto-generated'],
        ['X-Auto-Response-Suppress', 'All'],
        ['Precedence', 'bulk'],
        ['List-Id', '<devel.example.org>'],
      ],
    });
    const all: Partial<AutoReplyInput> = { hasLoopMarker: true, isSesBounce: true, envelopeSender: '' };

    it('reports loop-marker first when every rule fires', () => {
      assert.equal(reason(all, everything), 'loop-marker');
    });

    it('reports ses-bounce before empty-sender and header rules', () => {
      assert.equal(reason({ ...all, hasLoopMarker: false }, everything), 'ses-bounce');
    });

    it('reports empty-sender before header rules', () => {
      assert.equal(reason({ envelopeSender: '<>' }, everything), 'empty-sender');
    });

    it('walks auto-submitted, suppress-header, precedence, list-header in that order', () => {
      const names = ['auto-submitted', 'x-auto-response-suppress', 'precedence', 'list-id'];
      const expected = ['auto-submitted', 'suppress-header', 'precedence', 'list-header'];
      for (let i = 0; i < names.length; i++) {
        const headers = new Map([...everything.headers].filter(([k]) => names.indexOf(k) >= i));
        assert.equal(reason({}, { ...everything, headers }), expected[i]);
      }
    });

    it('reports system-sender before self and not-addressed', () => {
      const mail = view({ to: [] });
      assert.equal(
        reason({ envelopeSender: 'postmaster@example.com', recipient: 'postmaster@example.com' }, mail),
        'system-sender',
      );
    });

    it('reports self (envelope) before not-addressed', () => {
      assert.equal(reason({ envelopeSender: ME }, view({ to: [] })), 'self');
    });

    it('reports unusable-sender before header rules', () => {
      assert.equal(reason({ envelopeSender: '"q"@example.org' }, everything), 'unusable-sender');
    });

    it('reports not-addressed before unauthenticated-sender', () => {
      const unauthenticated = {
        requireAuthenticated: { verdicts: { spf: 'FAIL', dmarc: 'FAIL' }, hostedDomains: ['example.com'] },
      };
      assert.equal(reason(unauthenticated, view({ to: [] })), 'not-addressed');
      assert.equal(reason(unauthenticated, view()), 'unauthenticated-sender');
    });
  });
});

describe('address helpers', () => {
  it('compares addresses lower-cased with the +tag dropped', () => {
    assert.equal(comparableAddress(' <Alice+Tag@Example.COM> '), 'alice@example.com');
    assert.equal(comparableAddress('+only@example.com'), '+only@example.com');
  });

  it('treats a bare MAILER-DAEMON without a domain as a system address', () => {
    assert.equal(isSystemAddress('MAILER-DAEMON'), true);
    assert.equal(isSystemAddress(''), false);
  });

  it('accepts IDN domains and rejects addresses over 254 octets', () => {
    const label = 'c'.repeat(61);
    assert.equal(isValidAddress('user@bücher.example'), true);
    assert.equal(isValidAddress(`${'a'.repeat(64)}@${label}.${label}.${label}.com`), true);
    assert.equal(isValidAddress(`${'a'.repeat(64)}@${label}.${label}.${label}c.com`), false);
  });

  it('rejects a local part over 64 octets and a domain label over 63 octets', () => {
    assert.equal(isValidAddress(`${'a'.repeat(65)}@example.com`), false);
    assert.equal(isValidAddress(`a@${'b'.repeat(64)}.com`), false);
    assert.equal(isValidAddress(`a@${'b'.repeat(63)}.com`), true);
  });
});
