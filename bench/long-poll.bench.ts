/**
 * CPU per ReceiveMessage: the SDK's `send` against the daemon's own request path (src/aws/sqs-direct.ts), on the
 * daemon's clients (`createAwsClients`), fauxqs in another process so that only the client's CPU is counted
 * (`node --import tsx bench/long-poll.bench.ts`).
 *
 *   --polls N     queues polled side by side, each by one loop (default 1000)
 *   --wait S      WaitTimeSeconds of each poll (default 20: idle domains' long polls; 0: back-to-back requests)
 *   --seconds S   measured time per variant, after a warm-up of one wait plus 10 s (default 60)
 *   --runs R      rounds, the two paths alternating (default 2)
 *   --paths P     which paths, comma-separated (default sdk,lean; one path alone, e.g. to profile it); `aligned` is
 *                 the lean path polling again after an empty receive on the clock's next step, as the daemon's
 *                 pollers do (IDLE_POLL_ALIGN_MS at its default)
 *   --spread S    each loop starts after a random delay up to S seconds, so the polls end out of step, as a day
 *                 of mail leaves them (default 0: all together)
 *   --out FILE    results JSON (default bench/results/<time>-long-poll.json)
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { CreateQueueCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { createAwsClients } from '../src/aws/clients.ts';
import { DEFAULT_AWS_DEADLINES, longPollDeadlineMs } from '../src/aws/deadlines.ts';
import { createSqsQueue } from '../src/aws/queue.ts';
import { sleepUnlessAborted } from '../src/clock.ts';
import { SETTINGS } from '../src/config/settings.ts';
import { TEST_CREDENTIALS, TEST_REGION } from '../test/harness/emulators.ts';
import { writeBenchResults } from './lib/rounds.ts';
import { median, round } from './lib/stats.ts';

type Path = 'sdk' | 'lean' | 'aligned';
const PATHS: readonly Path[] = ['sdk', 'lean', 'aligned'];

interface PollRun {
  path: Path;
  polls: number;
  wait_s: number;
  spread_s: number;
  receives: number;
  cpu_ms_per_receive: number;
  cpu_percent_of_core: number;
}

async function startEmulator(): Promise<{ endpoint: string; stop: () => void }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/lib/fauxqs-process.ts'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  process.once('exit', () => child.kill());
  const [first] = (await once(child.stdout, 'data')) as [Buffer];
  return { endpoint: first.toString('utf8').trim(), stop: () => child.kill() };
}

async function createQueues(endpoint: string, count: number): Promise<string[]> {
  const admin = new SQSClient({ region: TEST_REGION, endpoint, credentials: TEST_CREDENTIALS });
  const urls: string[] = [];
  for (let i = 0; i < count; i += 50) {
    const batch = Array.from({ length: Math.min(50, count - i) }, (_, j) =>
      admin.send(new CreateQueueCommand({ QueueName: `long-poll-${i + j}` })).then((r) => r.QueueUrl ?? ''),
    );
    urls.push(...(await Promise.all(batch)));
  }
  admin.destroy();
  return urls;
}

async function measure(
  endpoint: string,
  urls: string[],
  path: Path,
  { wait, seconds, spread }: { wait: number; seconds: number; spread: number },
) {
  const { sqs, destroy } = createAwsClients(
    {
      region: TEST_REGION,
      endpoints: { sqs: endpoint },
      s3ForcePathStyle: true,
      deadlines: DEFAULT_AWS_DEADLINES,
    },
    { maxSockets: urls.length + 10 },
  );
  // One signal per queue, as each domain's poller has its own: a signal shared by a thousand polls would cost every
  // request a walk of its listeners.
  const stops = urls.map(() => new AbortController());
  let receives = 0;
  const receiveFrom = (url: string, stop: AbortController): (() => Promise<unknown>) => {
    if (path !== 'sdk') {
      const queue = createSqsQueue(sqs, url);
      const receive = () => queue.receive({ maxMessages: 10, waitTimeSeconds: wait, signal: stop.signal });
      if (path === 'lean') return receive;
      const step = Number(SETTINGS.IDLE_POLL_ALIGN_MS.default);
      return async () => {
        if ((await receive()).length === 0) await sleepUnlessAborted(step - (Date.now() % step), stop.signal);
      };
    }
    const command = () =>
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: wait,
        MessageSystemAttributeNames: ['ApproximateReceiveCount', 'ApproximateFirstReceiveTimestamp'],
        MessageAttributeNames: ['uw-replay', 'uw-replay-generation'],
      });
    return () =>
      sqs
        .send(command(), {
          abortSignal: stop.signal,
          requestTimeout: longPollDeadlineMs(wait, DEFAULT_AWS_DEADLINES),
        })
        .catch((error: unknown) => {
          if (!stop.signal.aborted) throw error;
        });
  };
  const loops = urls.map(async (url, index) => {
    const stop = stops[index]!;
    const receive = receiveFrom(url, stop);
    await sleepUnlessAborted(Math.random() * spread * 1000, stop.signal);
    while (!stop.signal.aborted) {
      await receive();
      receives += 1;
    }
  });
  await new Promise((resolve) => setTimeout(resolve, (spread + wait + 10) * 1000));
  const cpuBefore = process.cpuUsage();
  const countBefore = receives;
  const startedAt = Date.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const cpu = process.cpuUsage(cpuBefore);
  const elapsedMs = Date.now() - startedAt;
  const counted = receives - countBefore;
  for (const stop of stops) stop.abort();
  await Promise.all(loops);
  destroy();
  const cpuMs = (cpu.user + cpu.system) / 1000;
  return {
    path,
    polls: urls.length,
    wait_s: wait,
    spread_s: spread,
    receives: counted,
    cpu_ms_per_receive: round(cpuMs / counted, 3),
    cpu_percent_of_core: round((cpuMs / elapsedMs) * 100, 2),
  } satisfies PollRun;
}

async function main(): Promise<void> {
  // The daemon's clients take their credentials from the environment, as in a deployment.
  process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
  const { values } = parseArgs({
    options: {
      polls: { type: 'string', default: '1000' },
      wait: { type: 'string', default: '20' },
      seconds: { type: 'string', default: '60' },
      runs: { type: 'string', default: '2' },
      paths: { type: 'string', default: 'sdk,lean' },
      spread: { type: 'string', default: '0' },
      out: { type: 'string' },
    },
  });
  const [polls, wait, seconds, runs, spread] = [
    values.polls,
    values.wait,
    values.seconds,
    values.runs,
    values.spread,
  ].map(Number) as [number, number, number, number, number];
  const paths = values.paths.split(',').filter((p): p is Path => (PATHS as readonly string[]).includes(p));
  const emulator = await startEmulator();
  const results: PollRun[] = [];
  try {
    const urls = await createQueues(emulator.endpoint, polls);
    for (let run = 1; run <= runs; run++) {
      for (const path of paths) {
        const result = await measure(emulator.endpoint, urls, path, { wait, seconds, spread });
        results.push(result);
        process.stderr.write(`round ${run} ${JSON.stringify(result)}\n`);
      }
    }
  } finally {
    emulator.stop();
  }
  const medianOf = (path: Path) =>
    median(results.filter((r) => r.path === path).map((r) => r.cpu_ms_per_receive));
  await writeBenchResults('long-poll', values.out, {
    polls,
    wait_s: wait,
    spread_s: spread,
    seconds,
    runs: results,
    median_cpu_ms_per_receive: { sdk: medianOf('sdk'), lean: medianOf('lean'), aligned: medianOf('aligned') },
    sdk_over_lean: round(medianOf('sdk') / medianOf('lean'), 2),
  });
}

await main();
