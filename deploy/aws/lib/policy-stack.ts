/**
 * One of the worker's managed policies, in a stack of its own: `<stackName>-policy-<n>`, holding the policy of the
 * same name (lib/worker-policy.ts plans what each one grants). The name, not an export, is how the shared stack's
 * outputs and IRSA role refer to it, and it stays the same when the domain list changes.
 */
import { CfnOutput, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference.js';
import type { Construct } from 'constructs';
import type { IamResourceKind } from '../../../src/aws/resources.ts';
import { renderDocument, renderResources, type StatementPlan } from './worker-policy.ts';

/** Why a kind's resources may hold a wildcard; a wildcard anywhere else fails cdk-nag's AwsSolutions-IAM5. */
const WILDCARD_REASONS: Partial<Record<IamResourceKind, string>> = {
  'mail-bucket-objects':
    'Objects of the mail buckets (<bucket>/*): the key is the SES message id, unknown in advance.',
  account: 'Only ses:GetAccount (the account sending quota) is on *: it has no resource type to name.',
};

export interface PolicyStackProps extends StackProps {
  /** The managed policy's name (the stack's name too). */
  readonly policyName: string;
  readonly statements: readonly StatementPlan[];
}

export class PolicyStack extends Stack {
  readonly policy: iam.CfnManagedPolicy;

  constructor(scope: Construct, id: string, props: PolicyStackProps) {
    super(scope, id, props);
    this.policy = new iam.CfnManagedPolicy(this, 'WorkerPolicy', {
      managedPolicyName: props.policyName,
      // Constant: a named policy cannot be replaced in place, and a new description would replace it.
      description: 'unified-email-worker: AWS calls the daemon makes, on this deployment’s resources',
      policyDocument: renderDocument(props.statements),
    });
    for (const statement of props.statements) {
      const resource = flattenCfnReference(renderResources(statement));
      const reason = WILDCARD_REASONS[statement.kind];
      if (!resource.includes('*') || reason === undefined) continue;
      Validations.of(this.policy).acknowledge({ id: `AwsSolutions-IAM5[Resource::${resource}]`, reason });
    }
    new CfnOutput(this, 'PolicyArn', {
      description: 'One of the worker policies; attach every one (WorkerPolicyArns of the shared stack)',
      value: this.policy.ref,
    });
  }
}
