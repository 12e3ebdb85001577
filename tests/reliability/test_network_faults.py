"""Network faults mid-command: deploy, status, invoke and delete through a proxy that breaks one call.

Each case arms the proxy for one AWS call and one fault, once (botocore's retry must
absorb it, or the command fails in one line) or on every attempt (the command must
fail in one line, exit 1). A deploy, status or invoke leaves no model or endpoint
config that no endpoint uses; a delete cut short may, and running it again removes
them. The same command run again without faults completes. ``FAULT_TABLE`` collects
every outcome (``FAULT_TABLE_OUT=path`` writes it); docs/reliability.md quotes it.
"""
from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.config import Config
from fault_proxy import FAULTS, FaultProxy
from inf2_deploy.cli import main
from support.aws import REGION, ROLE, moto_server

# Small timeouts and few attempts keep a stalled call to a few seconds.
TEST_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=2)


def _target(operation: str) -> bytes:
    return f"X-Amz-Target: SageMaker.{operation}\r\n".encode()


# command, the call to break (a label and the bytes that mark its request)
FAULT_POINTS: list[tuple[str, str, bytes]] = [
    ("deploy", "s3:HeadObject/PutObject manifest.json", b"/manifest.json HTTP/1.1\r\n"),
    ("deploy", "sagemaker:CreateModel", _target("CreateModel")),
    ("deploy", "sagemaker:CreateEndpointConfig", _target("CreateEndpointConfig")),
    ("deploy", "sagemaker:CreateEndpoint", _target("CreateEndpoint")),
    ("deploy", "sagemaker:DescribeEndpoint", _target("DescribeEndpoint")),
    ("status", "sagemaker:DescribeEndpoint", _target("DescribeEndpoint")),
    ("invoke", "sagemaker-runtime:InvokeEndpoint", b"/invocations HTTP/1.1\r\n"),
    ("delete", "sagemaker:DeleteEndpoint", _target("DeleteEndpoint")),
    ("delete", "sagemaker:DeleteEndpointConfig", _target("DeleteEndpointConfig")),
    ("delete", "sagemaker:DeleteModel", _target("DeleteModel")),
]
CASES = list(itertools.product(FAULT_POINTS, FAULTS, ("once", "always")))
FAULT_TABLE: list[dict[str, Any]] = []
_names = (f"nf{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def proxied_moto() -> Iterator[tuple[FaultProxy, Any]]:
    """moto over real HTTP behind the fault proxy; every client of ours gets short timeouts."""
    from inf2_deploy.aws import session as aws

    with moto_server() as url, pytest.MonkeyPatch.context() as patch:
        port = urlsplit(url).port
        with FaultProxy(port) as proxy:
            patch.setattr(aws, "CLIENT_CONFIG", TEST_CLIENT_CONFIG)
            yield proxy, port


@pytest.fixture(scope="module", autouse=True)
def fault_table() -> Iterator[list[dict[str, Any]]]:
    """With FAULT_TABLE_OUT=path, the outcomes are written there as JSON for docs/reliability.md."""
    yield FAULT_TABLE
    target = os.environ.get("FAULT_TABLE_OUT")
    if target:
        Path(target).write_text(json.dumps(FAULT_TABLE, indent=1) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One INF2_DEPLOY_HOME for the module, so tiny-gptj is built and packaged once."""
    return str(tmp_path_factory.mktemp("fault-home"))


@pytest.fixture
def env(proxied_moto, fake_aws_env: None, moto_accepts_inf2: None, shared_home: str,  # noqa: ANN001, ANN201
        monkeypatch: pytest.MonkeyPatch):
    proxy, _ = proxied_moto
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("INF2_DEPLOY_HOME", shared_home)
    return proxied_moto


def _deploy_args(name: str) -> list[str]:
    return ["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--endpoint-name", name,
            "--region", REGION, "--role", ROLE]


def _argv(command: str, name: str) -> list[str]:
    return {
        "deploy": _deploy_args(name),
        "status": ["status", name, "--region", REGION],
        "invoke": ["invoke", name, "Hello", "--region", REGION],
        "delete": ["delete", name, "--region", REGION],
    }[command]


def _orphans(moto_port: int, name: str) -> list[str]:
    """Models and endpoint configs of this case that no endpoint uses (asked of moto itself, not via the proxy)."""
    import boto3

    sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=f"http://127.0.0.1:{moto_port}")
    used: set[str] = set()
    for endpoint in sagemaker.list_endpoints()["Endpoints"]:
        config = sagemaker.describe_endpoint(EndpointName=endpoint["EndpointName"])["EndpointConfigName"]
        used.add(config)
        variants = sagemaker.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        used.update(v["ModelName"] for v in variants)
    mine = [m["ModelName"] for m in sagemaker.list_models()["Models"]] + \
        [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    return sorted(n for n in mine if n.startswith(f"{name}-") and n not in used)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.slow
@pytest.mark.parametrize(("point", "fault", "times"), CASES,
                         ids=[f"{p[0]}-{p[1].split(':')[1].split()[0]}-{f}-{t}" for p, f, t in CASES])
def test_a_broken_call(env, capsys: pytest.CaptureFixture[str], point, fault: str, times: str) -> None:  # noqa: ANN001
    proxy, moto_port = env
    command, call, marker = point
    name = next(_names)
    if command != "deploy":
        assert _run(_deploy_args(name), capsys)[0] == 0
    baseline = None
    if command == "invoke":  # moto answers InvokeEndpoint with a canned body: compare with no fault
        baseline = _run(_argv(command, name), capsys)

    proxy.arm(marker, fault, times=1 if times == "once" else None)
    try:
        code, err = _run(_argv(command, name), capsys)
    finally:
        injected = proxy.disarm()
    assert injected >= 1, f"the proxy never saw {call}: exit {code}, {err}"

    recovered = code == 0 or (baseline is not None and (code, err) == baseline)  # as without the fault
    if not recovered:  # progress bars may come first on stderr; the error is one line, the last
        assert code == 1 and err.splitlines()[-1].startswith("error: "), err
        assert sum(line.startswith("error") for line in err.splitlines()) == 1 and "Traceback" not in err, err
    if command != "delete":  # a delete cut short leaves what it had not reached yet: its rerun must finish
        assert _orphans(moto_port, name) == []

    rerun, rerun_err = _run(_argv(command, name), capsys)
    if command == "delete":  # finishes what is left, or says nothing is left (the call went through)
        assert rerun == 0 or (rerun == 2 and f"no endpoint named {name}" in rerun_err), rerun_err
    elif command == "invoke":
        assert (rerun, rerun_err) == baseline
    else:
        assert rerun == 0, rerun_err
    assert _orphans(moto_port, name) == []
    FAULT_TABLE.append({"command": command, "call": call, "fault": fault, "times": times, "injected": injected,
                        "outcome": "recovered" if recovered else "failed in one line", "rerun": rerun,
                        "error": "" if recovered else err.splitlines()[-1][:160]})
    if command != "delete":
        _run(["delete", name, "--region", REGION], capsys)
