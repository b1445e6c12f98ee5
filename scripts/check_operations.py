"""Helpers of scripts/check-operations: the checks that read YAML, JSON and the metrics text.

Each subcommand prints what it found and exits non-zero with a message on the first problem.
Needs PyYAML and prometheus_client (Debian: python3-yaml, python3-prometheus-client).
"""

import json
import re
import sys

import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

METRIC = re.compile(r"\b(ferrolb_[a-z0-9_]+|up)\b")
# Values for the dashboard's Grafana variables, to parse its queries as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$pool": ".*", "$node": ".*"}

# The panels the dashboard must have (title: a metric its queries must use).
DASHBOARD_PANELS = {
    "Pool usage per pool and family": "ferrolb_controller_pool_addresses_in_use",
    "Addresses in use and usable per pool and family": "ferrolb_controller_pool_addresses",
    "Pool readiness": "ferrolb_controller_pool_ready",
    "Allocation failures by reason": "ferrolb_controller_allocation_failures_total",
    "Kubernetes API errors": "ferrolb_controller_kubernetes_api_errors_total",
    "Reconcile duration": "ferrolb_controller_reconcile_duration_seconds_bucket",
    "Announced IPs per node": "ferrolb_speaker_announced_ips",
    "IPs without owner": "ferrolb_speaker_ips_without_owner",
    "Fenced speakers": "ferrolb_speaker_fenced",
    "Ownership changes": "ferrolb_speaker_ownership_changes_total",
    "Live peers per node": "ferrolb_speaker_live_peers",
    "IP conflicts": "ferrolb_speaker_ip_conflicts_total",
    "ARP/NDP requests received": "ferrolb_speaker_requests_received_total",
    "ARP/NDP replies sent": "ferrolb_speaker_replies_sent_total",
    "Kernel ARP replies": "ferrolb_speaker_kernel_arp_replies_total",
    "Gratuitous announcements sent": "ferrolb_speaker_gratuitous_sent_total",
    "Frames dropped by reason": "ferrolb_speaker_frames_dropped_total",
}

# The alerts the rules file must have.
ALERTS = {
    "FerroLBIPWithoutOwner",
    "FerroLBIPConflict",
    "FerroLBSpeakerMissingPeers",
    "FerroLBPoolExhausted",
    "FerroLBPoolAlmostExhausted",
    "FerroLBPoolNotReady",
}


def fail(message):
    print(f"check-operations: {message}", file=sys.stderr)
    sys.exit(1)


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def rule_exprs(path):
    return [rule["expr"] for group in load_yaml(path)["groups"] for rule in group["rules"]]


def metrics_in(exprs):
    return sorted({m for e in exprs for m in METRIC.findall(e)})


def dashboard_exprs(path):
    with open(path) as f:
        dashboard = json.load(f)
    return dashboard, [
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t
    ]


def cmd_rules(path):
    """The alerts are there, each with severity, summary, description, runbook and for."""
    groups = load_yaml(path)["groups"]
    seen = set()
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert")
            if not name:
                fail(f"{path}: a rule without `alert` ({rule.get('record')})")
            seen.add(name)
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                fail(f"{path}: {name} has no severity label")
            for key in ("summary", "description", "runbook"):
                if not rule.get("annotations", {}).get(key):
                    fail(f"{path}: {name} has no {key} annotation")
            if "kubectl" not in rule["annotations"]["runbook"]:
                fail(f"{path}: {name}'s runbook names no kubectl command")
            if "for" not in rule:
                fail(f"{path}: {name} has no `for`")
    if seen != ALERTS:
        fail(f"{path}: alerts {sorted(seen)}, expected {sorted(ALERTS)}")
    with open(path) as f:
        if "BGP" not in f.read():
            fail(f"{path}: the place for the BGP session alert is gone")
    print(f"ok: {len(seen)} alerts with severity, summary, description, runbook and for")


def cmd_prometheusrule(rules_path, rule_path):
    """The PrometheusRule's spec is the rules file, parsed."""
    rules = load_yaml(rules_path)
    rule = load_yaml(rule_path)
    if (rule.get("apiVersion"), rule.get("kind")) != ("monitoring.coreos.com/v1", "PrometheusRule"):
        fail(f"{rule_path}: not a monitoring.coreos.com/v1 PrometheusRule")
    if rule["spec"] != rules:
        fail(f"{rule_path}: spec differs from {rules_path}: run scripts/check-operations --regenerate")
    print(f"ok: {rule_path} spec equals {rules_path}")


