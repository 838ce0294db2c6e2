/**
 * The S3 audit trail against fauxqs: a new verdict replaces the previous one whole, other metadata stays, and the
 * object's bytes and content type never change.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { createS3MailStore, type MailStore } from '../../src/aws/mail-store.ts';
import { systemClock } from '../../src/clock.ts';
import { startStack, type TestStack } from '../harness/emulators.ts';

const BUCKET = 'audit-test-emails';

describe('S3 audit metadata', () => {
  let stack: TestStack;
  let store: MailStore;
  before(async () => {
    stack = await startStack();
    await stack.s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    store = createS3MailStore(stack.s3, { maxAttempts: 1, clock: systemClock });
  });
  after(() => stack.stop());

  async function putWith(key: string, metadata: Record<string, string>): Promise<void> {
    await stack.s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: key,
        Body: 'Subject: x\r\n\r\nbody\r\n',
        ContentType: 'message/rfc822',
        Metadata: metadata,
      }),
    );
  }
  const metadataOf = async (key: string) =>
    (await stack.s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }))).Metadata ?? {};

  it('replaces an earlier verdict whole: a replay that delivered keeps no invalid_inboxes of the first try', async () => {
    await putWith('replayed', {
      processed: 'true',
      status: 'invalid',
      invalid_inboxes: 'nobody@example.com',
      failure_reason: 'old',
      replay_generation: '2',
      'x-ses-note': 'kept',
    });
    await store.updateMetadata(
      { bucket: BUCKET, key: 'replayed' },
      { processed: 'true', status: 'delivered' },
    );
    assert.deepEqual(await metadataOf('replayed'), {
      processed: 'true',
      status: 'delivered',
      replay_generation: '2',
      'x-ses-note': 'kept',
    });
    const object = await stack.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'replayed' }));
    assert.equal(object.ContentType, 'message/rfc822');
    assert.equal(await object.Body?.transformToString(), 'Subject: x\r\n\r\nbody\r\n');
  });

  it('merges an update that is no verdict (the replay generation) into the existing verdict', async () => {
    await putWith('counted', { processed: 'true', status: 'invalid', invalid_inboxes: 'nobody@example.com' });
    await store.updateMetadata({ bucket: BUCKET, key: 'counted' }, { replay_generation: '1' });
    assert.deepEqual(await metadataOf('counted'), {
      processed: 'true',
      status: 'invalid',
      invalid_inboxes: 'nobody@example.com',
      replay_generation: '1',
    });
  });
});
