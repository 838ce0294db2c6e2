/**
 * Time of the byte-level header scan (`splitMessage`) and the DSN walker (`parseDsn`) on hostile shapes, for
 * BENCHMARKS.md. The tests prove the work is linear by counting bytes examined (test/unit/header-block.test.ts)
 * and that the DSN walk stops at a fixed depth by counting entities (test/unit/dsn.test.ts); this says how long
 * that takes here, at 1x and 10x the input, measured alternately in the same run.
 *
 * Run: `node --import tsx bench/mail-parsing.bench.ts [--runs 7]`
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { parseDsn } from '../src/mail/dsn.ts';
import { splitMessage } from '../src/mail/header-block.ts';

const MiB = 1024 * 1024;
const { values } = parseArgs({ options: { runs: { type: 'string', default: '7' } } });
const runs = Math.max(1, Number(values.runs));

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function nestedDsn(levels: number): Buffer {
  let body =
    'Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; deep@example.org\r\nAction: failed\r\n';
  for (let i = 0; i < levels; i++) {
    body = `Content-Type: multipart/mixed; boundary=b${i}\r\n\r\n--b${i}\r\n${body}\r\n--b${i}--\r\n`;
  }
  return b(body);
}

interface Shape {
  name: string;
  /** The input at 1x; `scale` 10 builds the 10x one. */
  build: (scale: number) => Buffer;
  run: (input: Buffer) => unknown;
}

const SHAPES: Shape[] = [
  {
    name: 'splitMessage: one header line of 0.5 / 5 MiB',
    build: (k) =>
      Buffer.concat([b('X-Huge: '), Buffer.alloc(k * 0.5 * MiB, 'a'), b('\r\nSubject: s\r\n\r\nbody')]),
    run: splitMessage,
  },
  {
    name: 'splitMessage: a line of 0.5 / 5 MiB, no colon, no newline',
    build: (k) => Buffer.alloc(k * 0.5 * MiB, 'x'),
    run: splitMessage,
  },
  {
    name: 'splitMessage: one field, 10,000 / 100,000 continuation lines',
    build: (k) => b(`References: <0@x>${'\r\n\t<1@x>'.repeat(k * 10_000)}\r\n\r\nbody`),
    run: splitMessage,
  },
  {
    name: 'splitMessage: 10,000 / 100,000 short fields',
    build: (k) => b(`${'X-A: b\r\n'.repeat(k * 10_000)}\r\nbody`),
    run: splitMessage,
  },
  {
    name: 'parseDsn: multiparts nested 200 / 2,000 deep',
    build: (k) => nestedDsn(k * 200),
    run: parseDsn,
  },
];

function median(samples: number[]): number {
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

function timeMs(run: (input: Buffer) => unknown, input: Buffer): number {
  const started = performance.now();
  run(input);
  return performance.now() - started;
}

console.log(`\nHeader scan and DSN walk (${runs} runs each, median ms; 1x and 10x alternate)\n`);
console.log('| shape | 1x: median ms | 10x: median ms | 10x / 1x |');
console.log('|---|---:|---:|---:|');
for (const shape of SHAPES) {
  const small = shape.build(1);
  const large = shape.build(10);
  // Warm-up: the first call pays for JIT compilation, which is not the algorithm's cost.
  timeMs(shape.run, small);
  timeMs(shape.run, large);
  const smallMs: number[] = [];
  const largeMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    smallMs.push(timeMs(shape.run, small));
    largeMs.push(timeMs(shape.run, large));
  }
  const [s, l] = [median(smallMs), median(largeMs)];
  console.log(`| ${shape.name} | ${s.toFixed(2)} | ${l.toFixed(2)} | ${(l / s).toFixed(1)} |`);
}
