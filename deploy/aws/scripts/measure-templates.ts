/**
 * Synthesizes the app for 1, 5, 50 and 200 domains and prints, per size, the stacks and the largest template of
 * each kind against CloudFormation's limits: `npm run measure` (numbers for README.md).
 */
import { performance } from 'node:perf_hooks';
import { CLOUDFORMATION_LIMITS, limitProblems } from '../lib/limits.ts';
import { removeSynthOutput, sampleDomains, synth } from '../test/synth.ts';

const SIZES = [1, 5, 50, 200];
const length = Number(process.argv[2] ?? 20);

console.log(`domains of ${length} characters; limits: ${JSON.stringify(CLOUDFORMATION_LIMITS)}`);
console.log(
  '| domains | stacks | shared: JSON / YAML bytes, resources, outputs | largest domain stack: JSON / YAML bytes, resources, outputs | policy stacks, largest: JSON / YAML bytes | synth s |',
);
console.log('|---|---|---|---|---|---|');
for (const size of SIZES) {
  const domains = sampleDomains(size, length).join(',');
  const started = performance.now();
  const result = synth({ domains });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const shared = result.measures.find((m) => m.stack === result.app.shared.stackName)!;
  const largestOf = (names: string[]) =>
    result.measures
      .filter((m) => names.includes(m.stack))
      .reduce((a, b) => (b.jsonBytes > a.jsonBytes ? b : a));
  const largest = largestOf(result.app.domains.map((s) => s.stackName));
  const policy = largestOf(result.app.policies.map((s) => s.stackName));
  const policies = result.app.policies.length;
  const problems = result.measures.flatMap(limitProblems);
  console.log(
    `| ${size} | ${result.measures.length} | ${shared!.jsonBytes} / ${shared!.yamlBytes}, ${shared!.resources}, ${shared!.outputs} | ` +
      `${largest.jsonBytes} / ${largest.yamlBytes}, ${largest.resources}, ${largest.outputs} | ${policies}, ${policy.jsonBytes} / ${policy.yamlBytes} | ${seconds} |` +
      (problems.length > 0 ? ` OVER: ${problems.join('; ')}` : ''),
  );
  removeSynthOutput();
}
