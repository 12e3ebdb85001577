"""resolve(): one place that turns a name or URL into a local or SageMaker target, with one set of verbs."""
from __future__ import annotations

import itertools
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from inf2_deploy.cli import main
from inf2_deploy.client.predictor import LocalPredictor, Predictor
from inf2_deploy.client.targets import LocalTarget, SageMakerTarget, connect, resolve, resolve_url
from inf2_deploy.errors import ConfigError, DeploymentStoppedError, EndpointNotFoundError
from inf2_deploy.local.records import LocalDeployment, LocalStore
from inf2_deploy.status import DeploymentStatus
from moto import mock_aws
from support.aws import IMAGE, REGION, ROLE
from support.clock import FakeClock

ARTIFACT = "s3://models/gptj/0123abcd/"
LIVE_PID, EXITED_PID = 101, 202


def _record(store: LocalStore, name: str, pid: int, url: str = "http://127.0.0.1:8765") -> LocalDeployment:
    record = LocalDeployment(name=name, url=url, pid=pid, artifact_dir="/artifacts/tiny",
                             log_file=str(store.log_path(name)), started_at="2026-01-01T00:00:00+00:00")
    store.save(record)
    store.log_path(name).write_text("loading\nready\n", encoding="utf-8")
    return record


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "records", alive=lambda pid: pid == LIVE_PID)


class _NoCalls:
    """A session that fails the test if anything asks it for a client."""

    region = REGION

    def client(self, service: str) -> None:
        raise AssertionError(f"resolve() must not call AWS ({service})")


def test_a_name_with_a_record_is_local_and_any_other_name_is_an_endpoint_not_yet_called(store: LocalStore) -> None:
    _record(store, "tiny-local", LIVE_PID)
    local = resolve("tiny-local", store=store, session=_NoCalls())
    assert isinstance(local, LocalTarget) and local.url == "http://127.0.0.1:8765"
    remote = resolve("gptj-prod", store=store, session=_NoCalls())
    assert isinstance(remote, SageMakerTarget) and remote.name == "gptj-prod"


def test_a_url_is_the_server_there_and_borrows_a_running_record_at_that_url(store: LocalStore) -> None:
    _record(store, "tiny-local", LIVE_PID, url="http://127.0.0.1:8765")
    known = resolve("http://127.0.0.1:8765/", store=store)
    assert isinstance(known, LocalTarget) and known.deployment.name == "tiny-local"
    assert known.describe().artifact == "/artifacts/tiny"
    stranger = resolve_url("http://127.0.0.1:9", store=store)
    assert stranger.deployment is None and stranger.log_location is None


@pytest.mark.parametrize(("call", "field"), [
    (lambda store: resolve("bad name!", store=store), "name"),
    (lambda store: resolve("x" * 64, store=store), "name"),
    (lambda store: resolve_url("localhost:8080", store=store), "url"),
])
def test_names_and_urls_are_checked_first(store: LocalStore, call, field: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as info:
        call(store)
    assert info.value.field == field and info.value.exit_code == 2


def test_a_stopped_local_deployment_reads_the_same_through_every_verb(store: LocalStore) -> None:
    _record(store, "stale", EXITED_PID)
    target = resolve("stale", store=store)
    with pytest.raises(DeploymentStoppedError) as info:
        target.predictor()
    assert str(info.value).startswith("local deployment stale has stopped (pid 202)") and info.value.exit_code == 1
    assert target.describe().status is DeploymentStatus.STOPPED
    assert list(target.logs()) == ["loading", "ready"]  # its log outlives it
    assert target.delete() == ["local deployment stale (http://127.0.0.1:8765, pid 202)"]
    assert store.get("stale") is None


def test_a_running_local_deployment_gives_its_predictor_and_description(store: LocalStore) -> None:
    _record(store, "tiny-local", LIVE_PID)
    target = resolve("tiny-local", store=store)
    with target.predictor() as predictor:
        assert isinstance(predictor, LocalPredictor) and predictor.url == "http://127.0.0.1:8765"
    described = target.describe().to_dict()
    assert described == {"name": "tiny-local", "kind": "local", "status": "InService", "url": "http://127.0.0.1:8765",
                         "pid": LIVE_PID, "artifact": "/artifacts/tiny", "created": "2026-01-01T00:00:00+00:00"}


def test_a_bare_url_has_no_log_and_is_not_ours_to_delete(store: LocalStore) -> None:
    target = resolve_url("http://127.0.0.1:9", store=store)
    for verb in (lambda: list(target.logs()), target.delete):
        with pytest.raises(ConfigError):
            verb()


def test_an_unreachable_url_is_out_of_service(store: LocalStore, unused_port: int) -> None:
    assert resolve_url(f"http://127.0.0.1:{unused_port}", store=store).describe().status \
        is DeploymentStatus.OUT_OF_SERVICE


# --- SageMaker, on moto ----------------------------------------------------------------------------


@pytest.fixture
def endpoint(fake_aws_env: None, moto_accepts_inf2: None):  # noqa: ANN201
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model(ModelName="gptj-model", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": IMAGE, "ModelDataSource": {"S3DataSource": {
                "S3Uri": ARTIFACT, "S3DataType": "S3Prefix", "CompressionType": "None"}}})
        sagemaker.create_endpoint_config(EndpointConfigName="gptj-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "gptj-model", "InstanceType": "ml.inf2.8xlarge",
            "InitialInstanceCount": 2}])
        sagemaker.create_endpoint(EndpointName="gptj-prod", EndpointConfigName="gptj-config")
        yield "gptj-prod"


