/**
 * README.md and docs/ cannot drift from the code: every shell block says how it is checked and is checked that way
 * (run against a local stack, parsed by the real tool, or run by CI), every metric and setting the docs name exists,
 * every link resolves, and the hand-written IAM policy grants exactly what the daemon calls. How to tag a block:
 * docs/development.md, "The documentation is tested".
 *
 * The `local` and `cli` blocks run against scripts/local-stack.ts (what `npm run local` starts after its build) in a
 * scratch copy of the repository (symlinks, with a `local-mail/` and a `worker.env` of its own), on free ports.
 * `aws` blocks need the AWS CLI, `kubectl` blocks kubectl, `compose` blocks' `postconf` Postfix: without one, those
 * tests are skipped with the reason, except under CI=true, where they fail.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { CONTEXT_KEYS } from '../../deploy/aws/lib/options.ts';
import { DAEMON_PERMISSIONS } from '../../src/aws/resources.ts';
import { SETTINGS } from '../../src/config/settings.ts';
import { waitUntil } from '../harness/emulators.ts';
import { declaredMetrics, stillAwaited } from '../harness/metric-names.ts';
import { commandProblem, toolGate } from '../harness/required-tool.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const DOCS = [
  'README.md',
  'deploy/aws/README.md',
  ...readdirSync(path.join(ROOT, 'docs')).map((f) => `docs/${f}`),
].filter((f) => f.endsWith('.md'));
const TAGS = ['local', 'cli', 'ci', 'aws', 'cdk', 'kubectl', 'compose'] as const;
type Tag = (typeof TAGS)[number];

// ---------------------------------------------------------------------------------------------------------------------
// Markdown and shell, as data
// ---------------------------------------------------------------------------------------------------------------------

interface Block {
  file: string;
  line: number;
  lang: string;
  tag: string | undefined;
  body: string;
}

function blocksOf(file: string): Block[] {
  const out: Block[] = [];
  const lines = read(file).split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*(\S*)\s*$/.exec(lines[i]!);
    if (!open || !open[2]) continue;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++)
      body.push(lines[j]!.slice(open[1]!.length));
    out.push({ file, line: i + 1, lang: open[2], tag: open[3] || undefined, body: body.join('\n') });
    i = j;
  }
  return out;
}

const BLOCKS = DOCS.flatMap(blocksOf);
const SHELL = BLOCKS.filter((b) => ['sh', 'bash', 'shell', 'console'].includes(b.lang));
const tagged = (tag: Tag) => SHELL.filter((b) => b.tag === tag);

/** Drops a comment that starts outside quotes. */
function stripComment(line: string): string {
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
    } else if (c === "'" || c === '"') quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i);
  }
  return line;
}

/** The commands of a block: continuations joined, comments dropped, split at top-level `&&` and `;`. */
function commandsOf(body: string): string[] {
  const joined = body.replace(/\\\n\s*/g, ' ');
  return joined
    .split('\n')
    .map(stripComment)
    .flatMap((line) => splitTopLevel(line))
    .map((c) => c.trim())
    .filter(Boolean);
}

function splitTopLevel(line: string): string[] {
  const parts: string[] = [];
  let quote = '';
  let depth = 0;
  let start = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
      continue;
    }
    if (c === "'" || c === '"') quote = c;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (depth === 0 && (c === ';' || (c === '&' && line[i + 1] === '&'))) {
      parts.push(line.slice(start, i));
      if (c === '&') i++;
      start = i + 1;
    }
  }
  parts.push(line.slice(start));
  return parts;
}

/** Shell words: quotes removed, `$'…'` decoded, `$(…)` kept as one word. */
function wordsOf(command: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < command.length; i++) {
    const c = command[i]!;
    if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (c === '$' && command[i + 1] === '(') {
      let depth = 0;
      let j = i + 1;
      for (; j < command.length; j++) {
        if (command[j] === '(') depth++;
        else if (command[j] === ')' && --depth === 0) break;
      }
      word += command.slice(i, j + 1);
      i = j;
    } else if (c === '$' && command[i + 1] === "'") {
      const end = command.indexOf("'", i + 2);
      word += command.slice(i + 2, end).replaceAll('\\n', '\n');
      i = end;
    } else if (c === "'") {
      const end = command.indexOf("'", i + 1);
      word += command.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < command.length && command[j] !== '"'; j++)
        word += command[j] === '\\' ? command[++j] : command[j];
      i = j;
    } else word += c;
  }
  if (inWord) words.push(word);
  return words;
}