def cmd_dashboard(path):
    """Well formed, the datasource a variable used everywhere, the expected panels."""
    dashboard, _ = dashboard_exprs(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("datasource")
    if not ds or ds["type"] != "datasource" or ds["query"] != "prometheus":
        fail(f"{path}: no Prometheus datasource variable `datasource`")
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        fail(f"{path}: panel ids repeat")
    titles = {}
    for panel in dashboard["panels"]:
        for key in ("id", "type", "title", "gridPos"):
            if key not in panel:
                fail(f"{path}: panel {panel.get('title')} has no {key}")
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"{path}: panel {panel['title']} does not use the datasource variable")
        if not panel.get("targets"):
            fail(f"{path}: panel {panel['title']} has no query")
        for target in panel["targets"]:
            if target.get("datasource", {}).get("uid") != "${datasource}" or not target.get("expr"):
                fail(f"{path}: a query of {panel['title']} lacks the datasource variable or expr")
        titles[panel["title"]] = " ".join(t["expr"] for t in panel["targets"])
    for title, metric in DASHBOARD_PANELS.items():
        if title not in titles:
            fail(f"{path}: no panel {title!r}")
        if metric not in METRIC.findall(titles[title]):
            fail(f"{path}: panel {title!r} does not query {metric}")
    print(f"ok: dashboard {dashboard['title']!r}: {len(titles)} panels, datasource variable")


def cmd_dashboard_rules(path):
    """The dashboard's queries as recording rules, for `promtool check rules` to parse."""
    _, exprs = dashboard_exprs(path)
    rules = []
    for index, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            fail(f"{path}: unknown variable in {expr}")
        rules.append({"record": f"ferrolb:dashboard_query_{index}", "expr": expr})
    print(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


def cmd_metrics_used(rules_path, dashboard_path):
    """Every metric name the rules and the dashboard use, one a line."""
    _, exprs = dashboard_exprs(dashboard_path)
    for name in metrics_in(rule_exprs(rules_path) + exprs):
        print(name)


def cmd_openmetrics(path):
    """Parses the exposition strictly as OpenMetrics 1.0 (what the components serve)."""
    with open(path) as f:
        text = f.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as error:  # the parser raises ValueError and friends
        fail(f"{path}: not valid OpenMetrics: {error}")
    samples = sum(len(f.samples) for f in families)
    print(f"ok: {path}: valid OpenMetrics, {len(families)} families, {samples} samples")


def cmd_to_text(path):
    """OpenMetrics to the Prometheus text format 0.0.4 that `promtool check metrics` parses.

    The two differ where it matters to promtool in counter names only: OpenMetrics names the
    family `x` in HELP/TYPE and the sample `x_total`; the text format names both `x_total`
    (promtool reads `x_total` as an untyped metric without help otherwise). And `# EOF` goes.
    """
    with open(path) as f:
        lines = f.read().splitlines()
    counters = {
        line.split()[2] for line in lines if line.startswith("# TYPE ") and line.endswith(" counter")
    }
    for line in lines:
        if line == "# EOF" or line.startswith("# UNIT "):
            continue
        parts = line.split(" ", 3)
        if line.startswith(("# HELP ", "# TYPE ")) and parts[2] in counters:
            parts[2] += "_total"
            line = " ".join(parts)
        print(line)


def cmd_samples(path, *names):
    """Every name has a sample in the exposition."""
    with open(path) as f:
        present = {
            re.split(r"[{ ]", line, maxsplit=1)[0]
            for line in f.read().splitlines()
            if line and not line.startswith("#")
        }
    missing = [n for n in names if n not in present]
    if missing:
        fail(f"{path}: no sample of {' '.join(missing)}")
    print(f"ok: {path}: samples of all {len(names)} metrics the rules and dashboard use")


def cmd_value(path, series):
    """The value of one series (exact name and labels as exposed), or nothing."""
    with open(path) as f:
        for line in f.read().splitlines():
            if line.startswith(series + " "):
                print(line.split(" ")[1])
                return


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name):
    for doc in docs:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    fail(f"no {kind} {name} in the build")


def container(docs, kind, name):
    return find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def same_except(base, built, changed):
    """Every document of `base` is in `built` unchanged, but those named in `changed`."""
    for doc in base:
        key = (doc["kind"], doc["metadata"]["name"])
        if key in changed:
            continue
        if find(built, *key) != doc:
            fail(f"{key[0]} {key[1]} changed, but the component should leave it alone")


