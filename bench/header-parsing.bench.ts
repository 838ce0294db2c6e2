/**
 * The work (CPU time) the worker does on a mail's header block, per MiB of header, for the worst shapes we could build
 * (test/harness/header-shapes.ts): every stage that reads headers (the header view, the loop-marker check, bounce
 * detection and the DSN walk, the blocklist, the auto-reply decision, the MIME walk that feeds the auto-reply, the reply
 * and the forward rewrite) runs on each mail as the pipeline runs it. The target is at most 50 ms per MiB of header on
 * the benchmark machine (BENCHMARKS.md); each shape is also timed at a quarter and half of its size, so a cost that
 * grows faster than the header shows. The hostile test suite bounds the same work by counting, not timing.
 *
 * Run: `node --import tsx bench/header-parsing.bench.ts [--runs 7] [--only <part of a shape's name>]`; `npm run bench`
 * (full) runs it too.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  headerBytes,
  headerWork,
  mail,
  MAIL_TOP,
  MiB,
  SHAPES,
  SOURCE,
} from '../test/harness/header-shapes.ts';

export interface ShapeResult {
  shape: string;
  header_bytes: number;
  /**
   * CPU ms of the mail's header work at a quarter, a half and the whole of the size, less that of a plain mail with a
   * header of a few hundred bytes measured in the same rounds (composing the reply and the MIME walk's set-up cost
   * the same for any mail): the header's own cost. Linear work grows at most 4x from the first to the last.
   */
  ms: [number, number, number];
  /** The last of `ms` per MiB of header: the figure the target is for. */
  ms_per_mib: number;
}

export interface HeaderParsingResult {
  header_kib: number;
  runs: number;
  /** CPU ms of the whole header work on the plain mail (median over every shape's rounds). */
  plain_mail_ms: number;
  worst_ms_per_mib: number;
  shapes: ShapeResult[];
}

function median(samples: readonly number[]): number {
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

/**
 * CPU time of the process (user + system) while one mail's header work runs: on a machine shared with other work,
 * wall time measures the queue for the CPU as much as the work.
 */
async function cpuMs(raw: Buffer, source: string): Promise<number> {
  const started = process.cpuUsage();
  await headerWork(raw, source);
  const used = process.cpuUsage(started);
  return (used.user + used.system) / 1000;
}

const PLAIN_MAIL = mail(MAIL_TOP, 'Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n');

const round1 = (n: number): number => Number(n.toFixed(1));

/**
 * Every shape (or those whose name contains `only`) at 1/4, 1/2 and 1 x `bytes` (default just under the 1 MiB
 * header bound), median of `runs`.
 */
export async function measureHeaderParsing(
  runs = 7,
  bytes = MiB - 8 * 1024,
  only?: string,
): Promise<HeaderParsingResult> {
  const shapes: ShapeResult[] = [];
  const plainAll: number[] = [];
  for (const shape of SHAPES.filter((s) => only === undefined || s.name.includes(only))) {
    const source = shape.source ?? SOURCE;
    const inputs = [bytes / 4, bytes / 2, bytes].map((n) => shape.build(Math.floor(n)));
    // Warm-up: the first calls pay for JIT compilation, which is not the cost of the work.
    await cpuMs(PLAIN_MAIL, SOURCE);
    for (const raw of inputs) await cpuMs(raw, source);
    const plain: number[] = [];
    const samples: number[][] = inputs.map(() => []);
    for (let r = 0; r < runs; r++) {
      plain.push(await cpuMs(PLAIN_MAIL, SOURCE));
      for (const [i, raw] of inputs.entries()) samples[i]!.push(await cpuMs(raw, source));
    }
    plainAll.push(...plain);
    const base = median(plain);
    const ms = samples.map((s) => round1(Math.max(0, median(s) - base))) as [number, number, number];
    const headerSize = headerBytes(inputs[2]!);
    shapes.push({
      shape: shape.name,
      header_bytes: headerSize,
      ms,
      ms_per_mib: round1(ms[2] / (headerSize / MiB)),
    });
  }
  return {
    header_kib: Math.round(bytes / 1024),
    runs,
    plain_mail_ms: round1(median(plainAll)),
    worst_ms_per_mib: Math.max(...shapes.map((s) => s.ms_per_mib)),
    shapes,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: { runs: { type: 'string', default: '7' }, only: { type: 'string' } },
  });
  const result = await measureHeaderParsing(Math.max(1, Number(values.runs)), undefined, values.only);
  console.log(
    `\nHeader work: CPU ms over a plain mail (${result.plain_mail_ms} ms), ${result.runs} runs, median; ` +
      'target <= 50 ms per MiB of header\n',
  );
  console.log('| shape | header KiB | ms at 1/4 | at 1/2 | at 1 | ms/MiB |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const s of result.shapes)
    console.log(
      `| ${s.shape} | ${Math.round(s.header_bytes / 1024)} | ${s.ms.join(' | ')} | ${s.ms_per_mib} |`,
    );
  console.log(`\nworst: ${result.worst_ms_per_mib} ms/MiB`);
}