/** Leading `NAME=value` words as an environment, and the rest. */
function splitEnv(words: string[]): { env: Record<string, string>; argv: string[] } {
  const env: Record<string, string> = {};
  let i = 0;
  for (; i < words.length; i++) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/s.exec(words[i]!);
    if (!m) break;
    env[m[1]!] = m[2]!;
  }
  return { env, argv: words.slice(i) };
}

/** The unified-worker arguments of a command line, wherever it runs the CLI; undefined when it does not. */
function cliArgs(argv: string[]): { envFile?: string; args: string[] } | undefined {
  const at = argv.indexOf('dist/unified-worker.js');
  if (argv[0] === 'node' && at > 0) {
    const envFile = argv
      .slice(1, at)
      .find((a) => a.startsWith('--env-file='))
      ?.slice('--env-file='.length);
    return { ...(envFile !== undefined && { envFile }), args: argv.slice(at + 1) };
  }
  if (argv[0] === 'unified-worker' || argv[0] === 'uw') return { args: argv.slice(1) };
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------------
// Every block is tagged; data blocks parse
// ---------------------------------------------------------------------------------------------------------------------

describe('the documentation: blocks, names, links', () => {
  it('every shell block says how it is checked, and json/yaml blocks parse', () => {
    assert.ok(SHELL.length > 10, `${SHELL.length} shell blocks found`);
    for (const block of SHELL) {
      assert.ok(
        TAGS.includes(block.tag as Tag),
        `${block.file}:${block.line}: \`\`\`${block.lang} needs a tag (${TAGS.join(', ')}), has ${block.tag}`,
      );
    }
    for (const block of BLOCKS) {
      assert.ok(
        ['sh', 'text', 'json', 'yaml'].includes(block.lang),
        `${block.file}:${block.line}: ${block.lang}`,
      );
      if (block.lang === 'json')
        assert.doesNotThrow(() => JSON.parse(block.body), `${block.file}:${block.line}`);
      if (block.lang === 'yaml')
        assert.doesNotThrow(() => parseYaml(block.body), `${block.file}:${block.line}`);
    }
  });

  it('the README fits on a page', () => {
    assert.ok(read('README.md').split('\n').length <= 250);
  });

  it('every ses_worker_* metric named exists (registries, recording rules), old names only in the upgrade notes', async () => {
    const declared = await declaredMetrics();
    const awaited = stillAwaited(declared);
    const rules = read('deploy/prometheus/alerts.yaml');
    const recorded = new Set([...rules.matchAll(/record: (\S+)/g)].map((m) => m[1]!));
    const renamed = new Set(
      [...read('CHANGELOG.md').matchAll(/^\| `((?:domain:)?ses_worker_[\w:]+)`.*\| `/gm)].map((m) => m[1]!),
    );
    assert.ok(renamed.size > 0, 'the rename table of CHANGELOG.md');
    for (const file of DOCS) {
      for (const [name] of read(file).matchAll(/(?:domain:)?ses_worker_[a-z0-9_]+(?::[a-z0-9_]+)?/g)) {
        if (renamed.has(name) && file === 'docs/upgrading.md') continue;
        const base = name.replace(/_(bucket|sum|count)$/, '');
        const known = name.startsWith('domain:')
          ? recorded.has(name)
          : declared.has(base) || awaited.has(base) || name === 'ses_worker_';
        assert.ok(known, `${file}: ${name} does not exist`);
      }
    }
  });

  it('every setting named exists: src/config/settings.ts, the env examples, or a variable of another tool', () => {
    const envKeys = (file: string) => [...read(file).matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
    const allowed = new Set<string>([
      ...Object.keys(SETTINGS),
      ...envKeys('.env.example'),
      ...envKeys('mailserver.env.example'),
      // The AWS SDK's credential chain (not settings of the worker).
      'AWS_ACCESS_KEY_ID',
      'AWS_SECRET_ACCESS_KEY',
      'AWS_PROFILE',
      // What SES writes into a bucket when a rule set is activated.
      'AMAZON_SES_SETUP_NOTIFICATION',
      // The lists of IAM actions in src/aws/resources.ts.
      'DAEMON_PERMISSIONS',
      'OPERATOR_PERMISSIONS',
      // docker-mailserver settings the docs name beside those of mailserver.env.example.
      'RELAY_HOST',
      // The test harness's own variables (docs/development.md).
      'KUBECTL',
      // The table of mail limits in src/mail/mail-limits.ts (docs/limits.md).
      'MAIL_LIMITS',
      // A compose variable of 0.1.0, named by the upgrade notes (docs/upgrading.md).
      'MAIL_SSL_TYPE',
    ]);
    for (const file of DOCS) {
      for (const [, span] of read(file).matchAll(/`([^`\n]+)`/g)) {
        for (const [name] of span!.matchAll(/\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b/g)) {
          assert.ok(allowed.has(name), `${file}: \`${span}\` names ${name}, which is no setting`);
        }
      }
    }
  });

  it('every relative link points to a file, and every anchor to a heading', () => {
    const slug = (heading: string) =>
      heading
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-');
    for (const file of [...DOCS, 'CHANGELOG.md']) {
      for (const [, target] of read(file).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target!)) continue;
        const [where, anchor] = target!.split('#');
        const resolved = where ? path.join(path.dirname(file), where) : file;
        assert.ok(existsSync(path.join(ROOT, resolved)), `${file}: link to ${target}`);
        if (anchor && resolved.endsWith('.md')) {
          const headings = [...read(resolved).matchAll(/^#+ (.+)$/gm)].map((m) => slug(m[1]!));
          assert.ok(headings.includes(anchor), `${file}: ${target}: no heading #${anchor} in ${resolved}`);
        }
      }
    }
  });

  it("docs/aws.md's hand-written IAM policy grants exactly DAEMON_PERMISSIONS", () => {
    const section = read('docs/aws.md').slice(read('docs/aws.md').indexOf('## IAM permissions'));
    const json = /```json\n([\s\S]*?)\n```/.exec(section)?.[1];
    assert.ok(json, 'no policy in docs/aws.md "IAM permissions"');
    const policy = JSON.parse(json) as { Statement: Array<{ Action: string[] }> };
    const actions = policy.Statement.flatMap((s) => s.Action).sort();
    assert.deepEqual(actions, DAEMON_PERMISSIONS.map((p) => p.action).sort());
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// `ci` blocks: commands CI runs, or scripts the tests run
// ---------------------------------------------------------------------------------------------------------------------

describe('`ci` blocks', () => {
  const ciRun = read('.ci/run');
  const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
  const awsScripts = (JSON.parse(read('deploy/aws/package.json')) as { scripts: Record<string, string> })
    .scripts;
  /** npm scripts a test runs (this file runs `local` and `local:send` through the local stack) or that exist as tools. */
  const RUN_BY_TESTS: Record<string, string> = {
    local: 'test/integration/docs.test.ts (scripts/local-stack.ts, after npm test built dist/)',
    'local:send': 'test/integration/docs.test.ts (`local` blocks)',
    'gen:env': 'test/unit/config.test.ts (renderEnvExample)',
    lint: 'a developer tool: the script exists',
    format: 'a developer tool: the script exists',
    bench: 'bench/ (test/integration/bench-smoke.test.ts)',
  };
  /** deploy/aws's scripts, and the test that does what each does. */
  const AWS_RUN_BY_TESTS: Record<string, string> = {
    synth: 'test/integration/deploy-aws.test.ts (the same cdk synth, compared with templates/)',
    measure: 'deploy/aws/test/sizes.test.ts (the same measurement, with every limit asserted)',
  };

  it('each command is run by .ci/run or by a test, and names a script that exists', () => {
    for (const block of tagged('ci')) {
      for (const command of commandsOf(block.body)) {
        const where = `${block.file}:${block.line}: ${command}`;
        const { argv } = splitEnv(wordsOf(command));
        if (argv[0] === 'promtool') {
          assert.deepEqual(argv.slice(1, 3), ['test', 'rules'], where);
          assert.ok(existsSync(path.join(ROOT, argv[3]!)), where);
          assert.match(read('test/integration/prometheus-rules.test.ts'), /promtool\('test', 'rules'/, where);
          continue;
        }
        assert.equal(argv[0], 'npm', where);
        if (argv[1] === 'run' && !argv.includes('--prefix')) {
          assert.ok(argv[2]! in scripts, `${where}: no such script`);
          assert.ok(
            ciRun.includes(`npm run ${argv[2]}`) || RUN_BY_TESTS[argv[2]!],
            `${where}: nothing runs it`,
          );
        } else if (argv.includes('--prefix')) {
          assert.equal(argv[argv.indexOf('--prefix') + 1], 'deploy/aws', where);
          if (argv[1] === 'run') {
            assert.ok(argv[2]! in awsScripts, `${where}: no such script in deploy/aws`);
            assert.ok(AWS_RUN_BY_TESTS[argv[2]!], `${where}: nothing runs it`);
          } else if (argv[1] === 'test') {
            assert.match(read('test/integration/deploy-aws.test.ts'), /run\('npm', \['test'/, where);
          } else assert.ok(ciRun.includes(command), `${where}: not in .ci/run`);
        } else {
          assert.ok(['ci', 'test'].includes(argv[1]!), where);
          assert.match(ciRun, new RegExp(`^npm ${argv[1]}\\b`, 'm'), `${where}: not in .ci/run`);
        }
      }
    }
    // What the tests run as `npm run local` is that script after its build.
    assert.equal(scripts.local, 'npm run build && node --import tsx scripts/local-stack.ts');
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// `aws` blocks: the AWS CLI parses them (pointed at a closed port: nothing reaches AWS)
// ---------------------------------------------------------------------------------------------------------------------

const AWS = process.env.AWS_CLI ?? 'aws';
const awsGate = toolGate(
  'the AWS CLI',
  commandProblem(AWS, ['--version']),
  'install it with `apt-get install --no-install-recommends awscli` (Debian) or set AWS_CLI',
);

describe('`aws` blocks', () => {
  it('the AWS CLI accepts every command: it gets as far as connecting', { skip: awsGate.skip }, () => {
    awsGate.assertAvailable();
    const commands = tagged('aws').flatMap((b) => commandsOf(b.body).map((c) => ({ b, c })));
    assert.ok(commands.length > 0);
    for (const { b, c } of commands) {
      const { argv } = splitEnv(wordsOf(c));
      assert.equal(argv[0], 'aws', `${b.file}:${b.line}: ${c}`);
      const run = spawnSync(
        AWS,
        [
          ...argv.slice(1),
          '--endpoint-url',
          'http://127.0.0.1:9',
          '--region',
          'eu-west-1',
          '--cli-connect-timeout',
          '2',
        ],
        {
          encoding: 'utf8',
          timeout: 60_000,
          env: {
            PATH: process.env.PATH ?? '',
            HOME: process.env.HOME ?? tmpdir(),
            AWS_ACCESS_KEY_ID: 'docs-test',
            AWS_SECRET_ACCESS_KEY: 'docs-test',
            AWS_MAX_ATTEMPTS: '1',
            AWS_CONFIG_FILE: '/dev/null',
            AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
          },
        },
      );
      assert.match(
        run.stderr,
        /Could not connect to the endpoint URL/,
        `${b.file}:${b.line}: ${c}\n${run.stderr}`,
      );
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// `cdk` blocks: every flag is one the CDK CLI knows, every `-c` key one the app reads, and the app synthesizes them
// ---------------------------------------------------------------------------------------------------------------------

const CDK_APP = path.join(ROOT, 'deploy/aws');
const CDK = path.join(CDK_APP, 'node_modules/.bin/cdk');
const cdkGate = toolGate(
  'the deploy/aws install',
  existsSync(CDK) ? undefined : 'deploy/aws/node_modules is missing',
  'run `npm ci --prefix deploy/aws`',
);

describe('`cdk` blocks', () => {
  it(
    'the CDK CLI knows every flag, the app every context key, and it synthesizes them',
    { skip: cdkGate.skip },
    () => {
      cdkGate.assertAvailable();
      const env: NodeJS.ProcessEnv = { ...process.env, CDK_DISABLE_CLI_TELEMETRY: 'true' };
      delete env.NODE_OPTIONS;
      delete env.NODE_TEST_CONTEXT;
      const commands = tagged('cdk').flatMap((b) => commandsOf(b.body).map((c) => ({ b, c })));
      assert.ok(commands.length > 0);
      const helpOf = new Map<string, string>();
      for (const { b, c } of commands) {
        const where = `${b.file}:${b.line}: ${c}`;
        const { argv } = splitEnv(wordsOf(c));
        if (argv[0] === 'cd') assert.equal(argv[1], 'deploy/aws', where);
        else if (argv[0] === 'npm') assert.deepEqual(argv.slice(1), ['ci'], where);
        else if (argv[0] === 'export') continue;
        else {
          assert.deepEqual(argv.slice(0, 2), ['npx', 'cdk'], where);
          const sub = argv[2]!;
          if (!helpOf.has(sub)) {
            const help = spawnSync(CDK, [sub, '--help'], {
              cwd: CDK_APP,
              encoding: 'utf8',
              env,
              timeout: 120_000,
            });
            helpOf.set(sub, help.stdout + help.stderr);
          }
          const context: string[] = [];
          for (let i = 3; i < argv.length; i++) {
            const word = argv[i]!;
            if (word === '-c' || word === '--context') context.push(argv[++i]!);
            else if (word.startsWith('--')) {
              const flag = word.split('=')[0]!;
              assert.ok(helpOf.get(sub)!.includes(flag), `${where}: cdk ${sub} has no ${flag}`);
            }
          }
          const keys = Object.values(CONTEXT_KEYS) as string[];
          for (const pair of context)
            assert.ok(keys.includes(pair.split('=')[0]!), `${where}: no context key ${pair}`);
          const out = mkdtempSync(path.join(tmpdir(), 'docs-cdk-'));
          try {
            const synth = spawnSync(
              CDK,
              ['synth', '--quiet', '--output', out, ...context.flatMap((pair) => ['-c', pair])],
              { cwd: CDK_APP, encoding: 'utf8', env, timeout: 300_000 },
            );
            assert.equal(synth.status, 0, `${where}\n${synth.stderr}`);
          } finally {
            rmSync(out, { recursive: true, force: true });
          }
        }
      }
    },
  );
});

// ---------------------------------------------------------------------------------------------------------------------
// `kubectl` blocks: built, dry-run, or flags checked against kubectl's help
// ---------------------------------------------------------------------------------------------------------------------

const KUBECTL = process.env.KUBECTL ?? 'kubectl';
const kubectlGate = toolGate(
  'kubectl',
  commandProblem(KUBECTL, ['version', '--client']),
  'install a current kubectl or set KUBECTL',
);

describe('`kubectl` blocks', () => {
  it('kubectl builds, dry-runs or knows every command', { skip: kubectlGate.skip }, () => {
    kubectlGate.assertAvailable();
    const globals = spawnSync(KUBECTL, ['options'], { encoding: 'utf8' }).stdout;
    for (const block of tagged('kubectl')) {
      for (const command of commandsOf(block.body)) {
        const where = `${block.file}:${block.line}: ${command}`;
        const { argv } = splitEnv(wordsOf(command));
        assert.equal(argv[0], 'kubectl', where);
        const dash = argv.indexOf('--');
        const own = dash >= 0 ? argv.slice(1, dash) : argv.slice(1);
        const verb = own.filter(
          (w, i) => !w.startsWith('-') && !['-n', '--namespace'].includes(own[i - 1]!),
        )[0]!;
        const k = own.indexOf('-k');
        if (verb === 'apply' && k >= 0) {
          const run = spawnSync(KUBECTL, ['kustomize', path.join(ROOT, own[k + 1]!)], { encoding: 'utf8' });
          assert.equal(run.status, 0, `${where}\n${run.stderr}`);
        } else if (verb === 'create') {
          const run = spawnSync(KUBECTL, [...own, '--dry-run=client', '-o', 'yaml'], {
            cwd: ROOT,
            encoding: 'utf8',
          });
          assert.equal(run.status, 0, `${where}\n${run.stderr}`);
        } else {
          const help = spawnSync(KUBECTL, [verb, '--help'], { encoding: 'utf8' });
          assert.equal(help.status, 0, `${where}: kubectl ${verb}`);
          for (const flag of own.filter((w) => w.startsWith('-'))) {
            const name = flag.split('=')[0]!;
            assert.ok(
              help.stdout.includes(`${name}=`) || help.stdout.includes(`${name},`) || globals.includes(name),
              `${where}: ${name}`,
            );
          }
        }
        if (dash >= 0) cliCommands.push({ where, ...cliArgs(argv.slice(dash + 1))! });
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// `compose` blocks: services, subcommands, files; the worker's commands go to the CLI check
// ---------------------------------------------------------------------------------------------------------------------

const postfixGate = toolGate(
  'postconf',
  commandProblem('sh', ['-c', 'command -v postconf']),
  'install Postfix',
);
const COMPOSE_SUBCOMMANDS = new Set([
  'up',
  'exec',
  'run',
  'build',
  'ps',
  'logs',
  'down',
  'restart',
  'pull',
  'config',
]);
/** docker-mailserver's `setup` commands the docs use (its documentation, "setup.sh"). */
const DMS_SETUP = new Set(['email add', 'alias add']);

describe('`compose` blocks', () => {
  it(
    'every command uses a service of docker-compose.yml, a Compose subcommand, files that exist',
    { skip: postfixGate.skip },
    () => {
      postfixGate.assertAvailable();
      const services = Object.keys((parseYaml(read('docker-compose.yml')) as { services: object }).services);
      for (const block of tagged('compose')) {
        for (const command of commandsOf(block.body)) {
          const where = `${block.file}:${block.line}: ${command}`;
          const { argv } = splitEnv(wordsOf(command));
          if (argv[0] === 'cp') {
            // A file of the repository, or one of the user's own (the ones .gitignore keeps out).
            const ignored = read('.gitignore').split('\n');
            for (const source of argv.slice(1, -1)) {
              const known = existsSync(path.join(ROOT, source)) || ignored.includes(source);
              assert.ok(known, `${where}: ${source}`);
            }
            continue;
          }
          assert.deepEqual(argv.slice(0, 2), ['docker', 'compose'], where);
          const sub = argv[2]!;
          assert.ok(COMPOSE_SUBCOMMANDS.has(sub), `${where}: ${sub}`);
          const rest = argv.slice(3);
          const at = rest.findIndex((w) => !w.startsWith('-'));
          if (at < 0) continue;
          const service = rest[at]!;
          assert.ok(services.includes(service), `${where}: no service ${service}`);
          const inner = rest.slice(at + 1);
          if (inner.length === 0) continue;
          if (service === 'worker') {
            cliCommands.push({ where, ...(cliArgs(inner) ?? { args: inner }) });
          } else if (inner[0] === 'setup') {
            assert.ok(DMS_SETUP.has(inner.slice(1, 3).join(' ')), where);
          } else if (inner[0] === 'postconf') {
            const params = inner.slice(1).filter((w) => !w.startsWith('-') && !w.includes('/'));
            for (const param of params) {
              const known = spawnSync('postconf', ['-d', param], { encoding: 'utf8' });
              assert.equal(known.status, 0, `${where}: postconf knows no ${param}`);
            }
          } else {
            assert.fail(`${where}: no check for this command`);
          }
        }
      }
    },
  );
});

// ---------------------------------------------------------------------------------------------------------------------
// `local` and `cli` blocks: against a local stack
// ---------------------------------------------------------------------------------------------------------------------

/** unified-worker commands found inside other blocks (compose, kubectl), run with the `cli` blocks. */
const cliCommands: Array<{ where: string; envFile?: string; args: string[]; env?: Record<string, string> }> =
  [];

describe('`local` and `cli` blocks, against a local stack', { concurrency: false }, () => {
  let dir = '';
  let stack: ChildProcess | undefined;
  let output = '';

  before(async () => {
    assert.ok(existsSync(path.join(ROOT, 'dist/unified-worker.js')), 'run `npm run build` first');
    dir = mkdtempSync(path.join(tmpdir(), 'unified-worker-docs-'));
    // scripts/ is copied, not linked: its entry points check that they are the main module by path.
    for (const entry of readdirSync(ROOT)) {
      if (entry === 'scripts') cpSync(path.join(ROOT, entry), path.join(dir, entry), { recursive: true });
      else if (!['local-mail', 'worker.env', '.git'].includes(entry))
        symlinkSync(path.join(ROOT, entry), path.join(dir, entry));
    }
    // The stack as `npm run local` starts it after its build; MAX_RECEIVES=1 as the walk-through asks.
    stack = spawn(
      process.execPath,
      ['--import', 'tsx', 'scripts/local-stack.ts', '--health-port', '0', '--metrics-port', '0'],
      { cwd: dir, env: { ...process.env, MAX_RECEIVES: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    stack.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    stack.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    await waitUntil(
      () => {
        if (stack!.exitCode !== null) throw new Error(`the local stack exited:\n${output.slice(-3000)}`);
        return /local stack is running/.test(output);
      },
      120_000,
      'the local stack',
      200,
    );
    copyFileSync(path.join(dir, 'local-mail/local-stack.env'), path.join(dir, 'worker.env'));
  });

  after(async () => {
    if (stack && stack.exitCode === null) {
      const exited = new Promise((resolve) => stack!.once('exit', resolve));
      stack.kill('SIGINT');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 60_000))]);
      if (stack.exitCode === null) stack.kill('SIGKILL');
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const file of DOCS.filter((f) => blocksOf(f).some((b) => b.tag === 'local'))) {
    it(`${file}: every \`local\` block runs, in order, and succeeds`, async () => {
      const script = [
        'set -euo pipefail',
        'shopt -s expand_aliases',
        ...blocksOf(file)
          .filter((b) => b.tag === 'local')
          .map((b) => b.body),
      ].join('\n');
      const run = await runShell(script, dir, 300_000);
      assert.equal(run.status, 0, `${file}:\n${run.output.slice(-4000)}`);
    });
  }

  it('every `cli` command (and the worker commands of other blocks) parses and runs; the daemon starts', async () => {
    const commands = [
      ...tagged('cli').flatMap((b) =>
        commandsOf(b.body).map((c) => {
          const { env, argv } = splitEnv(wordsOf(c));
          const cli = cliArgs(argv);
          assert.ok(cli, `${b.file}:${b.line}: ${c} is not a unified-worker command`);
          return { where: `${b.file}:${b.line}: ${c}`, env, ...cli };
        }),
      ),
      ...cliCommands,
    ];
    assert.ok(commands.length > 0);
    const stackEnv = parseEnv(readFileSync(path.join(dir, 'worker.env'), 'utf8'));
    for (const command of commands) {
      const env = { ...process.env, ...stackEnv, ...command.env, HEALTH_PORT: '0', METRICS_PORT: '0' };
      const daemon = command.args.length === 0 || command.args[0] === 'run';
      const run = await runNode(['dist/unified-worker.js', ...command.args], dir, env, daemon);
      assert.notEqual(run.status, 2, `${command.where}: a usage error\n${run.output}`);
      assert.doesNotMatch(run.output, /unknown (option|command)|too many arguments/i, command.where);
      if (daemon) assert.equal(run.status, 0, `${command.where}: the daemon\n${run.output.slice(-2000)}`);
    }
  });
});

function runShell(
  script: string,
  cwd: string,
  timeoutMs: number,
): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', script], { cwd, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, output });
    });
  });
}

/**
 * A CLI command to its end (60 s at most); the daemon until it logs that it started (30 s at most), then SIGTERM: it
 * must drain and exit 0.
 */
function runNode(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
  daemon: boolean,
): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let stopping = false;
    const collect = (c: Buffer) => {
      output += c.toString();
      if (daemon && !stopping && /unified-worker started/.test(output)) {
        stopping = true;
        setTimeout(() => child.kill('SIGTERM'), 1_000);
      }
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const stop = setTimeout(() => child.kill(daemon ? 'SIGTERM' : 'SIGKILL'), daemon ? 30_000 : 60_000);
    const kill = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('exit', (status) => {
      clearTimeout(stop);
      clearTimeout(kill);
      resolve({ status, output });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------------
// The AWS app's options the docs name exist
// ---------------------------------------------------------------------------------------------------------------------

describe('the AWS app options the docs name', () => {
  it('exist in deploy/aws/lib/options.ts', () => {
    const keys = new Set(Object.values(CONTEXT_KEYS) as string[]);
    for (const file of DOCS) {
      for (const [, option] of read(file).matchAll(/(?:AWS app's|option|options?) `(\w+)`/g)) {
        if (/^[a-z]+[A-Z]\w*$/.test(option!)) assert.ok(keys.has(option!), `${file}: option ${option}`);
      }
    }
  });
});
