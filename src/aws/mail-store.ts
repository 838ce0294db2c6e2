import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  type S3Client,
  type ServerSideEncryption,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { backoffMs, type Clock } from '../clock.ts';
import { WorkerError, awsError, awsErrorName, isTemporaryAwsError } from '../errors.ts';
import type { MailBudget } from '../flow-control/byte-budget.ts';
import { nextMetadata } from './audit-metadata.ts';

export interface MailLocation {
  bucket: string;
  key: string;
}

/** The S3 side of a mail: fetch the raw bytes SES stored, and keep the audit trail in object metadata. */
export interface FetchOptions {
  maxBytes: number;
  /** Memory budget the mail's bytes are counted against while it is processed. */
  budget?: MailBudget;
  signal?: AbortSignal;
}

/** The object headers a metadata update must restate (CopyObject with REPLACE drops what is not restated). */
export interface ObjectHead {
  Metadata?: Record<string, string>;
  ContentType?: string;
  ContentEncoding?: string;
  ContentDisposition?: string;
  ContentLanguage?: string;
  CacheControl?: string;
  ServerSideEncryption?: ServerSideEncryption;
  SSEKMSKeyId?: string;
  StorageClass?: StorageClass;
}

export interface FetchedMail {
  bytes: Buffer;
  /** Headers of the object as fetched: lets the audit update skip a HeadObject. */
  head?: ObjectHead;
  /** Gives the mail's share of the budget back; call when done with the bytes. */
  free(): void;
}

export interface MailStore {
  fetch(location: MailLocation, options: FetchOptions): Promise<FetchedMail>;
  /**
   * Merges `metadata` into the object's user metadata without changing its bytes or content type. `head` saves a
   * HeadObject when the caller already has the object's headers from fetching it.
   */
  updateMetadata(
    location: MailLocation,
    metadata: Readonly<Record<string, string>>,
    head?: ObjectHead,
  ): Promise<void>;
  /** The object's user metadata now (HeadObject); undefined when the object is gone. */
  metadata(location: MailLocation): Promise<Record<string, string> | undefined>;
  remove(location: MailLocation): Promise<void>;
}

export interface S3MailStoreOptions {
  /** Attempts for an object that is not there yet (SES writes S3 before notifying, but replicas may lag). */
  maxAttempts: number;
  /** Attempts for throttling / 5xx answers. */
  transientAttempts?: number;
  baseDelayMs?: number;
  clock: Clock;
}

const NOT_FOUND = new Set(['NoSuchKey', 'NotFound', 'NoSuchBucket']);

export function createS3MailStore(s3: S3Client, options: S3MailStoreOptions): MailStore {
  const baseDelayMs = options.baseDelayMs ?? 200;
  const transientAttempts = options.transientAttempts ?? 3;

  return {
    async fetch(location, { maxBytes, budget, signal }) {
      let missing = 0;
      let transient = 0;
      let free: (() => void) | undefined;
      try {
        for (;;) {
          try {
            const result = await s3.send(
              new GetObjectCommand({ Bucket: location.bucket, Key: location.key }),
              {
                abortSignal: signal,
              },
            );
            const length = result.ContentLength ?? 0;
            if (length > maxBytes) {
              await result.Body?.transformToWebStream()
                .cancel()
                .catch(() => undefined);
              throw tooLarge(location, length, maxBytes);
            }
            if (budget && !free) {
              free = budget.tryAcquire(length);
              if (!free) {
                // Don't hold an S3 connection open while waiting for memory: wait, then fetch again.
                await result.Body?.transformToWebStream()
                  .cancel()
                  .catch(() => undefined);
                free = await budget.acquire(length, signal);
                continue;
              }
            }
            if (!result.Body) throw new Error('GetObject returned no body');
            const array = await result.Body.transformToByteArray();
            // A view, not a copy: a 40 MB mail must not cost 80 MB here.
            const bytes = Buffer.from(array.buffer, array.byteOffset, array.byteLength);
            if (bytes.length > maxBytes) throw tooLarge(location, bytes.length, maxBytes);
            const held = free;
            free = undefined;
            return { bytes, head: headOf(result), free: held ?? (() => undefined) };
          } catch (error) {
            if (error instanceof WorkerError) throw error;
            if (signal?.aborted) {
              throw new WorkerError('SHUTTING_DOWN', 'stopped before the mail was fetched', {
                temporary: true,
              });
            }
            const name = awsErrorName(error);
            if (name !== undefined && NOT_FOUND.has(name)) {
              missing += 1;
              if (missing >= options.maxAttempts) {
                throw new WorkerError(
                  'S3_OBJECT_MISSING',
                  `s3://${location.bucket}/${location.key} not found after ${missing} attempts`,
                  { temporary: true, awsCode: name, cause: error },
                );
              }
              await options.clock.sleep(backoffMs(missing - 1, baseDelayMs, 5_000), signal);
              continue;
            }
            if (isTemporaryAwsError(error) && ++transient < transientAttempts) {
              await options.clock.sleep(backoffMs(transient - 1, baseDelayMs, 5_000), signal);
              continue;
            }
            throw s3Error(`GetObject s3://${location.bucket}/${location.key}`, error);
          }
        }
      } finally {
        free?.();
      }
    },

    async updateMetadata(location, metadata, known) {
      try {
        const head =
          known ??
          headOf(await s3.send(new HeadObjectCommand({ Bucket: location.bucket, Key: location.key })));
        // REPLACE drops everything not restated, so carry over the content headers SES set.
        await s3.send(
          new CopyObjectCommand({
            Bucket: location.bucket,
            Key: location.key,
            CopySource: `${location.bucket}/${encodeURIComponent(location.key).replaceAll('%2F', '/')}`,
            MetadataDirective: 'REPLACE',
            // Merged with what the object holds (other domains' verdicts, replay_generation), all within 2 KB.
            Metadata: sanitizeMetadata(nextMetadata(head.Metadata, metadata)),
            ...(head.ContentType && { ContentType: head.ContentType }),
            ...(head.ContentEncoding && { ContentEncoding: head.ContentEncoding }),
            ...(head.ContentDisposition && { ContentDisposition: head.ContentDisposition }),
            ...(head.ContentLanguage && { ContentLanguage: head.ContentLanguage }),
            ...(head.CacheControl && { CacheControl: head.CacheControl }),
            ...(head.ServerSideEncryption && { ServerSideEncryption: head.ServerSideEncryption }),
            ...(head.SSEKMSKeyId && { SSEKMSKeyId: head.SSEKMSKeyId }),
            ...(head.StorageClass && { StorageClass: head.StorageClass }),
          }),
        );
      } catch (error) {
        throw s3Error(`metadata update s3://${location.bucket}/${location.key}`, error);
      }
    },

    async metadata(location) {
      try {
        const head = await s3.send(new HeadObjectCommand({ Bucket: location.bucket, Key: location.key }));
        return head.Metadata ?? {};
      } catch (error) {
        const name = awsErrorName(error);
        if (name !== undefined && NOT_FOUND.has(name)) return undefined;
        throw s3Error(`HeadObject s3://${location.bucket}/${location.key}`, error);
      }
    },

    async remove(location) {
      try {
        await s3.send(new DeleteObjectCommand({ Bucket: location.bucket, Key: location.key }));
      } catch (error) {
        throw s3Error(`DeleteObject s3://${location.bucket}/${location.key}`, error);
      }
    },
  };
}

