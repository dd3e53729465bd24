/**
 * The Helm chart and the image, checked without a cluster or a Docker
 * engine: `helm lint --strict` and `helm template` for every value profile in
 * charts/runnel/ci, every rendered object validated by kubeconform against the
 * strict schemas vendored in charts/runnel/tests/schemas (offline), and
 * assertions on what keeps streams alive and pods hardened. `npm test` builds
 * helm and kubeconform once into .tools/bin and passes their paths in
 * RUNNEL_TEST_HELM and RUNNEL_TEST_KUBECONFORM.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { REPO_ROOT } from "@runnel/launcher";
import { parse, parseAllDocuments } from "yaml";

const run = promisify(execFile);
const CHART = join(REPO_ROOT, "charts", "runnel");
const SCHEMAS = join(CHART, "tests", "schemas");
/** The Kubernetes version the chart is rendered for and the vendored schemas describe. */
const KUBE_VERSION = "1.35.0";
const NAMESPACE = "runnel";
const RELEASE = "rn";
const FULLNAME = "rn-runnel";

// biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes objects are read field by field below, after kubeconform validated their shape.
type Json = any;
type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Json;
  data?: Json;
};

function tool(variable: string, name: string): string {
  const path = process.env[variable];
  assert.ok(path, `${variable} is set by npm test's bootstrap (a ${name} built into .tools/bin when missing)`);
  return path;
}
const helm = () => tool("RUNNEL_TEST_HELM", "helm");
const kubeconform = () => tool("RUNNEL_TEST_KUBECONFORM", "kubeconform");

async function render(profile: string, extra: string[] = []): Promise<{ text: string; objects: K8sObject[] }> {
  const { stdout } = await run(
    helm(),
    ["template", RELEASE, CHART, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", join(CHART, "ci", profile), ...extra],
    { maxBuffer: 32 * 1024 * 1024 },
  );
  const objects = parseAllDocuments(stdout)
    .map((document) => document.toJS() as K8sObject | null)
    .filter((object): object is K8sObject => object !== null);
  return { text: stdout, objects };
}

async function validate(manifests: string): Promise<{ ok: boolean; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), "runnel-chart-"));
  try {
    const file = join(dir, "rendered.yaml");
    await writeFile(file, manifests);
    const location = `${SCHEMAS}/{{ .ResourceKind }}{{ .KindSuffix }}.json`;
    // No -ignore-missing-schemas: a kind without a vendored schema fails.
    const result = await run(kubeconform(), ["-strict", "-summary", "-output", "text", "-schema-location", location, file]).then(
      ({ stdout }) => ({ ok: true, output: stdout }),
      (error: { stdout?: string; stderr?: string }) => ({ ok: false, output: `${error.stdout ?? ""}${error.stderr ?? ""}` }),
    );
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const byKind = (objects: K8sObject[], kind: string) => objects.filter((object) => object.kind === kind);
function named(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((object) => object.kind === kind && object.metadata.name === name);
  assert.ok(found, `${kind} ${name} is rendered`);
  return found;
}
const podSpec = (object: K8sObject): Json => (object.kind === "Pod" ? object.spec : object.spec.template.spec);
const containers = (object: K8sObject): Json[] => podSpec(object).containers;
const env = (container: Json, name: string): string | undefined => container.env?.find((entry: { name: string }) => entry.name === name)?.value;
const workloads = (objects: K8sObject[]) => objects.filter((object) => ["Deployment", "StatefulSet", "Pod"].includes(object.kind));
const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([key, value]) => labels[key] === value);
const seconds = (duration: string) => Number(/^(\d+)s$/.exec(duration)?.[1] ?? Number.NaN);

const PROFILES = readdirSync(join(CHART, "ci"))
  .filter((file) => file.endsWith("-values.yaml"))
  .sort();

test("the CI value profiles cover default, existing NATS, HA, Gateway API and Ingress", () => {
  for (const profile of ["default", "existing-nats", "ha", "gateway-api", "ingress"])
    assert.ok(PROFILES.includes(`${profile}-values.yaml`), `ci/${profile}-values.yaml`);
});

test("helm lint --strict passes for every profile", async () => {
  for (const profile of PROFILES) {
    const { stdout } = await run(helm(), ["lint", "--strict", "--kube-version", KUBE_VERSION, CHART, "-f", join(CHART, "ci", profile)]);
    assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/, profile);
  }
});

