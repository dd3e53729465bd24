// Regenerates the JSON schemas the chart test validates every rendered object
// against (charts/runnel/tests/schemas/), offline from then on: CI never
// downloads a schema. Run by hand when the Kubernetes or CRD versions move:
//
//   node scripts/vendor-k8s-schemas.mjs
//
// Sources, all fetched through the Go module proxy (`go mod download`):
// - k8s.io/kubernetes api/openapi-spec/swagger.json (the built-in kinds);
// - sigs.k8s.io/gateway-api's HTTPRoute CRD;
// - prometheus-operator's ServiceMonitor CRD.
// Output: one self-contained, strict (additionalProperties: false) draft-07
// schema per kind, named the way kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}`
// template expects (deployment-apps-v1.json, service-v1.json, …).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { ROOT } from "./bootstrap.mjs";

export const KUBERNETES_VERSION = "v1.35.4";
const GATEWAY_API_VERSION = "v1.4.0";
const PROMETHEUS_OPERATOR_VERSION = "v0.85.0";
const OUT = join(ROOT, "charts", "runnel", "tests", "schemas");

/** The built-in kinds the chart renders (plus Pod for the helm test hook). */
const KINDS = [
  ["apps", "v1", "Deployment"],
  ["apps", "v1", "StatefulSet"],
  ["", "v1", "Service"],
  ["", "v1", "ConfigMap"],
  ["", "v1", "Secret"],
  ["", "v1", "ServiceAccount"],
  ["", "v1", "Pod"],
  ["autoscaling", "v2", "HorizontalPodAutoscaler"],
  ["policy", "v1", "PodDisruptionBudget"],
  ["networking.k8s.io", "v1", "NetworkPolicy"],
  ["networking.k8s.io", "v1", "Ingress"],
];

function moduleDir(path, version) {
  const out = execFileSync("go", ["mod", "download", "-json", `${path}@${version}`], { encoding: "utf8" });
  return JSON.parse(out).Dir;
}

function fileName(apiVersion, kind) {
  const [groupOrVersion, version] = apiVersion.split("/");
  const suffix = version ? `-${groupOrVersion.split(".")[0]}-${version}` : `-${groupOrVersion}`;
  return `${kind.toLowerCase()}${suffix}.json`;
}

/** Strict, validator-neutral JSON Schema: no vendor keys or formats, closed objects, int-or-string made explicit. */
function harden(node) {
  if (Array.isArray(node)) return node.map(harden);
  if (node === null || typeof node !== "object") return node;
  if (node["x-kubernetes-int-or-string"] === true) return { oneOf: [{ type: "string" }, { type: "integer" }] };
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith("x-kubernetes-") || key === "format") continue;
    out[key] = key === "properties" || key === "definitions" ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, harden(v)])) : harden(value);
  }
  if (out.properties && out.additionalProperties === undefined && node["x-kubernetes-preserve-unknown-fields"] !== true) out.additionalProperties = false;
  return out;
}

function pinKind(schema, apiVersion, kind) {
  schema.properties.apiVersion = { type: "string", enum: [apiVersion] };
  schema.properties.kind = { type: "string", enum: [kind] };
  schema.required = [...new Set([...(schema.required ?? []), "apiVersion", "kind"])];
  return schema;
}

function builtIns() {
  const swagger = JSON.parse(readFileSync(join(moduleDir("k8s.io/kubernetes", KUBERNETES_VERSION), "api", "openapi-spec", "swagger.json"), "utf8"));
  const definitions = swagger.definitions;
  definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = { oneOf: [{ type: "string" }, { type: "integer" }] };
  definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = { oneOf: [{ type: "string" }, { type: "number" }] };
  const result = {};
  for (const [group, version, kind] of KINDS) {
    const name = Object.keys(definitions).find((key) =>
      (definitions[key]["x-kubernetes-group-version-kind"] ?? []).some((gvk) => gvk.group === group && gvk.version === version && gvk.kind === kind),
    );
    if (!name) throw new Error(`${group}/${version} ${kind} not in swagger.json`);
    const closure = new Set();
    const visit = (node) => {
      if (Array.isArray(node)) return node.forEach(visit);
      if (node === null || typeof node !== "object") return;
      if (typeof node.$ref === "string") {
        const ref = node.$ref.replace("#/definitions/", "");
        if (!closure.has(ref)) {
          closure.add(ref);
          visit(definitions[ref]);
        }
      }
      for (const value of Object.values(node)) visit(value);
    };
    visit(definitions[name]);
    const apiVersion = group ? `${group}/${version}` : version;
    const root = pinKind(harden(structuredClone(definitions[name])), apiVersion, kind);
    result[fileName(apiVersion, kind)] = {
      $schema: "http://json-schema.org/draft-07/schema#",
      description: `${apiVersion} ${kind}, Kubernetes ${KUBERNETES_VERSION}`,
      ...root,
      definitions: harden({ definitions: Object.fromEntries([...closure].sort().map((ref) => [ref, definitions[ref]])) }).definitions,
    };
  }
  return result;
}

function crd(file, source) {
  const result = {};
  for (const document of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = document.toJS();
    if (object?.kind !== "CustomResourceDefinition") continue;
    const { group, names } = object.spec;
    for (const version of object.spec.versions) {
      if (!version.served) continue;
      const apiVersion = `${group}/${version.name}`;
      const schema = pinKind(harden(structuredClone(version.schema.openAPIV3Schema)), apiVersion, names.kind);
      result[fileName(apiVersion, names.kind)] = {
        $schema: "http://json-schema.org/draft-07/schema#",
        description: `${apiVersion} ${names.kind}, ${source}`,
        ...schema,
      };
    }
  }
  return result;
}

const schemas = {
  ...builtIns(),
  ...crd(
    join(moduleDir("sigs.k8s.io/gateway-api", GATEWAY_API_VERSION), "config", "crd", "standard", "gateway.networking.k8s.io_httproutes.yaml"),
    `Gateway API ${GATEWAY_API_VERSION} (standard channel)`,
  ),
  ...crd(
    join(
      moduleDir("github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION),
      "example",
      "prometheus-operator-crd",
      "monitoring.coreos.com_servicemonitors.yaml",
    ),
    `prometheus-operator ${PROMETHEUS_OPERATOR_VERSION}`,
  ),
};
rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
for (const [name, schema] of Object.entries(schemas)) writeFileSync(join(OUT, name), `${JSON.stringify(schema)}\n`);
writeFileSync(
  join(OUT, "README.md"),
  `Generated by \`node scripts/vendor-k8s-schemas.mjs\`; do not edit. Strict JSON schemas for Kubernetes ${KUBERNETES_VERSION},\nGateway API ${GATEWAY_API_VERSION} HTTPRoute and prometheus-operator ${PROMETHEUS_OPERATOR_VERSION} ServiceMonitor, in kubeconform's\nfile layout, used by test/src/chart.test.ts offline.\n\n${Object.keys(
    schemas,
  )
    .sort()
    .map((name) => `- ${name}`)
    .join("\n")}\n`,
);
process.stderr.write(`[schemas] wrote ${Object.keys(schemas).length} schemas to ${OUT}\n`);