/**
 * S3 user metadata travels as HTTP headers: ASCII only, 2 KB in total. Non-ASCII is percent-encoded and long
 * values (a long invalid_inboxes list) are cut with a marker rather than failing the whole update.
 */
export function sanitizeMetadata(metadata: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  let total = 0;
  for (const [key, value] of Object.entries(metadata)) {
    // `u`: a character outside the BMP is one match, so encodeURIComponent never sees half a surrogate pair.
    let safe = value.replace(/[^\x20-\x7e]/gu, (c) => {
      try {
        return encodeURIComponent(c);
      } catch {
        return '%EF%BF%BD';
      }
    });
    if (safe.length > 512) safe = `${cutOutsideEscape(safe, 500)}...(cut)`;
    // S3 refuses more than 2 KB of user metadata in total; the audit fields come first, so cut the rest.
    if (total + key.length + safe.length > 1900)
      safe = cutOutsideEscape(safe, Math.max(0, 1900 - total - key.length - 6)) + '(cut)';
    total += key.length + safe.length;
    out[key.toLowerCase()] = safe;
  }
  return out;
}

/** Cuts at `length` but never inside a `%XX` escape. */
function cutOutsideEscape(value: string, length: number): string {
  const cut = value.slice(0, length);
  const percent = cut.lastIndexOf('%');
  return percent >= 0 && percent > cut.length - 3 ? cut.slice(0, percent) : cut;
}

function headOf(output: ObjectHead): ObjectHead {
  return {
    ...(output.Metadata && { Metadata: output.Metadata }),
    ...(output.ContentType && { ContentType: output.ContentType }),
    ...(output.ContentEncoding && { ContentEncoding: output.ContentEncoding }),
    ...(output.ContentDisposition && { ContentDisposition: output.ContentDisposition }),
    ...(output.ContentLanguage && { ContentLanguage: output.ContentLanguage }),
    ...(output.CacheControl && { CacheControl: output.CacheControl }),
    ...(output.ServerSideEncryption && { ServerSideEncryption: output.ServerSideEncryption }),
    ...(output.SSEKMSKeyId && { SSEKMSKeyId: output.SSEKMSKeyId }),
    ...(output.StorageClass && { StorageClass: output.StorageClass }),
  };
}

function tooLarge(location: MailLocation, size: number, max: number): WorkerError {
  return new WorkerError(
    'MAIL_TOO_LARGE',
    `s3://${location.bucket}/${location.key} is ${size} bytes, over MAX_MAIL_BYTES=${max}`,
    { temporary: false },
  );
}

function s3Error(operation: string, error: unknown): WorkerError {
  return awsError('S3_ERROR', operation, error);
}
