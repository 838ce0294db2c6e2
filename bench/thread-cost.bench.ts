/**
 * What each piece of a poller thread costs (`node --import tsx bench/thread-cost.bench.ts`, after `npm run build`):
 * 20 worker threads that each load one set of packages, per thread: the RSS growth of the process once loaded and
 * after settling (V8 flushes unused bytecode and shrinks heaps over a minute or two), and the CPU spent loading.
 * Each set runs in a process of its own, all at once (RSS and CPU are per process; only wall time is shared).
 *
 *   --threads N (20)  --settle S (120)  --young MB (unset: V8's default young generation)  --out FILE
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (file: string) => pathToFileURL(join(ROOT, 'dist', file)).href;

/** Each row: what a thread loads (and, for the clients, builds). */
const SETS: Record<string, { modules: string[]; build?: 'sqs' | 'clients' }> = {
  'empty thread': { modules: [] },
  pino: { modules: ['pino'] },
  'prom-client': { modules: ['prom-client'] },
  '@aws-sdk/client-sqs + an SQSClient': { modules: ['@aws-sdk/client-sqs'], build: 'sqs' },
  '@aws-sdk/client-dynamodb + lib-dynamodb': {
    modules: ['@aws-sdk/client-dynamodb', '@aws-sdk/lib-dynamodb'],
  },
  '@aws-sdk/client-s3': { modules: ['@aws-sdk/client-s3'] },
  '@aws-sdk/client-sesv2': { modules: ['@aws-sdk/client-sesv2'] },
  mailparser: { modules: ['mailparser'] },
  'nodemailer (MailComposer)': { modules: ['nodemailer/lib/mail-composer/index.js'] },
  'an idle poller thread (dist/daemon/poller-thread.js) + its clients': {
    modules: [dist('daemon/poller-thread.js')],
    build: 'clients',
  },
  '+ the pipeline and S3 mail store (after its first mail)': {
    modules: [
      dist('daemon/poller-thread.js'),
      dist('pipeline/process-message.js'),
      dist('aws/mail-store.js'),
    ],
    build: 'clients',
  },
};

/** Runs in a child process: starts the threads, prints one JSON line. */
const CHILD = `
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
const { modules, build, threads, settle, young, clients } = JSON.parse(process.argv[1]);
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const code = \`
(async () => {
  const { parentPort, workerData } = await import('node:worker_threads');
  for (const m of workerData.modules) await import(m);
  if (workerData.build === 'sqs') { const { SQSClient } = await import('@aws-sdk/client-sqs'); globalThis.kept = new SQSClient({ region: 'us-east-1' }); }
  if (workerData.build === 'clients') { const { createAwsClients } = await import(workerData.clients); globalThis.kept = createAwsClients({ region: 'us-east-1', endpoints: {}, s3ForcePathStyle: true }); }
  setInterval(() => {}, 1000);
  parentPort.postMessage('loaded');
})();\`;
const before = rss();
const cpuBefore = cpu();
await Promise.all(Array.from({ length: threads }, () => new Promise((resolve) => {
  const worker = new Worker(code, { eval: true, workerData: { modules, build, clients }, ...(young && { resourceLimits: { maxYoungGenerationSizeMb: young } }) });
  worker.once('message', resolve);
})));
const loadedCpu = cpu() - cpuBefore;
const loaded = rss();
await new Promise((r) => setTimeout(r, settle * 1000));
const settled = rss();
process.stdout.write(JSON.stringify({ loaded_mb: (loaded - before) / threads, settled_mb: (settled - before) / threads, load_cpu_ms: loadedCpu / threads }));
process.exit(0);
`;

function measure(
  set: (typeof SETS)[string],
  options: { threads: number; settle: number; young?: number },
): Promise<{ loaded_mb: number; settled_mb: number; load_cpu_ms: number }> {
  const input = JSON.stringify({ ...set, ...options, clients: dist('aws/clients.js') });
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, input], {
      cwd: ROOT,
      env: { ...process.env, AWS_SDK_JS_SUPPRESS_NODE_VERSION_WARNING: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (code) => {
      if (code === 0)
        resolve(JSON.parse(out) as { loaded_mb: number; settled_mb: number; load_cpu_ms: number });
      else reject(new Error(`exit ${code}: ${err.slice(-2000)}`));
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string', default: '20' },
      settle: { type: 'string', default: '120' },
      young: { type: 'string' },
      out: { type: 'string' },
    },
  });
  const options = {
    threads: Number(values.threads),
    settle: Number(values.settle),
    ...(values.young !== undefined && { young: Number(values.young) }),
  };
  const names = Object.keys(SETS);
  const results = await Promise.all(names.map((name) => measure(SETS[name]!, options)));
  const rows = Object.fromEntries(
    names.map((name, i) => {
      const r = results[i]!;
      const round1 = (n: number) => Math.round(n * 10) / 10;
      return [
        name,
        {
          loaded_mb: round1(r.loaded_mb),
          settled_mb: round1(r.settled_mb),
          load_cpu_ms: Math.round(r.load_cpu_ms),
        },
      ];
    }),
  );
  const machine = { cpus: cpus().length, node: process.version, date: new Date().toISOString() };
  const json = `${JSON.stringify({ machine, options, per_thread: rows }, null, 2)}\n`;
  const out =
    values.out ?? join(ROOT, 'bench/results', `${machine.date.replaceAll(':', '-')}-thread-cost.json`);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, json);
  process.stdout.write(json);
}

await main();
