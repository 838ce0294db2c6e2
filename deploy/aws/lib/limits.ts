/**
 * CloudFormation's limits on one stack's template, and a template measured against them: the JSON that `cdk synth`
 * writes (what `aws cloudformation deploy --template-file` sends) and the YAML the CDK CLI sends as TemplateBody.
 */
import { stringify } from 'yaml';

export const CLOUDFORMATION_LIMITS = {
  /** A template body sent in the request, not from S3: what a deploy without `cdk bootstrap` can use. */
  inlineTemplateBytes: 51_200,
  /** A template CloudFormation reads from S3. */
  s3TemplateBytes: 1_048_576,
  resources: 500,
  outputs: 200,
  parameters: 200,
  mappings: 200,
  descriptionChars: 1_024,
} as const;

export interface TemplateMeasure {
  readonly stack: string;
  readonly jsonBytes: number;
  readonly yamlBytes: number;
  readonly resources: number;
  readonly outputs: number;
  readonly parameters: number;
  readonly mappings: number;
  readonly descriptionChars: number;
}

interface TemplateShape {
  Description?: string;
  Resources?: Record<string, unknown>;
  Outputs?: Record<string, unknown>;
  Parameters?: Record<string, unknown>;
  Mappings?: Record<string, unknown>;
}

/** The CDK CLI's serializer (toolkit-lib's yaml-cfn `serialize`), whose output length it compares with 50 KiB. */
export function templateAsCliSendsIt(template: unknown): string {
  return stringify(template, { schema: 'yaml-1.1', lineWidth: 0 });
}

/** `json` is the template file as written by the synth. */
export function measureTemplate(stack: string, json: string): TemplateMeasure {
  const template = JSON.parse(json) as TemplateShape;
  const count = (section: Record<string, unknown> | undefined) => Object.keys(section ?? {}).length;
  return {
    stack,
    jsonBytes: Buffer.byteLength(json),
    yamlBytes: Buffer.byteLength(templateAsCliSendsIt(template)),
    resources: count(template.Resources),
    outputs: count(template.Outputs),
    parameters: count(template.Parameters),
    mappings: count(template.Mappings),
    descriptionChars: [...(template.Description ?? '')].length,
  };
}

/** Every limit `m` passes, as one line each; empty when the stack deploys without `cdk bootstrap`. */
export function limitProblems(m: TemplateMeasure): string[] {
  const L = CLOUDFORMATION_LIMITS;
  const checks: Array<[boolean, string]> = [
    [m.jsonBytes <= L.inlineTemplateBytes, `JSON template ${m.jsonBytes} bytes > ${L.inlineTemplateBytes}`],
    [m.yamlBytes <= L.inlineTemplateBytes, `YAML template ${m.yamlBytes} bytes > ${L.inlineTemplateBytes}`],
    [m.resources <= L.resources, `${m.resources} resources > ${L.resources}`],
    [m.outputs <= L.outputs, `${m.outputs} outputs > ${L.outputs}`],
    [m.parameters <= L.parameters, `${m.parameters} parameters > ${L.parameters}`],
    [m.mappings <= L.mappings, `${m.mappings} mappings > ${L.mappings}`],
    [
      m.descriptionChars <= L.descriptionChars,
      `description ${m.descriptionChars} characters > ${L.descriptionChars}`,
    ],
  ];
  return checks.filter(([ok]) => !ok).map(([, problem]) => `${m.stack}: ${problem}`);
}
