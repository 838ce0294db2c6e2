/**
 * Where a daemon's CPU went: self time (share of the busy time) of a V8 CPU profile (`npm run bench -- --cpu-prof DIR`) grouped by package
 * (node_modules/<pkg>), by our own modules (dist/...), and by function.
 *
 *   node --import tsx bench/profile-summary.ts DIR [--top 20]
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '20' } },
});
const top = Number(values.top);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : name.endsWith('.cpuprofile') ? [path] : [];
  });
}

function group(url: string, fallback: string): string {
  if (url.includes('node_modules/')) {
    const parts = url.split('node_modules/').at(-1)!.split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.includes('/dist/')) return `dist/${url.split('/dist/').at(-1)}`;
  return url === '' ? fallback : url.replace(/^node:/, 'node:');
}

for (const file of files(positionals[0] ?? '.')) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const groups = new Map<string, number>();
  const functions = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const frame = byId.get(id)!.callFrame;
    // Shares are of the time the thread was busy: a profile also spans the waits around the measured run.
    if (frame.functionName === '(idle)') return;
    total += us;
    const g = group(frame.url, frame.functionName);
    groups.set(g, (groups.get(g) ?? 0) + us);
    const f = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}:${frame.lineNumber}`;
    functions.set(f, (functions.get(f) ?? 0) + us);
  });
  const show = (map: Map<string, number>) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, us]) => `${((us / total) * 100).toFixed(1).padStart(5)} %  ${k}`)
      .join('\n');
  process.stdout.write(
    `\n== ${file}: ${(total / 1000).toFixed(0)} ms busy\n${show(groups)}\n-- functions\n${show(functions)}\n`,
  );
}
