// validate.mjs — checks Kubernetes objects against the schema models of kubernetes-models,
// @kubernetes-models/traefik and @kubernetes-models/prometheus-operator.
//
//   node validate.mjs NODE_MODULES_DIR < objects.json
//
// stdin: a JSON array of objects (test_manifests.py turns the rendered YAML into it). Each object's
// apiVersion and kind pick a model class, <package>/<group>/<version>/<Kind>.js (core: v1/<Kind>.js),
// whose own apiVersion and kind must be the object's; its validate() checks the object against
// the API's OpenAPI schema (types, enums, required fields; unknown fields are NOT rejected).
// An apiVersion/kind that no package models is an error. Prints one JSON line per object:
// {"i": index, "ok": true|false, "error": "..."}; exits 0 if all are ok, 1 if not, 2 on bad input.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const PACKAGES = [
  "kubernetes-models",
  "@kubernetes-models/traefik",
  "@kubernetes-models/prometheus-operator",
];

async function modelFor(modules, apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Z][A-Za-z0-9]*$/.test(kind))
    return null;
  const parts = apiVersion.split("/");
  if (parts.length > 2 || parts.some((p) => !/^[a-z0-9.-]+$/.test(p))) return null;
  for (const pkg of PACKAGES) {
    const file = join(modules, pkg, ...parts, kind + ".js");
    if (!existsSync(file)) continue;
    const mod = await import(pathToFileURL(file).href);
    const cls = mod[kind];
    // Spec types (ForwardAuth, PodSpec, ...) have files too, but no apiVersion of their own.
    if (cls && cls.apiVersion === apiVersion && cls.kind === kind) return cls;
  }
  return null;
}

const modules = process.argv[2];
if (!modules || !existsSync(modules)) {
  console.error("usage: node validate.mjs NODE_MODULES_DIR < objects.json");
  process.exit(2);
}
let objects;
try {
  objects = JSON.parse(readFileSync(0, "utf8"));
  if (!Array.isArray(objects)) throw new Error("not an array");
} catch (e) {
  console.error(`stdin is not a JSON array of objects: ${e.message}`);
  process.exit(2);
}
let bad = 0;
for (const [i, obj] of objects.entries()) {
  let error = null;
  const cls = await modelFor(modules, obj?.apiVersion, obj?.kind);
  if (!cls) error = `no model for apiVersion ${obj?.apiVersion} kind ${obj?.kind}`;
  else {
    try {
      new cls(obj).validate();
    } catch (e) {
      error = String(e.message || e);
    }
  }
  if (error) bad++;
  console.log(JSON.stringify(error ? { i, ok: false, error } : { i, ok: true }));
}
process.exit(bad ? 1 : 0);
