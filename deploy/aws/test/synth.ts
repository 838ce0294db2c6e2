/**
 * The app synthesized in-process as `cdk synth` builds it (cdk.json's context plus overrides), into a temp dir:
 * the stacks, their template files as written, the measures against CloudFormation's limits, and cdk-nag's report.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { App, type Stack } from 'aws-cdk-lib';
import { buildApp, type WorkerApp } from '../lib/app.ts';
import { measureTemplate, type TemplateMeasure } from '../lib/limits.ts';

export const APP_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CDK_JSON = JSON.parse(readFileSync(path.join(APP_DIR, 'cdk.json'), 'utf8')) as {
  context: Record<string, unknown>;
};

export type Json = Record<string, unknown>;
export interface Resource {
  Type: string;
  Properties: Json;
  DependsOn?: string[];
  Metadata?: Json;
  DeletionPolicy?: string;
}
export interface TemplateJson {
  Description?: string;
  Resources: Record<string, Resource>;
  Outputs: Record<string, Json>;
  Parameters?: Json;
  Rules?: Json;
}

export interface ValidationReport {
  pluginReports: Array<{
    pluginName: string;
    conclusion: string;
    violations: Array<{ ruleName: string; violatingConstructs: Array<{ constructPath: string }> }>;
  }>;
}

export interface Synthesized {
  readonly app: WorkerApp;
  readonly outdir: string;
  /** Template text per stack name, as the synth wrote it. */
  readonly files: ReadonlyMap<string, string>;
  readonly measures: readonly TemplateMeasure[];
  readonly report: ValidationReport;
  template(stack: Stack): TemplateJson;
}

const outdirs: string[] = [];

/** Removes every temp dir {@link synth} made (call from the test file's `after`). */
export function removeSynthOutput(): void {
  for (const dir of outdirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** `count` distinct domains of about `length` characters, e.g. `d001.example.org`. */
export function sampleDomains(count: number, length = 20): string[] {
  return Array.from({ length: count }, (_, i) => {
    const suffix = `-${String(i + 1).padStart(3, '0')}.example.org`;
    return `${'mail'.padEnd(Math.max(1, length - suffix.length), 'x')}${suffix}`;
  });
}

export function synth(context: Record<string, unknown>, extend?: (app: WorkerApp) => void): Synthesized {
  const outdir = mkdtempSync(path.join(tmpdir(), 'unified-worker-cdk-'));
  outdirs.push(outdir);
  // The CLI adds these from cdk.json's "versionReporting"/"pathMetadata"; the committed templates are built with them.
  const cdkApp = new App({
    outdir,
    analyticsReporting: false,
    context: { ...CDK_JSON.context, ...context },
    postCliContext: { 'aws:cdk:enable-path-metadata': false },
  });
  const app = buildApp(cdkApp);
  extend?.(app);
  try {
    cdkApp.synth();
  } catch (error) {
    // A failing policy-validation plugin (cdk-nag) makes synth throw after writing its report, which is what we read.
    if (!(error instanceof Error && error.name === 'ValidationFailed')) throw error;
  }
  const files = new Map(
    [...app.policies, app.shared, ...app.domains].map((s) => [
      s.stackName,
      readFileSync(path.join(outdir, s.templateFile), 'utf8'),
    ]),
  );
  return {
    app,
    outdir,
    files,
    measures: [...files].map(([name, json]) => measureTemplate(name, json)),
    report: JSON.parse(readFileSync(path.join(outdir, 'validation-report.json'), 'utf8')) as ValidationReport,
    template: (stack) => JSON.parse(files.get(stack.stackName)!) as TemplateJson,
  };
}
