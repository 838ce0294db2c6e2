/**
 * Starting the consumers under test as child processes: the built daemon (dist/unified-worker.js, shipped defaults
 * unless a variant overrides a setting) and the yardsticks of bench/consumers/io-floor.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { spawnDaemon, type DaemonProcess } from '../../test/harness/daemon-process.ts';
import type { FloorConfig } from '../consumers/io-floor.ts';

export type ConsumerKind = 'daemon' | 'io-floor' | 'one-at-a-time';

export interface RunningConsumer {
  readonly pid: number;
  /** Epoch ms when the process was spawned. */
  readonly startedAt: number;
  /** SIGKILL: the measurement is over, nothing needs draining. */
  kill(): Promise<void>;
  /** The daemon's JSON log lines (empty for the yardsticks). */
  logs(): ReadonlyArray<Record<string, unknown>>;
  /** The daemon's /metrics text ('' for the yardsticks). */
  metrics(): Promise<string>;
  describe(): string;
}

export interface Endpoints {
  sqs: string;
  s3: string;
  dynamodb: string;
  ses: string;
}

export interface ConsumerInput {
  kind: ConsumerKind;
  domains: string[];
  queueUrls: string[];
  endpoints: Endpoints;
  /** The emulators' region, credentials and table names (TestStack.env), minus the endpoints. */
  baseEnv: Record<string, string>;
  smtpPort: number;
  /** Daemon settings of the variant. */
  env?: Record<string, string>;
  /** Write a V8 CPU profile of every thread into this directory (the daemon then stops with SIGTERM, not -9). */
  cpuProfileDir?: string;
  /** Another build of the daemon (its `dist/unified-worker.js`), e.g. the commit before a change. */
  entry?: string;
}

const FLOOR_SCRIPT = fileURLToPath(new URL('../consumers/io-floor.ts', import.meta.url));

export async function startConsumer(input: ConsumerInput): Promise<RunningConsumer> {
  const startedAt = Date.now();
  if (input.kind === 'daemon')
    return wrapDaemon(await spawnBenchDaemon(input), startedAt, input.cpuProfileDir !== undefined);
  const config: FloorConfig = {
    queueUrls: input.queueUrls,
    region: input.baseEnv.AWS_REGION ?? 'us-east-1',
    endpoints: { sqs: input.endpoints.sqs, s3: input.endpoints.s3 },
    smtpPort: input.smtpPort,
    loops: input.kind === 'io-floor' ? 4 : 1,
    sequential: input.kind === 'one-at-a-time',
  };
  const env: NodeJS.ProcessEnv = { ...process.env, ...input.baseEnv };
  delete env.NODE_OPTIONS;
  delete env.NODE_TEST_CONTEXT;
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', FLOOR_SCRIPT, JSON.stringify(config)],
    {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid ?? -1,
    startedAt,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    describe: () => `${input.kind} pid ${child.pid ?? '?'}: ${stderr}`,
    logs: () => [],
    metrics: async () => '',
  };
}

function spawnBenchDaemon(input: ConsumerInput): Promise<DaemonProcess> {
  return spawnDaemon({
    domains: input.domains,
    startTimeoutMs: 60_000,
    ...(input.entry !== undefined && { entry: input.entry }),
    ...(input.cpuProfileDir !== undefined && {
      execArgv: ['--cpu-prof', `--cpu-prof-dir=${input.cpuProfileDir}`],
    }),
    env: {
      ...input.baseEnv,
      AWS_ENDPOINT_URL_SQS: input.endpoints.sqs,
      AWS_ENDPOINT_URL_S3: input.endpoints.s3,
      AWS_ENDPOINT_URL_DYNAMODB: input.endpoints.dynamodb,
      AWS_ENDPOINT_URL_SES: input.endpoints.ses,
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(input.smtpPort),
      INTERNAL_SMTP_PORT: String(input.smtpPort),
      // The shipped default; the test harness shortens it, a benchmark must not.
      WAIT_TIME_SECONDS: '20',
      LOG_LEVEL: 'info',
      ...input.env,
    },
  });
}

function wrapDaemon(daemon: DaemonProcess, startedAt: number, profiling: boolean): RunningConsumer {
  return {
    pid: daemon.pid,
    startedAt,
    kill: async () => {
      // A profile is written at exit, which SIGKILL never reaches.
      if (profiling) {
        daemon.kill('SIGTERM');
        await daemon.exited;
      }
      await daemon.stop();
    },
    describe: () => daemon.describe(10),
    logs: () => daemon.logs,
    metrics: () => daemon.metrics(),
  };
}
