/**
 * What a poller thread loads before its first mail: an idle domain must not pay for the pipeline (mailparser,
 * nodemailer's composer, libmime) or for the S3 and SES SDKs. Counted in a fresh process by a module-resolution
 * hook, so the test sees exactly the modules an import pulls in.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const HEAVY = ['mailparser', 'libmime', 'nodemailer', '@aws-sdk/client-s3', '@aws-sdk/client-sesv2'];

/** Every package (node_modules/<name>) a fresh process resolves while importing `modules` in order. */
function packagesLoadedBy(modules: readonly string[]): Set<string> {
  const hook = [
    'let port;',
    'export function initialize(data) { port = data.port; }',
    'export async function resolve(specifier, context, next) {',
    '  const result = await next(specifier, context);',
    '  port.postMessage(result.url);',
    '  return result;',
    '}',
  ].join('\n');
  const script = [
    "import { register } from 'node:module';",
    "import { MessageChannel } from 'node:worker_threads';",
    'const { port1, port2 } = new MessageChannel();',
    'const urls = [];',
    'port1.on("message", (url) => urls.push(url));',
    `register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)}, { data: { port: port2 }, transferList: [port2] });`,
    `for (const m of ${JSON.stringify(modules)}) await import(new URL(m, ${JSON.stringify(`file://${ROOT}`)}).href);`,
    'await new Promise((r) => setTimeout(r, 200));',
    'port1.close();',
    'process.stdout.write(JSON.stringify(urls));',
  ].join('\n');
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '', AWS_SDK_JS_SUPPRESS_NODE_VERSION_WARNING: '1' },
    timeout: 60_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const urls = JSON.parse(run.stdout) as string[];
  const packages = new Set<string>();
  for (const url of urls) {
    const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (match) packages.add(match[1]!);
  }
  return packages;
}

describe('lazy loading', () => {
  it('a poller thread loads neither the pipeline nor the S3 and SES SDKs before its first mail', () => {
    const idle = packagesLoadedBy(['src/daemon/poller-thread.ts']);
    assert.ok(idle.has('@aws-sdk/client-sqs'), 'it does load what polling needs');
    for (const name of HEAVY) assert.ok(!idle.has(name), `${name} loaded by an idle thread`);
  });

  it('the pipeline and the mail store, loaded with the first mail, bring them in (the check above can fail)', () => {
    const busy = packagesLoadedBy([
      'src/daemon/poller-thread.ts',
      'src/pipeline/process-message.ts',
      'src/aws/mail-store.ts',
    ]);
    for (const name of ['mailparser', 'libmime', 'nodemailer', '@aws-sdk/client-s3'])
      assert.ok(busy.has(name), `${name} is part of the pipeline`);
  });
});
