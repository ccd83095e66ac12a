"""`tern validate PATH`: exit status and the exact diagnostic lines on stderr, for good and bad configuration."""
import os
import subprocess

import pytest

from conftest import tern_bin

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "Fixtures", "config")
CANARY = open(os.path.join(FIXTURES, "canary.yaml")).read()  # the canary of issue 4, also used by TernConfigTests

BAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
      headers:
        X-User: {exact: bob}
    route:
    - destination: {host: reviews, subset: v9}
      weight: -1
    - destination: {host: reviews}
      weight: "ten"
    timeout: 5 seconds
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,bogus"}
    colour: red
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_CONN}
    outlierDetection: {interval: 1x, maxEjectionPercent: 101}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1, labels: {version: v2}}
"""

BAD_LINES = [
    "bad.yaml:11: VirtualService default/reviews: spec.http[0].match[0].headers.X-User: header names must be lowercase",
    "bad.yaml:13: VirtualService default/reviews: spec.http[0].route[0].destination.subset: subset \"v9\" is not defined by any DestinationRule for host reviews.default.svc.cluster.local",
    "bad.yaml:13: warning: VirtualService default/reviews: spec.http[0].route[0].destination.host: no ServiceEntry declares host reviews.default.svc.cluster.local; requests routed here get 503 (NC)",
    "bad.yaml:14: VirtualService default/reviews: spec.http[0].route[0].weight: must be between 0 and 2147483647, got -1",
    "bad.yaml:15: warning: VirtualService default/reviews: spec.http[0].route[1].destination.host: no ServiceEntry declares host reviews.default.svc.cluster.local; requests routed here get 503 (NC)",
    "bad.yaml:16: VirtualService default/reviews: spec.http[0].route[1].weight: expected an integer, got string",
    "bad.yaml:17: VirtualService default/reviews: spec.http[0].timeout: invalid duration \"5 seconds\" (write e.g. 30s, 1.5s, 100ms, 1h30m)",
    "bad.yaml:18: VirtualService default/reviews: spec.http[0].retries.retryOn: unknown retryOn policy \"bogus\"",
    "bad.yaml:19: VirtualService default/reviews: spec.http[0].colour: unknown field",
    "bad.yaml:25: warning: DestinationRule default/reviews: spec.host: no ServiceEntry declares host reviews.default.svc.cluster.local; this rule applies to nothing yet",
    "bad.yaml:27: warning: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simple: LEAST_CONN is deprecated; use LEAST_REQUEST (same policy)",
    "bad.yaml:28: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection.interval: invalid duration \"1x\" (write e.g. 30s, 1.5s, 100ms, 1h30m)",
    "bad.yaml:28: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 101",
    "bad.yaml:31: DestinationRule default/reviews: spec.subsets[1].name: duplicate subset name \"v1\"",
    "tern validate: 10 error(s), 4 warning(s); not applied",
]


def validate(*args, cwd=None, env=None):
    p = subprocess.run([tern_bin(), "validate", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr.splitlines(), p.stdout


def test_canary_is_valid(tmp_path):
    (tmp_path / "canary.yaml").write_text(CANARY)
    code, lines, out = validate("canary.yaml", cwd=tmp_path)
    assert code == 0
    assert lines == ["tern validate: ok: 3 resource(s), 1 virtual host(s), 2 route(s), 3 cluster(s), 0 warning(s)"]
    assert out == ""


def test_every_error_at_once_with_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD)
    code, lines, _ = validate("bad.yaml", cwd=tmp_path)
    assert code == 1
    assert lines == BAD_LINES


def test_directory_is_read_in_name_order_and_paths_are_as_reached(tmp_path):
    d = tmp_path / "conf"
    d.mkdir()
    (d / "b.yml").write_text("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  bogus: 1\n")
    (d / "a.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  hots: x\n  host: d\n")
    (d / "notes.txt").write_text("not yaml: [")
    (d / ".hidden.yaml").write_text("not yaml: [")
    code, lines, _ = validate("conf", cwd=tmp_path)
    assert code == 1
    assert lines == [
        "conf/a.yaml:5: DestinationRule default/d: spec.hots: unknown field",
        "conf/a.yaml:6: warning: DestinationRule default/d: spec.host: no ServiceEntry declares host d.default.svc.cluster.local; this rule applies to nothing yet",
        "tern validate: 1 error(s), 1 warning(s); not applied",
    ]


def test_warnings_alone_exit_zero(tmp_path):
    (tmp_path / "w.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: n}\n"
        "spec:\n  hosts: [v]\n  http:\n  - route: [{destination: {host: v}}]\n")
    code, lines, _ = validate("w.yaml", cwd=tmp_path)
    assert code == 0
    assert lines == [
        "w.yaml:7: warning: VirtualService n/v: spec.http[0].route[0].destination.host: no ServiceEntry declares host v.n.svc.cluster.local; requests routed here get 503 (NC)",
        "tern validate: ok: 1 resource(s), 1 virtual host(s), 1 route(s), 0 cluster(s), 1 warning(s)",
    ]


def test_namespace_flag_and_pod_namespace(tmp_path):
    (tmp_path / "x.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: d, bogus: 1}\n")
    env = dict(os.environ, POD_NAMESPACE="from-env")
    assert validate("x.yaml", cwd=tmp_path, env=env)[1][0] == "x.yaml:4: DestinationRule from-env/d: spec.bogus: unknown field"
    assert validate("x.yaml", "--namespace", "flag", cwd=tmp_path, env=env)[1][0] == \
        "x.yaml:4: DestinationRule flag/d: spec.bogus: unknown field"
    env.pop("POD_NAMESPACE")
    assert validate("x.yaml", cwd=tmp_path, env=env)[1][0] == "x.yaml:4: DestinationRule default/d: spec.bogus: unknown field"


def test_yaml_syntax_error_and_missing_file(tmp_path):
    (tmp_path / "s.yaml").write_text("a: b\nc: [\n")
    code, lines, _ = validate("s.yaml", cwd=tmp_path)
    assert code == 1
    assert lines[0] == "s.yaml:3: YAML: did not find expected node content while parsing a flow node"
    code, lines, _ = validate("missing.yaml", cwd=tmp_path)
    assert code == 1
    assert lines[0] == "missing.yaml: No such file or directory"


def test_usage_error_exits_64():
    p = subprocess.run([tern_bin(), "validate"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 64


SECURITY_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "Fixtures", "istio-security")


def security_fixtures(kind):
    folder = os.path.join(SECURITY_FIXTURES, kind)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".yaml"))


@pytest.mark.parametrize("path", security_fixtures("valid"), ids=os.path.basename)
def test_istio_security_fixtures_istio_accepts_are_accepted(path):
    # AuthorizationPolicy and PeerAuthentication as Istio's samples, docs, tests and validation tables write them
    # (Tests/Fixtures/istio-security/README.md): no error (warnings allowed: what Tern cannot enforce is said).
    r = subprocess.run([tern_bin(), "validate", path], capture_output=True, text=True, timeout=60)
    errors = [l for l in r.stderr.splitlines() if ": warning: " not in l and not l.startswith("tern validate:")]
    assert r.returncode == 0 and not errors, r.stderr


@pytest.mark.parametrize("path", security_fixtures("invalid"), ids=os.path.basename)
def test_istio_security_fixtures_istio_rejects_are_rejected(path):
    # One resource per file, each a case Istio's validation refuses: refused here too, at a line of the file.
    r = subprocess.run([tern_bin(), "validate", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    name = os.path.basename(path)
    assert any(l.startswith(path + ":") or (name in l and ":" in l) for l in r.stderr.splitlines()), r.stderr
