/**
 * A queue the daemon consumes (a domain's, or the outbound events queue): it exists, its visibility timeout
 * leaves the heartbeat room, and its redrive policy sends to an existing dead-letter queue at MAX_RECEIVES.
 */
import {
  findQueue,
  queueFacts,
  queueNameFromArn,
  type DomainQueueNames,
  type QueueFacts,
} from '../queues.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import { awsFailure, call, type DoctorContext } from './context.ts';

/** Below this the heartbeat (every third of the timeout) has seconds, not minutes, to land. */
const MIN_VISIBILITY_SECONDS = 10;
/** Above this a mail whose worker crashed waits that long before another worker may take it. */
const MAX_SENSIBLE_VISIBILITY_SECONDS = 900;

export interface QueueFindings {
  results: CheckResult[];
  /** Known when the queue exists and its attributes could be read. */
  facts?: QueueFacts;
}

export interface QueueAdvice {
  /** What a missing queue means, and its fix. */
  missingWhy: string;
  missingFix: string;
  /** The setup command that creates the queue and its redrive policy. */
  setupFix: string;
}

export async function queueChecks(
  context: DoctorContext,
  names: DomainQueueNames,
  advice: QueueAdvice,
): Promise<QueueFindings> {
  const { sqs } = context.clients;
  const check = `queue ${names.queue}`;
  const failed = (operation: string, permission: string, error: unknown): QueueFindings => ({
    results: [awsFailure(context, { check, service: 'SQS', operation, permission, error })],
  });
  let url: string | undefined;
  try {
    url = await call(context, `SQS GetQueueUrl ${names.queue}`, (signal) =>
      findQueue(sqs, names.queue, signal),
    );
  } catch (error) {
    return failed('GetQueueUrl', 'sqs:GetQueueUrl', error);
  }
  if (url === undefined)
    return { results: [fail(check, `does not exist: ${advice.missingWhy}`, advice.missingFix)] };
  const queueUrl = url;
  let facts: QueueFacts;
  try {
    facts = await call(context, `SQS GetQueueAttributes ${names.queue}`, (signal) =>
      queueFacts(sqs, queueUrl, signal),
    );
  } catch (error) {
    return failed('GetQueueAttributes', 'sqs:GetQueueAttributes', error);
  }
  const redrive = await redriveCheck(context, names.queue, facts, advice.setupFix);
  return { results: [visibilityCheck(check, facts.visibilityTimeoutSeconds), redrive], facts };
}

function visibilityCheck(check: string, seconds: number): CheckResult {
  const beat = Math.max(1, Math.floor(seconds / 3));
  if (seconds < MIN_VISIBILITY_SECONDS) {
    return fail(
      check,
      `visibility timeout ${seconds} s: the heartbeat (every ${beat} s) has too little margin, a slow call and a second worker gets the mail`,
      "set the queue's VisibilityTimeout to 30 s (SetQueueAttributes)",
    );
  }
  const detail = `exists, visibility timeout ${seconds} s (heartbeat every ${beat} s)`;
  if (seconds > MAX_SENSIBLE_VISIBILITY_SECONDS) {
    return warn(
      check,
      `${detail}: after a crash, mail waits ${Math.round(seconds / 60)} min before another worker takes it`,
      'a visibility timeout of 30 s is enough: the heartbeat extends it while a mail is worked on',
    );
  }
  return ok(check, detail);
}

async function redriveCheck(
  context: DoctorContext,
  queue: string,
  facts: QueueFacts,
  setupFix: string,
): Promise<CheckResult> {
  const check = `redrive ${queue}`;
  const maxReceives = context.config.poll.maxReceives;
  const redrive = facts.redrive;
  if (!redrive) {
    return fail(
      check,
      'no redrive policy: a malformed or always-failing message circulates until its retention ends',
      `${setupFix} (adds a dead-letter queue and the policy)`,
    );
  }
  const dlq = queueNameFromArn(redrive.deadLetterTargetArn);
  let dlqUrl: string | undefined;
  try {
    dlqUrl = await call(context, `SQS GetQueueUrl ${dlq}`, (signal) =>
      findQueue(context.clients.sqs, dlq, signal),
    );
  } catch (error) {
    return awsFailure(context, {
      check,
      service: 'SQS',
      operation: 'GetQueueUrl',
      permission: 'sqs:GetQueueUrl',
      error,
    });
  }
  if (dlqUrl === undefined) {
    return fail(
      check,
      `the redrive policy names ${dlq}, which does not exist: failing mail has nowhere to go`,
      `create the queue ${dlq}, or point the redrive policy at an existing dead-letter queue`,
    );
  }
  if (redrive.maxReceiveCount !== maxReceives) {
    return fail(
      check,
      `maxReceiveCount is ${String(redrive.maxReceiveCount)} but MAX_RECEIVES is ${maxReceives}: the worker marks mail failed at a different count than SQS moves it`,
      `set MAX_RECEIVES=${String(redrive.maxReceiveCount)}, or the policy's maxReceiveCount to ${maxReceives}`,
    );
  }
  return ok(check, `to ${dlq} after ${maxReceives} receives (= MAX_RECEIVES)`);
}