def cmd_component(name, base_path, built_path, rules_path=None):
    """What each component changes is in its build, and nothing else changed."""
    base, built = documents(base_path), documents(built_path)
    speaker = ("DaemonSet", "ferrolb-speaker")
    if name == "prometheus":
        same_except(base, built, set())
        if len(built) != len(base) + 3:
            fail(f"prometheus: {len(built) - len(base)} documents added, expected 3")
        for component, kind, port in (
            ("controller", "Deployment", 7472),
            ("speaker", "DaemonSet", 7473),
        ):
            monitor = find(built, "PodMonitor", f"ferrolb-{component}")
            if monitor["metadata"].get("namespace") != "ferrolb-system":
                fail(f"PodMonitor ferrolb-{component} is not in ferrolb-system")
            workload = find(built, kind, f"ferrolb-{component}")
            labels = workload["spec"]["template"]["metadata"]["labels"]
            selector = monitor["spec"]["selector"]["matchLabels"]
            if any(labels.get(k) != v for k, v in selector.items()):
                fail(f"PodMonitor ferrolb-{component} does not select the {kind}'s pods")
            ports = {
                p.get("name"): p["containerPort"]
                for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]
            }
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                if ports.get(endpoint["port"]) != port:
                    fail(f"PodMonitor ferrolb-{component} port {endpoint['port']!r} is not {port}")
        rule = find(built, "PrometheusRule", "ferrolb")
        if rule["spec"] != load_yaml(rules_path):
            fail("the built PrometheusRule's spec is not the rules file")
        print("ok: prometheus: PodMonitors on the named ports 7472/7473, PrometheusRule = rules file")
    elif name == "failover-timings":
        same_except(base, built, {speaker})
        args = container(built, *speaker)["args"]
        wanted = container(base, *speaker)["args"] + [
            "--heartbeat-interval=150ms",
            "--heartbeat-jitter=50ms",
            "--heartbeat-max-delay=50ms",
        ]
        if args != wanted:
            fail(f"failover-timings: speaker args {args}, expected {wanted}")
        print(f"ok: failover-timings: speaker args {' '.join(args)}")
    elif name == "node-selection":
        same_except(base, built, {speaker})
        pod = find(built, *speaker)["spec"]["template"]["spec"]
        if pod.get("nodeSelector") != {"ferrolb.io/speaker": "true"}:
            fail(f"node-selection: nodeSelector {pod.get('nodeSelector')}")
        base_pod = find(base, *speaker)["spec"]["template"]["spec"]
        if {k: v for k, v in pod.items() if k != "nodeSelector"} != base_pod:
            fail("node-selection: changed more of the speaker's pod than its nodeSelector")
        print("ok: node-selection: speaker nodeSelector ferrolb.io/speaker=true, tolerations kept")
    elif name == "all":
        pod = find(built, *speaker)["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        if pod.get("nodeSelector") != {"ferrolb.io/speaker": "true"} or "--heartbeat-interval=150ms" not in args:
            fail("every component: the speaker lacks a component's change")
        for kind, doc_name in (
            ("PodMonitor", "ferrolb-controller"),
            ("PodMonitor", "ferrolb-speaker"),
            ("PrometheusRule", "ferrolb"),
        ):
            find(built, kind, doc_name)
        print("ok: every component in one overlay: all their changes are there")
    else:
        fail(f"unknown component {name}")


def cmd_speaker_args(built_path):
    """The speaker's args in a build, one a line (to run the real binary with them)."""
    for arg in container(documents(built_path), "DaemonSet", "ferrolb-speaker")["args"]:
        print(arg)


def cmd_send_frames(interface, vip):
    """ARP frames from MACs of no FerroLB node, sent out of `interface` (root, AF_PACKET): a
    request for `vip` (answered), a reply claiming `vip` (a conflict) and one with an unknown
    operation (dropped)."""
    import ipaddress
    import socket
    import time

    def arp(operation, sender_mac, sender_ip, target_ip):
        mac = bytes.fromhex(sender_mac.replace(":", ""))
        ethernet = b"\xff" * 6 + mac + b"\x08\x06"
        header = b"\x00\x01\x08\x00\x06\x04" + operation.to_bytes(2, "big")
        body = mac + ipaddress.IPv4Address(sender_ip).packed + b"\x00" * 6
        return ethernet + header + body + ipaddress.IPv4Address(target_ip).packed

    frames = [
        arp(1, "02:00:5e:0f:00:01", "198.51.100.9", vip),
        arp(2, "02:00:5e:0f:00:02", vip, vip),
        arp(3, "02:00:5e:0f:00:01", "198.51.100.9", vip),
    ]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        for _ in range(3):
            for frame in frames:
                sock.send(frame)
            time.sleep(0.1)
    print(f"sent {3 * len(frames)} ARP frames about {vip} on {interface}")


COMMANDS = {
    "rules": cmd_rules,
    "prometheusrule": cmd_prometheusrule,
    "dashboard": cmd_dashboard,
    "dashboard-rules": cmd_dashboard_rules,
    "metrics-used": cmd_metrics_used,
    "openmetrics": cmd_openmetrics,
    "to-text": cmd_to_text,
    "samples": cmd_samples,
    "value": cmd_value,
    "component": cmd_component,
    "speaker-args": cmd_speaker_args,
    "send-frames": cmd_send_frames,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: check_operations.py {'|'.join(COMMANDS)} ARGS")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
