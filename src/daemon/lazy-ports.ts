import type { MailStore } from '../aws/mail-store.ts';
import type { MailSender } from '../aws/ses-sender.ts';

/**
 * Ports whose module (and SDK package) is loaded with their first call instead of when a domain starts: the S3
 * mail store is first needed by the first mail, the SES sender by the first forward or auto-reply out.
 */
export function lazyMailStore(build: () => Promise<MailStore>): MailStore {
  const store = once(build);
  return {
    fetch: async (...args) => (await store()).fetch(...args),
    updateMetadata: async (...args) => (await store()).updateMetadata(...args),
    remove: async (...args) => (await store()).remove(...args),
    metadata: async (...args) => (await store()).metadata(...args),
  };
}

export function lazyMailSender(build: () => Promise<MailSender>): MailSender {
  const sender = once(build);
  return { send: async (...args) => (await sender()).send(...args) };
}

/** Builds on the first call and keeps it; a failed build is tried again by the next call. */
function once<T>(build: () => Promise<T>): () => Promise<T> {
  let built: Promise<T> | undefined;
  return () =>
    (built ??= build().catch((error: unknown) => {
      built = undefined;
      throw error;
    }));
}
