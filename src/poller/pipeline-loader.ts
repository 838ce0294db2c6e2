import type { processMessage as ProcessMessage } from '../pipeline/process-message.ts';

type Pipeline = typeof import('../pipeline/process-message.ts');

let loading: Promise<Pipeline> | undefined;

/**
 * The per-message pipeline, loaded with a thread's first message rather than when it starts: parsing, mailparser,
 * nodemailer's composer and the rest are most of what a thread loads, and an idle domain never needs them
 * (BENCHMARKS.md, "Many domains": what each piece costs).
 */
export const processMessage: typeof ProcessMessage = async (...args) => {
  loading ??= import('../pipeline/process-message.ts').catch((error: unknown) => {
    loading = undefined;
    throw error;
  });
  return (await loading).processMessage(...args);
};
