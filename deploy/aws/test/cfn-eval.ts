/**
 * Evaluates the CloudFormation intrinsics the worker policies use (Ref of pseudo parameters, Fn::Join, Fn::Sub,
 * Fn::Split) as CloudFormation would in a given account and region, so tests can assert on the ARNs IAM receives.
 * Anything else is an error: a test must not pass on a value it cannot read.
 */
export const TEST_ENV: Readonly<Record<string, string>> = {
  'AWS::Partition': 'aws',
  'AWS::Region': 'eu-west-1',
  'AWS::AccountId': '123456789012',
};

type Value = string | string[];

function substitute(body: string, vars: Readonly<Record<string, string>>): string {
  return body.replace(/\$\{([^}]+)\}/g, (_m, name: string) => {
    const value = vars[name];
    if (value === undefined) throw new Error(`Fn::Sub: no value for \${${name}}`);
    return value;
  });
}

function asString(value: Value, where: string): string {
  if (typeof value !== 'string') throw new Error(`${where}: expected a string, got a list`);
  return value;
}

export function evaluate(node: unknown, env: Readonly<Record<string, string>> = TEST_ENV): Value {
  if (typeof node === 'string') return node;
  if (Array.isArray(node)) return node.map((item) => asString(evaluate(item, env), 'list item'));
  if (node === null || typeof node !== 'object') throw new Error(`cannot evaluate ${JSON.stringify(node)}`);
  const entries = Object.entries(node);
  if (entries.length !== 1) throw new Error(`not an intrinsic: ${JSON.stringify(node)}`);
  const [fn, arg] = entries[0]!;
  switch (fn) {
    case 'Ref': {
      const value = env[arg as string];
      if (value === undefined) throw new Error(`Ref ${String(arg)} is not a pseudo parameter`);
      return value;
    }
    case 'Fn::Join': {
      const [delimiter, items] = arg as [string, unknown[]];
      return items.map((item) => asString(evaluate(item, env), 'Fn::Join item')).join(delimiter);
    }
    case 'Fn::Sub': {
      if (typeof arg === 'string') return substitute(arg, env);
      const [body, vars] = arg as [string, Record<string, unknown>];
      const values = Object.fromEntries(
        Object.entries(vars).map(([k, v]) => [k, asString(evaluate(v, env), `Fn::Sub variable ${k}`)]),
      );
      return substitute(body, { ...env, ...values });
    }
    case 'Fn::Split': {
      const [delimiter, source] = arg as [string, unknown];
      return asString(evaluate(source, env), 'Fn::Split source').split(delimiter);
    }
    default:
      throw new Error(`cannot evaluate ${fn}`);
  }
}
