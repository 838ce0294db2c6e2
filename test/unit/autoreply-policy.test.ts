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
    replyTo: [],
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
  it('replies to an ordinary personal message, to its From address', () => {
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
      'mailer-daemon',
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

  describe('reply target', () => {
    it('prefers the first Reply-To address over From', () => {
      const mail = view({
        replyTo: [
          { address: 'help@example.org', name: 'Help' },
          { address: 'other@example.org', name: '' },
        ],
      });
      assert.deepEqual(decide({}, mail), { reply: true, to: { address: 'help@example.org', name: 'Help' } });
    });

    it('skips an empty Reply-To entry and takes the next one', () => {
      const mail = view({
        replyTo: [
          { address: '', name: 'undisclosed' },
          { address: 'help@example.org', name: '' },
        ],
      });
      assert.deepEqual(decide({}, mail), { reply: true, to: { address: 'help@example.org', name: '' } });
    });

    it('does not fall back to From when Reply-To is present but holds no usable address', () => {
      const mail = view({ replyTo: [{ address: '', name: 'broken' }] });
      assert.equal(reason({}, mail), 'no-reply-address');
    });

    it('reports no-reply-address when there is neither Reply-To nor From', () => {
      assert.equal(reason({}, view({ from: undefined })), 'no-reply-address');
    });

    it('reports no-reply-address for an empty From address', () => {
      assert.equal(reason({}, view({ from: { address: '', name: 'Nobody' } })), 'no-reply-address');
    });

    for (const address of [
      'bob',
      'bob@localhost',
      'bob@@example.org',
      'bob@example.org\r\nBcc: victim@example.net',
      'bob smith@example.org',
      '"bob"@example.org',
      'bob@example.org, eve@example.net',
      '<bob@example.org>',
      'bob@-example.org',
      '.bob@example.org',
    ]) {
      it(`reports no-reply-address for the invalid From ${JSON.stringify(address)}`, () => {
        assert.equal(reason({}, view({ from: { address, name: '' } })), 'no-reply-address');
      });
    }

    it('lower-cases and trims the reply target address', () => {
      const mail = view({ from: { address: ' Bob@Example.ORG ', name: 'Bob' } });
      assert.deepEqual(decide({}, mail), { reply: true, to: { address: 'bob@example.org', name: 'Bob' } });
    });

    it('suppresses when the Reply-To target is a system address although the envelope sender is not', () => {
      const mail = view({ replyTo: [{ address: 'no-reply@example.org', name: '' }] });
      assert.equal(reason({}, mail), 'system-sender');
    });

    it('suppresses when the From target is the recipient (+tag ignored) although the envelope sender is not', () => {
      const mail = view({ from: { address: 'alice+x@example.com', name: 'Me' } });
      assert.equal(reason({}, mail), 'self');
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

    it('reports not-addressed before no-reply-address', () => {
      assert.equal(reason({}, view({ to: [], from: undefined })), 'not-addressed');
    });

    it('reports no-reply-address before any check on the reply target', () => {
      assert.equal(reason({}, view({ replyTo: [{ address: 'bogus', name: '' }] })), 'no-reply-address');
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
