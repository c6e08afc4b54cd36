"""Checks of the deployment files under deploy/ (no network, no Docker, < 10 s).

- every YAML / JSON / TOML file parses;
- every metric referenced by the Prometheus rules and the Grafana dashboard is
  exposed by agent/metrics.py (names derived from the prometheus_client objects),
  is recorded by the rules file, or is one of a few named external metrics;
- the example config loads with Config.load and mentions every Config field;
- PACS_TRIAGE_* variables and --options used by the deploy files exist;
- systemd units pass `systemd-analyze verify` (if installed);
- rules pass `promtool check rules` (if installed);
- kustomization renders with `kubectl kustomize` (if installed; offline), alone and with the
  dicom-tls component, and every object matches the Kubernetes API schema (kubernetes-validate,
  offline); compose files match the Compose Specification schema (check-jsonschema's copy);
- the manifests reference what exists: images (the Dockerfile copies every package), Service
  ports named in the pods they select, container ports = the configured ports, each port of a pod
  admitted by a NetworkPolicy, probes on declared ports, `$(VAR)` defined before use, what the
  Redis/Sentinel scripts require set wherever they run;
- every PACS_TRIAGE_* setting the deploy files set is an option and loads with its value;
  every option documented in config.example.toml can be set with its documented example.
The Sentinel scripts and the DICOM TLS option run for real in tests/e2e/test_deploy_live.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

from core import metrics as agent_metrics
from core.config import ENV_PREFIX, Config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "pacs-triage-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "pacs-triage-dashboard.json"
EXAMPLE = DEPLOY / "config.example.toml"
SYSTEMD = DEPLOY / "systemd"
KUBE = DEPLOY / "kubernetes"
HA = KUBE / "redis-ha"
COMPOSE = DEPLOY / "compose"

# Metrics from other exporters that the rules use on purpose.
EXTERNAL_METRICS = {
    "up",  # Prometheus itself
    "probe_success",  # blackbox exporter probing /readyz
    "kube_pod_container_status_ready",  # kube-state-metrics
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "bool", "inf", "nan",
}


def files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes)


def exposed_metric_names() -> set[str]:
    names: set[str] = set()
    for obj in vars(agent_metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        name = obj._name
        if isinstance(obj, Counter):
            names.add(name + "_total")
        elif isinstance(obj, Histogram):
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
        elif isinstance(obj, Info):
            names.add(name + "_info")
        elif isinstance(obj, Gauge):
            names.add(name)
        else:  # Summary, Enum: not used yet; make the test say so
            raise AssertionError(f"metric type of {name} not handled by this test")
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, ranges, grouping
    clauses, strings and function names removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def rules_doc() -> dict:
    return yaml.safe_load(RULES.read_text())


def recorded_names() -> set[str]:
    return {r["record"] for g in rules_doc()["groups"] for r in g["rules"] if "record" in r}


def dashboard_exprs() -> list[str]:
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in walk(dash["panels"]) for t in p.get("targets", []) if t.get("expr")]


# --- parsing -------------------------------------------------------------------

@pytest.mark.parametrize("path", files(".yaml", ".yml"), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"


@pytest.mark.parametrize("path", files(".json"), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path):
    assert json.loads(path.read_text()), f"{path} is empty"


@pytest.mark.parametrize("path", files(".toml"), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_toml_parses_and_is_a_valid_config(path):
    with path.open("rb") as fh:
        document = tomllib.load(fh)
    _, sources = Config.load_with_sources(path, env={})  # unknown keys and bad values raise ConfigError
    assert document and {name for name, source in sources.items() if source.startswith("file")} == set(document)


def test_configmap_config_is_valid(tmp_path):
    cm = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())
    f = tmp_path / "config.toml"
    f.write_text(cm["data"]["config.toml"])
    cfg = Config.load(f, env={})
    assert (cfg.ae_title, cfg.port, cfg.http_port) == ("PACSTRIAGE", 11112, 9108)


# --- metrics -------------------------------------------------------------------

def test_promql_extractor():
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (sink, le) (rate(a_bucket{x="b c"}[5m]))) > 3 and on() hour() >= 7'
    ) == {"a_bucket"}
    assert promql_metric_names("deriv(pacs_triage:queue_depth:max[15m]) > 0 or vector(0)") == {"pacs_triage:queue_depth:max"}


def test_metric_derivation_matches_exposition():
    names = exposed_metric_names()
    assert "pacs_triage_instances_received_total" in names
    assert "pacs_triage_triage_duration_seconds_bucket" in names
    assert "pacs_triage_rulebook_info" in names
    assert "pacs_triage_queue_depth" in names


def test_rules_reference_existing_metrics():
    known = exposed_metric_names() | recorded_names() | EXTERNAL_METRICS
    missing = {}
    for group in rules_doc()["groups"]:
        for rule in group["rules"]:
            unknown = promql_metric_names(rule["expr"]) - known
            if unknown:
                missing[rule.get("alert") or rule.get("record")] = sorted(unknown)
    assert not missing, f"rules reference metrics that agent/metrics.py does not expose: {missing}"


def test_dashboard_references_existing_metrics():
    known = exposed_metric_names() | recorded_names()
    exprs = dashboard_exprs()
    assert exprs
    unknown = set().union(*(promql_metric_names(e) for e in exprs)) - known
    assert not unknown, f"dashboard references unknown metrics: {sorted(unknown)}"


def test_rules_structure():
    names = set()
    for group in rules_doc()["groups"]:
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule)
            if "record" in rule:
                assert rule["record"].startswith("pacs_triage:"), rule["record"]
                continue
            assert rule["alert"] not in names, f"duplicate alert {rule['alert']}"
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource" for v in dash["templating"]["list"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    exprs = " ".join(dashboard_exprs())
    for metric in ("pacs_triage_rulebook_info", "pacs_triage_end_to_end_latency_seconds_bucket",
                   "pacs_triage_queue_depth", "pacs_triage_sink_dead_letters_total"):
        assert metric in exprs


# --- configuration -------------------------------------------------------------

def test_example_config_loads_and_documents_every_option():
    cfg = Config.load(EXAMPLE, env={})
    assert isinstance(cfg, Config)
    text = EXAMPLE.read_text()
    missing = [f.name for f in dataclasses.fields(Config)
               if not re.search(rf"^\s*#?\s*{f.name}\s*=", text, re.M)]
    assert not missing, f"options missing from {EXAMPLE.name}: {missing}"


def _deploy_text() -> str:
    return "\n".join(p.read_text() for p in DEPLOY.rglob("*")
                     if p.is_file() and p.suffix not in (".json",) and p.name != "README.md")


def test_environment_variables_exist():
    fields = {f.name for f in dataclasses.fields(Config)} | {"config"}
    used = set(re.findall(ENV_PREFIX + r"([A-Z0-9_]+)", _deploy_text()))
    unknown = {u for u in used if u.lower() not in fields}
    assert used and not unknown, f"unknown variables: {sorted(ENV_PREFIX + u for u in unknown)}"


def test_command_line_options_exist():
    fields = {f.name for f in dataclasses.fields(Config)} | {"config"}
    text = "\n".join(
        line for p in [*SYSTEMD.glob("*.service"), *DEPLOY.glob("compose/compose.yaml"),
                       *DEPLOY.glob("kubernetes/*.yaml")]
        for line in p.read_text().splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"(?<![\w-])--([a-z][a-z-]+)", text))
    # options of other programs in those files
    used -= {"appendonly", "appendfsync", "maxmemory-policy", "save", "requirepass", "config.file",
             "storage"}
    unknown = {u for u in used if u.replace("-", "_") not in fields}
    assert not unknown, f"unknown pacs-triage options: {sorted(unknown)}"


def test_compose_wiring():
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "listener", "worker-1",
            "worker-2", "prometheus", "grafana"} <= set(services)
    assert "--appendonly yes --appendfsync everysec" in (HA / "redis.sh").read_text()
    for name in ("redis", "redis-replica"):
        assert services[name]["entrypoint"] == ["sh", "/opt/redis-ha/redis.sh"]
    for n in (1, 2, 3):
        assert services[f"sentinel-{n}"]["entrypoint"] == ["sh", "/opt/redis-ha/sentinel.sh"]
        assert services[f"sentinel-{n}"]["environment"]["ANNOUNCE_HOST"] == f"sentinel-{n}"
    for name in ("listener", "worker-1", "worker-2"):
        url = services[name]["environment"]["PACS_TRIAGE_REDIS_URL"]
        assert url.startswith("redis+sentinel://:${REDIS_PASSWORD}@sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/"
                              "pacs-triage/0"), url
        assert set(services[name]["depends_on"]) == {"sentinel-1", "sentinel-2", "sentinel-3"}
    assert "2575:2575" in services["listener"]["ports"]
    assert tomllib.loads((DEPLOY / "compose" / "pacs-triage.toml").read_text())["hl7_listen"] == 2575
    for name in ("listener", "worker-1", "worker-2"):
        svc = services[name]
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
        assert any(v.startswith("pacs-data:") for v in svc["volumes"])
    base = DEPLOY / "compose"
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (base / src).exists(), f"compose mounts missing {src}"


def test_kustomization_lists_existing_files():
    kdir = DEPLOY / "kubernetes"
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    for res in k["resources"]:
        assert (kdir / res).is_file(), res
    listed = set(k["resources"]) | {"kustomization.yaml"}
    assert {p.name for p in kdir.glob("*.yaml")} <= listed


# --- external validators (optional) ---------------------------------------------

def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed: units not verified")
    # ExecStart points at the installed program (/opt/pacs-triage/venv/...),
    # absent here: substitute a stub so verify checks everything else.
    stub = tmp_path / "pacs-triage"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = []
    for unit in sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.target")]):
        text = unit.read_text().replace("/opt/pacs-triage/venv/bin/pacs-triage", str(stub))
        name = unit.name.replace("@.service", "@9109.service")  # verify an instance of the template
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    assert len(units) >= 3
    proc = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    # verify exits 0 on many problems it only logs: any line about our files fails.
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if str(tmp_path) in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_promtool_check_rules():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed: rules checked only by this test's own parser")
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kustomize_renders():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: kustomization not rendered")
    proc = subprocess.run([kubectl, "kustomize", str(DEPLOY / "kubernetes")], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
    for kind in ("Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                 "PodDisruptionBudget", "ServiceMonitor"):
        assert kind in kinds
    for d in yaml.safe_load_all(proc.stdout):
        if d and d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "pacs-triage", d["metadata"]["name"]


def test_redis_has_a_password_and_a_network_policy():
    """Redis holds patient names and clinical text: a password everywhere it is deployed (Redis and
    the sentinels), and in Kubernetes only the listener and worker pods (and the Redis set itself)
    may reach it."""
    script, sentinel = (HA / "redis.sh").read_text(), (HA / "sentinel.sh").read_text()
    assert ': "${REDIS_PASSWORD:?' in script and '--requirepass "$REDIS_PASSWORD"' in script
    assert '--masterauth "$REDIS_PASSWORD"' in script
    assert 'requirepass "$REDIS_PASSWORD"' in sentinel
    assert 'sentinel auth-pass $MASTER_NAME "$REDIS_PASSWORD"' in sentinel
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    for name in ("redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert compose["services"][name]["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "${REDIS_PASSWORD}@sentinel-1" in (COMPOSE / "compose.yaml").read_text()
    assert "sentinel_password=${REDIS_PASSWORD}" in (COMPOSE / "compose.yaml").read_text()
    for name in ("listener.yaml", "worker.yaml"):
        text = (KUBE / name).read_text()
        assert "redis+sentinel://:$(REDIS_PASSWORD)@" in text and "sentinel_password=$(REDIS_PASSWORD)" in text
    policies = [d for d in yaml.safe_load_all((KUBE / "networkpolicy.yaml").read_text()) if d]
    for component, port in (("redis", 6379), ("sentinel", 26379)):
        policy = next(p for p in policies if p["spec"]["podSelector"].get("matchLabels", {})
                      .get("app.kubernetes.io/component") == component)
        [rule] = policy["spec"]["ingress"]
        allowed = rule["from"][0]["podSelector"]["matchExpressions"]
        assert {"key": "app.kubernetes.io/component", "operator": "In",
                "values": ["listener", "worker", "redis", "sentinel"]} in allowed
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] for p in policies)


# --- schemas and references ------------------------------------------------------

COMPOSE_FILES = sorted(COMPOSE.glob("compose*.yaml"))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_match_the_compose_specification(path):
    """The Compose Specification's JSON schema as check-jsonschema ships it (what `docker compose
    config` validates against; no Docker needed)."""
    from importlib.resources import files

    import jsonschema

    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def compose_services(*names: str) -> dict:
    """compose.yaml merged with the override files `names`, the way Compose merges them
    (environment maps merged, volumes merged by target, other keys replaced)."""
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    for name in names:
        for svc, over in yaml.safe_load((COMPOSE / name).read_text())["services"].items():
            assert svc in services, f"{name} overrides a service compose.yaml does not have: {svc}"
            base = services[svc]
            for key, value in over.items():
                if key == "environment":
                    base[key] = {**base.get(key, {}), **value}
                elif key == "volumes":
                    targets = {v.split(":")[1]: v for v in base.get(key, [])}
                    targets.update({v.split(":")[1]: v for v in value})
                    base[key] = list(targets.values())
                else:
                    base[key] = value
    return services


def rendered(tmp_path: Path, *components: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: kustomization not rendered")
    target = KUBE
    if components:  # a throw-away kustomization: the shipped one with the components switched on
        rel = Path(os.path.relpath(KUBE, tmp_path))
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
            {"resources": [str(rel)], "components": [str(rel / c) for c in components]}))
        target = tmp_path
    proc = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("components", [(), ("dicom-tls",)], ids=["base", "dicom-tls"])
def test_kubernetes_objects_match_the_api_schema(tmp_path, components):
    import kubernetes_validate

    docs = rendered(tmp_path, *components)
    checked = 0
    for version in ("1.28.0", kubernetes_validate.latest_version()):
        for d in docs:
            if d["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a Prometheus Operator CRD: not in the Kubernetes API schema
            kubernetes_validate.validate(d, version, strict=True)  # raises on an unknown or wrong field
            checked += 1
    assert checked >= 2 * 20


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("components", [(), ("dicom-tls",)], ids=["base", "dicom-tls"])
def test_kubernetes_manifests_reference_what_exists(tmp_path, components):
    docs = rendered(tmp_path, *components)
    by_kind: dict[str, set] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], set()).add(d["metadata"]["name"])
    templates = pod_templates(docs)
    assert {"pacs-triage-listener", "pacs-triage-worker", "pacs-triage-redis", "pacs-triage-sentinel"} <= set(templates)
    k = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in k["images"]}
    redis_image = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["x-redis"]["image"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pacs-triage-config")
    (tmp_path / "config.toml").write_text(cm["data"]["config.toml"])
    cfg = Config.load(tmp_path / "config.toml", env={})
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    mountable = {"configMap": by_kind.get("ConfigMap", set()), "secret": by_kind.get("Secret", set())
                 | {"pacs-triage-dicom-tls"},  # created by the operator (dicom-tls/kustomization.yaml)
                 "persistentVolumeClaim": by_kind.get("PersistentVolumeClaim", set())}
    for name, tpl in templates.items():
        labels, spec = tpl["metadata"]["labels"], tpl["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == name
                  for c in d["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            for kind, names in mountable.items():
                if kind in v:
                    ref = v[kind].get("name") or v[kind].get("secretName") or v[kind].get("claimName")
                    assert ref in names, f"{name}: volume {v['name']} refers to a missing {kind} {ref}"
        for c in spec["containers"]:
            assert c["image"] in {images["pacs-triage"], redis_image}, f"{name}: unknown image {c['image']}"
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, f"{name}: mount of {mount['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe, {})
                port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                assert port is None or port in ports or port in ports.values(), f"{name}: {probe} on {port}"
            defined = set()
            for e in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert ref in defined, f"{name}: $({ref}) used before it is defined"
                defined.add(e["name"])
            if c["image"] == images["pacs-triage"]:
                expected = {"dicom": cfg.port, "metrics": cfg.http_port, "hl7": cfg.hl7_listen}
                assert ports and all(expected[p] == n for p, n in ports.items()), f"{name}: {ports} vs the config"
            else:
                script = (HA / c["command"][-1].rsplit("/", 1)[-1]).read_text()
                required = set(re.findall(r': "\$\{(\w+):\?', script))
                assert required and required <= defined, f"{name}: {sorted(required - defined)} not set"
            # every declared port is admitted by some NetworkPolicy (the namespace denies by default)
            for port in ports.values():
                assert any(selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
                           and all(labels.get(e["key"]) in e["values"]
                                   for e in p["spec"]["podSelector"].get("matchExpressions", []))
                           and any(port == pp["port"] for rule in p["spec"].get("ingress", [])
                                   for pp in rule.get("ports", []))
                           for p in policies), f"{name}: port {port} admitted by no NetworkPolicy"
    for svc in (d for d in docs if d["kind"] == "Service"):
        targets = [t for t in templates.values() if selects(svc["spec"]["selector"], t["metadata"]["labels"])]
        assert targets, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            for t in targets:
                names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"Service {svc['metadata']['name']}: no port {port['targetPort']}"
    listener = templates["pacs-triage-listener"]["spec"]["containers"][0]
    assert {"dicom", "metrics", "hl7"} <= {p["name"] for p in listener["ports"]}


def test_the_image_contains_every_package():
    """The Dockerfile copies every package pyproject.toml installs (the image imports them all)."""
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in include:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), f"the image lacks {package}/"
    exposed = set(re.search(r"^EXPOSE (.+)$", dockerfile, re.M).group(1).split())
    assert {"11112", "9108", "2575"} <= exposed


# --- settings --------------------------------------------------------------------

def _substitute(value: str) -> str:
    """${VAR}, ${VAR:?msg} (compose) and $(VAR) (Kubernetes) with a sample value."""
    return re.sub(r"\$\{\w+(:[?-][^}]*)?\}|\$\(\w+\)", "secret0123", str(value))


def deploy_environments(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The environment of every pacs-triage process the deploy files start (compose with its
    override files, Kubernetes with its components), PACS_TRIAGE_* only."""
    out = {}
    services = compose_services(*[p.name for p in COMPOSE_FILES if p.name != "compose.yaml"])
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if any(k.startswith(ENV_PREFIX) for k in env):
            out[f"compose:{name}"] = {k: _substitute(v) for k, v in env.items() if k.startswith(ENV_PREFIX)}
    for name, tpl in pod_templates(rendered(tmp_path, "dicom-tls")).items():
        for c in tpl["spec"]["containers"]:
            env = {e["name"]: _substitute(e.get("value", "")) for e in c.get("env", [])
                   if e["name"].startswith(ENV_PREFIX)}
            if env:
                out[f"kubernetes:{name}"] = env
    return out


def test_every_setting_the_deploy_files_set_is_an_option_and_loads(tmp_path):
    envs = deploy_environments(tmp_path)
    assert {"compose:listener", "compose:worker-1", "kubernetes:pacs-triage-listener",
            "kubernetes:pacs-triage-worker"} <= set(envs)
    fields = {f.name for f in dataclasses.fields(Config)}
    config_files = {"compose": COMPOSE / "pacs-triage.toml", "kubernetes": tmp_path / "config.toml"}
    cm = yaml.safe_load((KUBE / "configmap.yaml").read_text())
    config_files["kubernetes"].write_text(cm["data"]["config.toml"])
    for where, env in envs.items():
        names = {k[len(ENV_PREFIX):].lower() for k in env} - {"config"}
        assert names <= fields, f"{where}: not options: {sorted(names - fields)}"
        env = {k: v for k, v in env.items() if k != ENV_PREFIX + "CONFIG"}
        cfg, sources = Config.load_with_sources(config_files[where.split(":")[0]], env=env)
        for name in names:
            assert sources[name].startswith("env"), f"{where}: {name} not taken from the environment"
        assert cfg.redis_url.startswith("redis+sentinel://"), where
        from core.redis_client import parse_sentinel

        url = parse_sentinel(cfg.redis_url)
        assert len(url["sentinels"]) == 3 and url["service"] == "pacs-triage" and url["sentinel_password"], where
    for where in ("compose:listener", "kubernetes:pacs-triage-listener"):
        assert {"PACS_TRIAGE_TLS_CERT", "PACS_TRIAGE_TLS_KEY", "PACS_TRIAGE_TLS_CA"} <= set(envs[where])


def test_every_documented_option_can_be_set_with_its_documented_example(tmp_path):
    """config.example.toml with every commented `# option = value` line switched on loads, and
    each option then comes from the file."""
    fields = {f.name for f in dataclasses.fields(Config)}
    lines, seen = [], set()
    for line in EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s?(\w+)\s*=\s*(.+)$", line)
        if m and m.group(1) in fields and m.group(1) not in seen:
            seen.add(m.group(1))
            lines.append(f"{m.group(1)} = {m.group(2)}")
    assert seen == fields, f"not documented with an example: {sorted(fields - seen)}"
    path = tmp_path / "all.toml"
    path.write_text("\n".join(lines) + "\n")
    _, sources = Config.load_with_sources(path, env={})
    assert {n for n, src in sources.items() if src.startswith("file")} == fields
