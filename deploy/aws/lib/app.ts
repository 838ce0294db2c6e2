import { BootstraplessSynthesizer, Validations, type App } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { readStackOptions } from './options.ts';
import { UnifiedWorkerStack } from './unified-worker-stack.ts';

/** The construct id of the stack; the committed template is `<STACK_ID>` synthesized with cdk.json's context. */
export const STACK_ID = 'UnifiedWorker';

/**
 * Adds the stack (and the AwsSolutions checks) to `app`. Bootstrapless: the stack has no assets, so `cdk deploy`
 * needs no `cdk bootstrap`, and the synthesized template deploys as it is through CloudFormation.
 */
export function buildApp(app: App): UnifiedWorkerStack {
  const options = readStackOptions((key) => app.node.tryGetContext(key));
  const stack = new UnifiedWorkerStack(app, STACK_ID, {
    stackName: (app.node.tryGetContext('stackName') as string | undefined) ?? 'unified-worker',
    description: `unified-email-worker: SES receiving, S3, SNS, SQS, DynamoDB and IAM for ${options.domains.join(', ')}`,
    synthesizer: new BootstraplessSynthesizer(),
    options,
  });
  Validations.of(app).addPlugins(
    new AwsSolutionsChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }),
  );
  return stack;
}