def test_an_endpoint_describes_its_variant_and_the_artifact_its_model_reads(endpoint: str,
                                                                            store: LocalStore) -> None:
    target = resolve(endpoint, region=REGION, store=store)
    described = target.describe()
    assert described.status is DeploymentStatus.IN_SERVICE and described.region == REGION
    assert (described.instance_type, described.instance_count, described.artifact) == (
        "ml.inf2.8xlarge", 2, ARTIFACT)
    assert (described.endpoint_config, described.model) == ("gptj-config", "gptj-model")
    with target.predictor() as predictor:
        assert isinstance(predictor, Predictor) and predictor.endpoint_name == endpoint


def test_a_missing_endpoint_is_not_found_for_describe_and_for_logs(endpoint: str, store: LocalStore) -> None:
    target = resolve("no-such-endpoint", region=REGION, store=store)
    for verb in (target.describe, lambda: list(target.logs())):
        with pytest.raises(EndpointNotFoundError):
            verb()


class _WritingClock(FakeClock):
    """A fake clock on which each sleep lands one more container log line, as CloudWatch would."""

    def __init__(self, logs, group: str) -> None:  # noqa: ANN001 - a boto3 logs client
        super().__init__(start=datetime.now(timezone.utc))
        self.logs, self.group = logs, group

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        stamp = int(self.now().timestamp() * 1000)
        self.logs.put_log_events(logGroupName=self.group, logStreamName="AllTraffic/i-1",
                                 logEvents=[{"timestamp": stamp, "message": f"line {len(self.sleeps)}"}])


def test_endpoint_logs_follow_new_lines_after_the_first_read(endpoint: str, store: LocalStore) -> None:
    logs = boto3.client("logs", region_name=REGION)
    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-1")
    clock = _WritingClock(logs, group)
    stamp = int(clock.start.timestamp() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-1",
                        logEvents=[{"timestamp": stamp, "message": "line 0"}])
    target = resolve(endpoint, region=REGION, store=store, clock=clock)
    assert list(target.logs()) == ["line 0"]
    assert list(itertools.islice(target.logs(follow=True), 3)) == ["line 0", "line 1", "line 2"]


def test_connect_is_resolve_then_predictor(store: LocalStore) -> None:
    _record(store, "stale", EXITED_PID)
    with pytest.raises(DeploymentStoppedError):
        connect("stale", store=store)
    with connect("http://127.0.0.1:9", store=store) as predictor:
        assert isinstance(predictor, LocalPredictor)


# --- the CLI: every command meets a stopped local deployment the same way ------------------------------


@pytest.fixture
def stale_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """INF2_DEPLOY_HOME with one record whose pid is alive but is not a local server (this process)."""
    home = tmp_path / "home"
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(home))
    folder = home / "local"
    folder.mkdir(parents=True)
    record = {"name": "stale", "url": "http://127.0.0.1:9", "pid": os.getpid(), "artifact_dir": str(tmp_path),
              "log_file": str(folder / "stale.log"), "started_at": "2026-01-01T00:00:00+00:00"}
    (folder / "stale.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "stale.log").write_text("server exited\n", encoding="utf-8")
    return home


@pytest.mark.parametrize("argv", [["invoke", "stale", "Hi"], ["chat", "stale"], ["bench", "stale", "--requests", "1"],
                                  ["verify", "stale"]])
def test_every_command_that_sends_requests_says_the_same_one_line(stale_home: Path, argv: list[str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: local deployment stale has stopped") and err.count("\n") == 1


def test_status_says_stopped_logs_still_show_and_delete_forgets(stale_home: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "stale", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "Stopped"
    assert main(["logs", "stale"]) == 0
    assert capsys.readouterr().out == "server exited\n"
    assert main(["delete", "stale"]) == 0
    assert "stopped local deployment stale" in capsys.readouterr().out
    assert not (stale_home / "local" / "stale.json").exists()
