/**
 * The app at 1, 5, 50 and 200 domains, and at 200 domains with the longest names the default bucket template allows:
 * every stack within each CloudFormation limit for a deploy without `cdk bootstrap` (template body sent inline as
 * JSON and as the YAML the CDK CLI sends, resources, outputs, parameters, mappings, description), and the stacks
 * counted. The numbers per size are printed as test diagnostics (and by `npm run measure`).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { CLOUDFORMATION_LIMITS, type TemplateMeasure } from '../lib/limits.ts';
import { ATTACHED_POLICIES_MAX, ATTACHED_POLICIES_QUOTA } from '../lib/worker-policy.ts';
import { removeSynthOutput, sampleDomains, synth } from './synth.ts';

after(removeSynthOutput);

/** Valid CloudFormation stack names, all different. */
function assertStackNames(names: readonly string[]): void {
  assert.equal(new Set(names).size, names.length, 'stack names are unique');
  for (const name of names) assert.match(name, /^[A-Za-z][A-Za-z0-9-]{0,127}$/, name);
}

function assertWithinLimits(m: TemplateMeasure): void {
  const L = CLOUDFORMATION_LIMITS;
  assert.ok(m.jsonBytes <= L.inlineTemplateBytes, `${m.stack}: JSON ${m.jsonBytes} bytes`);
  assert.ok(m.yamlBytes <= L.inlineTemplateBytes, `${m.stack}: YAML ${m.yamlBytes} bytes`);
  assert.ok(m.resources <= L.resources, `${m.stack}: ${m.resources} resources`);
  assert.ok(m.outputs <= L.outputs, `${m.stack}: ${m.outputs} outputs`);
  assert.ok(m.parameters <= L.parameters, `${m.stack}: ${m.parameters} parameters`);
  assert.ok(m.mappings <= L.mappings, `${m.stack}: ${m.mappings} mappings`);
  assert.ok(
    m.descriptionChars <= L.descriptionChars,
    `${m.stack}: description ${m.descriptionChars} characters`,
  );
  assert.ok(m.resources > 0, `${m.stack}: no resources measured`);
}

function largest(measures: readonly TemplateMeasure[], names: readonly string[]): TemplateMeasure {
  return measures
    .filter((m) => names.includes(m.stack))
    .reduce((a, b) => (b.jsonBytes > a.jsonBytes ? b : a));
}

const CASES: Array<{ domains: number; length: number }> = [
  { domains: 1, length: 20 },
  { domains: 5, length: 20 },
  { domains: 50, length: 20 },
  { domains: 200, length: 20 },
  { domains: 200, length: 56 },
];

describe('any size deploys without `cdk bootstrap`', () => {
  for (const { domains: count, length } of CASES) {
    it(`${count} domain(s) of ${length} characters: every stack within every limit`, (t) => {
      const domains = sampleDomains(count, length);
      const result = synth({ domains: domains.join(',') });
      const { app, measures } = result;
      assert.deepEqual(
        result.report.pluginReports.filter((r) => r.conclusion !== 'success'),
        [],
        'cdk-nag AwsSolutions passes',
      );

      assert.equal(app.domains.length, count);
      assert.equal(
        measures.length,
        app.policies.length + 1 + count,
        'policy stacks, the shared stack, one per domain',
      );
      assertStackNames(measures.map((m) => m.stack));
      for (const m of measures) assertWithinLimits(m);

      const shared = result.template(app.shared);
      for (const domain of domains)
        assert.equal(shared.Description!.includes(domain), false, 'no domain list');

      // Past the default quota of attached policies (about 190 domains of 20 characters) the synth warns: the quota
      // is raised on request, up to 20.
      assert.ok(app.policies.length <= ATTACHED_POLICIES_MAX, `${app.policies.length} worker policies`);
      const warned = app.shared.node.metadata.some((e) =>
        String(e.data).includes('unified-worker:attached-policies'),
      );
      assert.equal(
        warned,
        app.policies.length > ATTACHED_POLICIES_QUOTA,
        'a warning when over the default quota',
      );

      const domainStack = largest(
        measures,
        app.domains.map((s) => s.stackName),
      );
      const policyStack = largest(
        measures,
        app.policies.map((s) => s.stackName),
      );
      const sharedMeasure = measures.find((m) => m.stack === app.shared.stackName)!;
      t.diagnostic(
        JSON.stringify({
          domains: count,
          length,
          stacks: measures.length,
          policyStacks: app.policies.length,
          shared: sharedMeasure,
          largestDomainStack: domainStack,
          largestPolicyStack: policyStack,
        }),
      );
    });
  }

  it('a domain stack does not grow with the number of domains', () => {
    const one = synth({ domains: sampleDomains(1, 20).join(',') });
    const many = synth({ domains: sampleDomains(50, 20).join(',') });
    const first = (r: typeof one) => r.measures.find((m) => m.stack === r.app.domains[0]!.stackName)!;
    assert.equal(first(many).jsonBytes, first(one).jsonBytes);
    assert.equal(first(many).resources, first(one).resources);
  });
});
