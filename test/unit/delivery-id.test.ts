import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { effectName, legacyKey, messageKey } from '../../src/aws/effect-ledger.ts';
import { replayOf } from '../../src/aws/queue.ts';
import { DELIVERY_ID_HEADER, deliveryId, withDeliveryId } from '../../src/pipeline/delivery-id.ts';

const SES_ID = 'o3hqbsf1t7lp6l8uj6ppb2ag5jt8dhb1v8ba4u01';

describe('deliveryId', () => {
  it('is the same on every retry of the same effect', () => {
    const effects = [
      { kind: 'deliver' as const },
      { kind: 'forward' as const, recipient: 'bob@example.com', target: 'carol@another.com' },
      { kind: 'autoreply' as const, recipient: 'bob@example.com' },
    ];
    for (const effect of effects) {
      assert.equal(deliveryId(SES_ID, 0, effect), deliveryId(SES_ID, 0, { ...effect }));
      assert.match(deliveryId(SES_ID, 0, effect), new RegExp(`^${effect.kind}\\.[0-9a-f]{32}$`));
    }
    // Addresses are compared as the ledger compares them.
    assert.equal(
      deliveryId(SES_ID, 0, { kind: 'forward', recipient: 'Bob@Example.com', target: 'CAROL@another.com' }),
      deliveryId(SES_ID, 0, { kind: 'forward', recipient: 'bob@example.com', target: 'carol@another.com' }),
    );
  });

  it('differs for every other mail, effect, forwarding recipient, target and replay generation', () => {
    const ids = [
      deliveryId(SES_ID, 0, { kind: 'deliver' }),
      deliveryId(`${SES_ID}x`, 0, { kind: 'deliver' }),
      deliveryId(SES_ID, 1, { kind: 'deliver' }),
      deliveryId(SES_ID, 2, { kind: 'deliver' }),
      deliveryId(SES_ID, 0, { kind: 'forward', recipient: 'bob@example.com', target: 'carol@another.com' }),
      deliveryId(SES_ID, 0, { kind: 'forward', recipient: 'alice@example.com', target: 'carol@another.com' }),
      deliveryId(SES_ID, 0, { kind: 'forward', recipient: 'bob@example.com', target: 'dave@another.com' }),
      deliveryId(SES_ID, 1, { kind: 'forward', recipient: 'bob@example.com', target: 'carol@another.com' }),
      deliveryId(SES_ID, 0, { kind: 'autoreply', recipient: 'bob@example.com' }),
      deliveryId(SES_ID, 0, { kind: 'autoreply', recipient: 'alice@example.com' }),
    ];
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('deliveryId keyed with the deployment secret', () => {
  const effect = { kind: 'deliver' as const };

  it('is stable for one secret, differs from the unkeyed id and between secrets', () => {
    const keyed = deliveryId(SES_ID, 0, effect, 'secret-a');
    assert.match(keyed, /^deliver\.[0-9a-f]{32}$/);
    assert.equal(deliveryId(SES_ID, 0, effect, 'secret-a'), keyed, 'every retry carries the same id');
    assert.notEqual(keyed, deliveryId(SES_ID, 0, effect), 'not what anyone can compute from the SES id');
    assert.notEqual(keyed, deliveryId(SES_ID, 0, effect, 'secret-b'));
  });

  it('still tells every effect of a mail apart', () => {
    const ids = [
      deliveryId(SES_ID, 0, effect, 'k'),
      deliveryId(SES_ID, 1, effect, 'k'),
      deliveryId(SES_ID, 0, { kind: 'autoreply', recipient: 'bob@example.com' }, 'k'),
      deliveryId(SES_ID, 0, { kind: 'forward', recipient: 'bob@example.com', target: 'c@x.test' }, 'k'),
    ];
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('withDeliveryId', () => {
  const mail = Buffer.from('From: a@b.test\r\nSubject: x\r\n\r\nbody\r\n');

  it('puts the id first and the mail unchanged after it (and after extra fields)', () => {
    const id = deliveryId(SES_ID, 0, { kind: 'deliver' });
    const out = withDeliveryId(mail, id);
    assert.equal(out.toString('latin1'), `${DELIVERY_ID_HEADER}: ${id}\r\n${mail.toString('latin1')}`);
    const fields = Buffer.from('X-SES-Spam-Verdict: PASS\r\n');
    const both = withDeliveryId(mail, id, fields);
    assert.equal(
      both.toString('latin1'),
      `${DELIVERY_ID_HEADER}: ${id}\r\nX-SES-Spam-Verdict: PASS\r\n${mail}`,
    );
    assert.ok(both.subarray(both.length - mail.length).equals(mail));
  });

  it('keeps the line ending of the mail, and does not let a leading folded line join our field', () => {
    assert.match(
      withDeliveryId(Buffer.from('From: a@b.test\n\nx\n'), 'deliver.0').toString(),
      /^[^\r]+\nFrom:/,
    );
    const folded = Buffer.from(' continued\r\nFrom: a@b.test\r\n\r\nx\r\n');
    assert.equal(
      withDeliveryId(folded, 'deliver.0').toString('latin1'),
      `${DELIVERY_ID_HEADER}: deliver.0\r\n\r\n${folded.toString('latin1')}`,
    );
  });
});

describe('ledger keys', () => {
  it("a message's record is the SES id and the domain; a forced replay generation gets a record of its own", () => {
    assert.equal(messageKey(SES_ID, 'Example.com'), `${SES_ID}|example.com`);
    assert.equal(messageKey(SES_ID, 'example.com', 0), `${SES_ID}|example.com`);
    assert.equal(messageKey(SES_ID, 'example.com', 3), `${SES_ID}#3|example.com`);
  });

  it('an effect is named by the recipient and the action, and its first-shape key is the message id before that', () => {
    const name = effectName('Bob@Example.com', 'forward:c@x.test');
    assert.equal(name, 'bob@example.com|forward:c@x.test');
    assert.equal(legacyKey(SES_ID, name), `${SES_ID}|bob@example.com|forward:c@x.test`);
    assert.equal(legacyKey(SES_ID, name, 3), `${SES_ID}#3|bob@example.com|forward:c@x.test`);
    assert.notEqual(messageKey(SES_ID, 'x.test'), legacyKey(SES_ID, effectName('a@x.test', 'deliver')));
  });
});

describe('replayOf: the replay contract with the CLI', () => {
  const attr = (value: string, type = 'String') => ({ DataType: type, StringValue: value });

  it('is undefined for a notification SES sent', () => {
    assert.equal(replayOf({}), undefined);
    assert.equal(replayOf({ MessageAttributes: { other: attr('x') } }), undefined);
    assert.equal(replayOf({ MessageAttributes: { 'uw-replay': attr('false') } }), undefined);
  });

  it('uw-replay=true alone is generation 0; with --force, uw-replay-generation N', () => {
    assert.deepEqual(replayOf({ MessageAttributes: { 'uw-replay': attr('true') } }), { generation: 0 });
    assert.deepEqual(
      replayOf({
        MessageAttributes: { 'uw-replay': attr('true'), 'uw-replay-generation': attr('2', 'Number') },
      }),
      { generation: 2 },
    );
  });

  it('a generation that is not an integer >= 1 replays as generation 0 and says what it got', () => {
    for (const bad of ['0', '-1', '1.5', 'abc', '', '99999999999999999999']) {
      assert.deepEqual(
        replayOf({
          MessageAttributes: { 'uw-replay': attr('true'), 'uw-replay-generation': attr(bad, 'Number') },
        }),
        { generation: 0, invalidGeneration: bad },
        bad,
      );
    }
  });
});
