import { Annotations, BootstraplessSynthesizer, Validations, type App } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DomainStack } from './domain-stack.ts';
import { domainStackName, policyName } from './names.ts';
import { StackOptionsError, readStackOptions, type WorkerStackOptions } from './options.ts';
import { PolicyStack } from './policy-stack.ts';
import { SharedStack } from './shared-stack.ts';
import { ATTACHED_POLICIES_QUOTA, ATTACHED_POLICIES_MAX, planWorkerPolicies } from './worker-policy.ts';

export interface WorkerApp {
  readonly options: WorkerStackOptions;
  /** The worker's managed policies, as many as IAM's policy size needs (1 up to 20-odd domains). */
  readonly policies: readonly PolicyStack[];
  readonly shared: SharedStack;
  /** One per domain, in the order the domains were given. */
  readonly domains: readonly DomainStack[];
}

/**
 * Adds the stacks (and the AwsSolutions checks) to `app`, in deploy order: the worker's policies, the shared stack,
 * one stack per domain. Bootstrapless: no stack has assets and every template stays under CloudFormation's
 * 51,200-byte limit for a template sent inline, so `cdk deploy` needs no `cdk bootstrap`, and each synthesized
 * template deploys as it is through plain CloudFormation. Stack ids are the stack names (`cdk deploy <name>`).
 */
export function buildApp(app: App): WorkerApp {
  const options = readStackOptions((key) => app.node.tryGetContext(key));
  const plan = planWorkerPolicies(options);
  if (plan.length > ATTACHED_POLICIES_MAX) {
    throw new StackOptionsError(
      `context domains: the worker would need ${plan.length} IAM policies for these names, more than the ${ATTACHED_POLICIES_MAX} IAM attaches to one role or user`,
    );
  }
  const policies = plan.map((statements, i) => {
    const name = policyName(options.stackName, i + 1);
    return new PolicyStack(app, name, {
      stackName: name,
      description: `unified-email-worker: one of the worker's IAM policies (${options.stackName}-policy-*)`,
      synthesizer: new BootstraplessSynthesizer(),
      policyName: name,
      statements,
    });
  });
  const shared = new SharedStack(app, options.stackName, {
    stackName: options.stackName,
    description:
      `unified-email-worker: the tables, the receipt rule set, the SES configuration set and its events queue, and ` +
      `the list of the worker's IAM policies, for the domains in stacks ${options.stackName}-<domain>`,
    synthesizer: new BootstraplessSynthesizer(),
    options,
    policyNames: policies.map((p) => p.policy.managedPolicyName!),
  });
  if (policies.length > ATTACHED_POLICIES_QUOTA) {
    Annotations.of(shared).addWarningV2(
      'unified-worker:attached-policies',
      `the worker needs ${policies.length} managed policies; IAM attaches ${ATTACHED_POLICIES_QUOTA} per role or user unless the quota is raised (up to ${ATTACHED_POLICIES_MAX})`,
    );
  }
  // Names link them, not exports: deploy order only, so the worker's permissions exist before its resources.
  for (const policy of policies)
    shared.addStackDependency(policy, 'the worker policies it lists and attaches');
  const domains = options.domains.map((domain) => {
    const stackName = domainStackName(options.stackName, domain);
    const stack = new DomainStack(app, stackName, {
      stackName,
      description: `unified-email-worker: SES identity and receipt rule, S3 bucket, SNS topic and SQS queues for ${domain}`,
      synthesizer: new BootstraplessSynthesizer(),
      domain,
      options,
    });
    // Deploy order only (names, not exports, link them): the rule set and configuration set exist first.
    stack.addStackDependency(shared, 'its receipt rule goes into the shared rule set');
    return stack;
  });
  Validations.of(app).addPlugins(
    new AwsSolutionsChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }),
  );
  return { options, policies, shared, domains };
}