test("kubeconform with the vendored schemas rejects a broken object (the validation is real)", async () => {
  const broken =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\nspec:\n  replica: 2\n  selector: { matchLabels: { a: b } }\n  template: { metadata: { labels: { a: b } }, spec: { containers: [{ name: c, image: i }] } }\n";
  const result = await validate(broken);
  assert.equal(result.ok, false, result.output);
  assert.match(result.output, /replica/);
});

test("values.schema.json rejects :latest, a single control-plane replica and an HTTPRoute without a parent", async () => {
  for (const [flag, message] of [
    ["image.tag=latest", /image\/tag/],
    ["controlPlane.replicas=1", /controlPlane\/replicas/],
    ["gateway.httpRoute.enabled=true", /parentRefs/],
    ["nats.replicas=2", /nats\/replicas/],
  ] as const) {
    await assert.rejects(render("default-values.yaml", ["--set", flag]), (error: { stderr?: string }) => message.test(error.stderr ?? ""), flag);
  }
});

for (const profile of PROFILES) {
  describe(`profile ${profile}`, async () => {
    const { text, objects } = await render(profile);
    const values = parse(readFileSync(join(CHART, "ci", profile), "utf8")) ?? {};
    const externalNats: string | undefined = values.nats?.external?.url;
    const deployment = (component: string) => named(objects, "Deployment", `${FULLNAME}-${component}`);

    test("every rendered object is valid against the vendored Kubernetes/CRD schemas (strict)", async () => {
      const result = await validate(text);
      assert.ok(result.ok, result.output);
      assert.match(result.output, new RegExp(`${objects.length} resources found.*Valid: ${objects.length}, Invalid: 0, Errors: 0, Skipped: 0`));
    });

    test("images are pinned: no :latest, no untagged image", () => {
      for (const workload of workloads(objects)) {
        for (const container of containers(workload)) {
          assert.match(container.image, /(:[\w][\w.-]*|@sha256:[a-f0-9]{64})$/, `${workload.metadata.name}/${container.name}: ${container.image}`);
          assert.doesNotMatch(container.image, /:latest$/, `${workload.metadata.name}/${container.name}`);
        }
      }
    });

    test("every pod and container is hardened", () => {
      for (const workload of workloads(objects)) {
        const spec = podSpec(workload);
        assert.equal(spec.securityContext.runAsNonRoot, true, workload.metadata.name);
        assert.equal(spec.securityContext.seccompProfile.type, "RuntimeDefault", workload.metadata.name);
        assert.equal(spec.automountServiceAccountToken, false, workload.metadata.name);
        for (const container of containers(workload)) {
          const where = `${workload.metadata.name}/${container.name}`;
          assert.equal(container.securityContext.readOnlyRootFilesystem, true, where);
          assert.equal(container.securityContext.allowPrivilegeEscalation, false, where);
          assert.deepEqual(container.securityContext.capabilities.drop, ["ALL"], where);
          assert.ok(container.resources?.requests?.memory && container.resources?.limits?.memory, `${where}: memory request and limit`);
          // A read-only root needs a writable /tmp.
          assert.ok(
            container.volumeMounts?.some((mount: { mountPath: string }) => mount.mountPath === "/tmp" || mount.mountPath === "/data"),
            `${where}: a writable mount`,
          );
        }
      }
    });

    test("ingress, worker and control plane run at least two replicas", () => {
      const hpas = byKind(objects, "HorizontalPodAutoscaler");
      for (const component of ["ingress", "worker", "control-plane"]) {
        const hpa = hpas.find((object) => object.spec.scaleTargetRef.name === `${FULLNAME}-${component}`);
        const replicas = hpa ? hpa.spec.minReplicas : deployment(component).spec.replicas;
        assert.ok(replicas >= 2, `${component}: ${replicas}`);
      }
    });

    test("probes: HTTP for ingress and worker with readiness ≠ liveness, native gRPC for the control plane", () => {
      for (const component of ["ingress", "worker"]) {
        const [container] = containers(deployment(component));
        assert.equal(container.readinessProbe.httpGet.path, "/readyz", component);
        assert.equal(container.livenessProbe.httpGet.path, "/healthz", component);
      }
      const [controlPlane] = containers(deployment("control-plane"));
      assert.equal(controlPlane.readinessProbe.grpc.port, 50051);
      assert.equal(controlPlane.startupProbe.grpc.port, 50051);
      assert.equal(controlPlane.livenessProbe.grpc, undefined, "liveness is not the readiness check");
      assert.equal(controlPlane.livenessProbe.httpGet.path, "/healthz");
    });

    test("the lifecycle never cuts a stream: preStop sleep, SHUTDOWN_DELAY_MS, grace periods, deletion cost", () => {
      const ingress = deployment("ingress");
      const [container] = containers(ingress);
      const sleep = container.lifecycle.preStop.sleep.seconds;
      const delay = Number(env(container, "SHUTDOWN_DELAY_MS"));
      assert.ok(sleep >= 5, `preStop sleep ${sleep}`);
      assert.ok(delay > 0, "SHUTDOWN_DELAY_MS");
      const config = parse(named(objects, "ConfigMap", `${FULLNAME}-config`).data["runnel.yaml"]);
      // preStop + delay + the ingress's stream drain (ingress.drainTimeout), with room to close.
      const ingressDrain = seconds(config.ingress?.drainTimeout ?? "10s");
      assert.ok(podSpec(ingress).terminationGracePeriodSeconds >= sleep + delay / 1000 + ingressDrain + 5, "ingress grace period");
      assert.equal(ingress.spec.strategy.rollingUpdate.maxUnavailable, 0);
      const drain = seconds(config.worker?.drainTimeout ?? "30s");
      assert.ok(podSpec(deployment("worker")).terminationGracePeriodSeconds > drain, "worker grace period > worker.drainTimeout");
      for (const component of ["ingress", "worker"]) {
        assert.ok(deployment(component).spec.template.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"] !== undefined, component);
      }
      for (const hpa of byKind(objects, "HorizontalPodAutoscaler")) {
        assert.equal(hpa.apiVersion, "autoscaling/v2");
        assert.ok(hpa.spec.behavior.scaleDown.stabilizationWindowSeconds >= 300, `${hpa.metadata.name}: slow scale-down`);
      }
    });

    test("ingress and workers reach the control plane through its headless Service", () => {
      const headless = named(objects, "Service", `${FULLNAME}-control-plane-headless`);
      assert.equal(headless.spec.clusterIP, "None");
      for (const component of ["ingress", "worker"]) {
        const url = env(containers(deployment(component))[0], "CONTROL_PLANE_URL");
        assert.equal(url, `dns:///${FULLNAME}-control-plane-headless.${NAMESPACE}.svc.cluster.local:50051`, component);
      }
    });

    test("PodDisruptionBudgets cover every long-running component", () => {
      const pdbs = byKind(objects, "PodDisruptionBudget");
      const covered = ["ingress", "worker", "control-plane", ...(externalNats ? [] : ["nats"])];
      for (const component of covered) {
        const target = objects.find((object) => ["Deployment", "StatefulSet"].includes(object.kind) && object.metadata.name === `${FULLNAME}-${component}`);
        assert.ok(target, component);
        assert.ok(
          pdbs.some((pdb) => matches(pdb.spec.selector.matchLabels, target.spec.template.metadata.labels)),
          `a PDB selects ${component}`,
        );
      }
    });

    test("NetworkPolicies select every workload and allow the design's paths", () => {
      const policies = byKind(objects, "NetworkPolicy");
      for (const workload of workloads(objects)) {
        const labels = workload.kind === "Pod" ? workload.metadata.labels : workload.spec.template.metadata.labels;
        assert.ok(
          policies.some((policy) => matches(policy.spec.podSelector.matchLabels, labels)),
          `${workload.kind} ${workload.metadata.name} is selected by a NetworkPolicy`,
        );
      }
      for (const policy of policies) assert.deepEqual(policy.spec.policyTypes, ["Ingress", "Egress"], policy.metadata.name);
      const controlPlane = named(objects, "NetworkPolicy", `${FULLNAME}-control-plane`);
      assert.deepEqual(controlPlane.spec.ingress[0].ports, [{ port: 50051, protocol: "TCP" }]);
      const worker = named(objects, "NetworkPolicy", `${FULLNAME}-worker`);
      assert.ok(
        worker.spec.egress.some((rule: { ports?: { port: number }[] }) => rule.ports?.some((port) => port.port === 443)),
        "workers reach providers on 443",
      );
    });

    test("NATS: the chart's 3-node JetStream StatefulSet, or the existing NATS everywhere", () => {
      const natsUrls = ["ingress", "worker", "control-plane"].map((component) => env(containers(deployment(component))[0], "NATS_URL"));
      if (externalNats) {
        assert.equal(byKind(objects, "StatefulSet").length, 0, "no NATS deployed");
        assert.deepEqual(natsUrls, [externalNats, externalNats, externalNats]);
        return;
      }
      const nats = named(objects, "StatefulSet", `${FULLNAME}-nats`);
      const replicas = nats.spec.replicas;
      assert.deepEqual(new Set(natsUrls), new Set([`nats://${FULLNAME}-nats.${NAMESPACE}.svc.cluster.local:4222`]));
      const [container] = containers(nats);
      assert.match(container.image, /^nats:2\.15\.2-alpine$/, "the release scripts/bootstrap.mjs tests against");
      assert.deepEqual(container.lifecycle.preStop.exec.command, ["nats-server", "-sl=ldm=/var/run/nats/nats.pid"]);
      const conf: string = named(objects, "ConfigMap", `${FULLNAME}-nats-config`).data["nats.conf"];
      assert.match(conf, /jetstream \{/);
      assert.match(conf, /lame_duck_duration: \d+s/);
      if (replicas > 1) {
        assert.equal(replicas, 3);
        assert.equal((conf.match(/nats:\/\/[\w.-]+:6222/g) ?? []).length, 3, "a route to every node");
        assert.equal(nats.spec.volumeClaimTemplates[0].metadata.name, "data", "persistent volumes");
      }
    });

    test("runnel.yaml in the ConfigMap; keys come from a Secret", () => {
      const config = parse(named(objects, "ConfigMap", `${FULLNAME}-config`).data["runnel.yaml"]);
      assert.ok(config.providers.length >= 1 && config.models.length >= 1);
      const secretName: string = values.secrets?.existingSecret || `${FULLNAME}-secrets`;
      assert.equal(byKind(objects, "Secret").length, values.secrets?.existingSecret ? 0 : 1);
      for (const component of ["ingress", "worker", "control-plane"]) {
        assert.deepEqual(containers(deployment(component))[0].envFrom, [{ secretRef: { name: secretName } }], component);
      }
      if (values.mockProvider?.enabled) {
        assert.ok(config.models.some((model: { name: string }) => model.name === "mock"));
        named(objects, "Deployment", `${FULLNAME}-mock-provider`);
      } else {
        assert.equal(
          objects.some((object) => object.metadata.name === `${FULLNAME}-mock-provider`),
          false,
          "the mock provider is off by default",
        );
      }
    });

    if (values.gateway?.httpRoute?.enabled) {
      test("the HTTPRoute never times a stream out and routes to the ingress", () => {
        const [route] = byKind(objects, "HTTPRoute");
        assert.ok(route);
        for (const rule of route.spec.rules) {
          assert.equal(rule.timeouts.request, "0s");
          assert.equal(rule.backendRefs[0].name, `${FULLNAME}-ingress`);
        }
      });
    }

    if (values.ingressResource?.enabled) {
      test("the Ingress streams unbuffered for an hour", () => {
        const [ingress] = byKind(objects, "Ingress");
        assert.ok(ingress);
        const annotations = ingress.metadata.annotations ?? {};
        assert.equal(annotations["nginx.ingress.kubernetes.io/proxy-buffering"], "off");
        assert.equal(annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"], "off");
        assert.ok(Number(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600);
        assert.ok(Number(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600);
        assert.equal(ingress.spec.rules[0].http.paths[0].backend.service.name, `${FULLNAME}-ingress`);
      });
    }

    if (values.mockProvider?.enabled) {
      test("the helm test hook streams a completion with curl -N", () => {
        const pod = byKind(objects, "Pod").find((object) => object.metadata.annotations?.["helm.sh/hook"] === "test");
        assert.ok(pod, "a test hook Pod");
        const script = containers(pod)[0].args.join("\n");
        assert.match(script, /curl -N/);
        assert.match(script, new RegExp(`${FULLNAME}-ingress:80/v1/chat/completions`));
        assert.ok(script.includes("data: \\[DONE\\]"), "checks the [DONE] terminator");
      });
    }

    test("the ingress serves the console; only it is told where the trace backend's query API is", () => {
      const [ingress] = containers(deployment("ingress"));
      assert.equal(env(ingress, "RUNNEL_TRACE_QUERY_URL"), values.console?.traceQueryUrl || undefined);
      assert.equal(env(ingress, "RUNNEL_TRACE_LINK"), values.console?.traceLink || undefined);
      for (const component of ["worker", "control-plane"])
        assert.equal(env(containers(deployment(component))[0], "RUNNEL_TRACE_QUERY_URL"), undefined, component);
      if (values.networkPolicy?.traceQueryEgress?.length) {
        const policy = named(objects, "NetworkPolicy", `${FULLNAME}-ingress`);
        assert.ok(
          policy.spec.egress.some((rule: { ports?: { port: number }[] }) => rule.ports?.some((port) => port.port === 16686)),
          "the ingress may reach the query API",
        );
      }
    });

    if (values.otel?.endpoint) {
      test("OTel values set the standard OTEL_* variables on every service; metrics are scraped", () => {
        for (const component of ["ingress", "worker", "control-plane"]) {
          const [container] = containers(deployment(component));
          assert.equal(env(container, "OTEL_EXPORTER_OTLP_ENDPOINT"), values.otel.endpoint, component);
          assert.equal(env(container, "OTEL_SERVICE_NAME"), `runnel-${component}`);
          // The telemetry preload is loaded before the service (it is what reads OTEL_*), and /metrics has its own port.
          assert.deepEqual(container.args.slice(0, 2), ["--import", `./services/${component}/dist/instrument.js`], component);
          assert.ok(existsSync(join(REPO_ROOT, "services", component, "src", "instrument.ts")), component);
          assert.equal(env(container, "METRICS_PORT"), String(values.serviceMonitor?.port ?? 9464), component);
        }
        assert.equal(byKind(objects, "ServiceMonitor").length, values.serviceMonitor?.enabled ? 1 : 0);
        const pods = byKind(objects, "HorizontalPodAutoscaler").flatMap((hpa) => hpa.spec.metrics.filter((metric: { type: string }) => metric.type === "Pods"));
        assert.equal(pods.length, 2, "active-streams metric on ingress and worker");
      });
    }
  });
}

describe("the image (deploy/Dockerfile; no Docker engine here, so its properties are read)", () => {
  const dockerfile = readFileSync(join(REPO_ROOT, "deploy", "Dockerfile"), "utf8");
  const lines = dockerfile.split("\n").filter((line) => !line.trim().startsWith("#"));
  const froms = lines.filter((line) => /^FROM\s/i.test(line));
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));

  test("multi-stage, on a Node LTS pinned by version, never :latest", () => {
    assert.ok(froms.length >= 2, "multi-stage");
    const nodeVersion = /^ARG NODE_VERSION=(\d+)\.(\d+)\.(\d+)$/m.exec(dockerfile);
    assert.ok(nodeVersion, "NODE_VERSION pinned to a full version");
    assert.equal(Number(nodeVersion[1]) % 2, 0, "an even (LTS) Node major");
    for (const from of froms) assert.match(from, /^FROM node:\$\{NODE_VERSION\}/, from);
    assert.doesNotMatch(dockerfile, /:latest\b/);
  });

  test("the runtime stage runs as a numeric non-root user with production dependencies only", () => {
    const user = /^USER\s+(\d+)(?::(\d+))?\s*$/m.exec(finalStage);
    assert.ok(user, "USER uid[:gid] in the final stage");
    assert.notEqual(Number(user[1]), 0);
    assert.match(dockerfile, /--omit=dev/);
    assert.match(finalStage, /COPY --chown=0:0 proto \.\/proto/, "the control plane reads proto/ at run time");
    assert.match(finalStage, /ENTRYPOINT \["node"\]/, "node is PID 1: SIGTERM reaches the service");
  });

  test("every entrypoint the image and the chart use exists in the repository", () => {
    const chartTemplates = readdirSync(join(CHART, "templates"))
      .filter((file) => file.endsWith(".yaml"))
      .map((file) => readFileSync(join(CHART, "templates", file), "utf8"))
      .join("\n");
    const entrypoints = new Set([...`${dockerfile}\n${chartTemplates}`.matchAll(/services\/([\w-]+)\/dist\/main\.js/g)].map((match) => match[1]));
    assert.deepEqual([...entrypoints].sort(), ["control-plane", "ingress", "mock-provider", "worker"]);
    for (const service of entrypoints) assert.ok(existsSync(join(REPO_ROOT, "services", service, "src", "main.ts")), service);
    assert.ok(existsSync(join(REPO_ROOT, "proto")));
  });

  test("the install stages copy every workspace's package.json, which npm ci needs to install from the lock file", () => {
    const workspaces = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { workspaces: string[] }).workspaces;
    const stages = dockerfile.split(/\nFROM /).filter((stage) => /npm ci/.test(stage));
    assert.ok(stages.length >= 2, "a build and a production-dependencies stage install with npm ci");
    for (const stage of stages) {
      for (const workspace of workspaces)
        assert.match(stage, new RegExp(`COPY ${workspace}/package\\.json ${workspace}/`), `${workspace} in a stage running npm ci`);
    }
  });

  test(".dockerignore keeps node_modules, build output and local tools out of the context", () => {
    const ignore = readFileSync(join(REPO_ROOT, ".dockerignore"), "utf8").split("\n");
    for (const entry of ["**/node_modules", "**/dist", ".git", ".tools"]) assert.ok(ignore.includes(entry), entry);
  });
});
