/**
 * The CDK app: `npx cdk synth` / `npx cdk deploy --all` in deploy/aws. Options come from `-c key=value` (or cdk.json's
 * context; see lib/options.ts and deploy/aws/README.md). There are no default domains: `-c domains=...` is required.
 */
import { App } from 'aws-cdk-lib';
import { buildApp } from '../lib/app.ts';
import { StackOptionsError } from '../lib/options.ts';

const app = new App();
try {
  buildApp(app);
} catch (error) {
  // A bad context value is the admin's input: one line naming it, not a stack trace.
  if (!(error instanceof StackOptionsError)) throw error;
  console.error(`unified-worker CDK app: ${error.message}`);
  process.exit(2);
}
app.synth();
