"""Each step of the Deployer alone: stage, build requests, reconcile, apply (with rollback), wait, retire."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.stub import Stubber
from inf2_deploy.aws.deploy import deploy
from inf2_deploy.aws.deployer import Deployer
from inf2_deploy.aws.deployment import Rollout, StagedArtifact, WaitInterrupted
from inf2_deploy.aws.reconcile import Action, Reconciliation
from inf2_deploy.aws.requests import (
    TAG_FINGERPRINT,
    TAG_MANAGED,
    TAG_SETTINGS,
    TAG_VERSION,
    DeployRequests,
    build_requests,
)
from inf2_deploy.aws.tags import plan_tags
from inf2_deploy.aws.upload import UploadResult
from inf2_deploy.errors import AwsError, ConfigError, EndpointFailedError
from inf2_deploy.observer import CallbackObserver, NullObserver, observer_of
from inf2_deploy.spec.planner import check_plan
from inf2_deploy.status import DeploymentStatus
from sagemaker_fakes import ClientsSession, RecordingObserver
from support.aws import ACCOUNT, REGION
from support.clock import FakeClock

BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
WHEN = datetime(2025, 1, 2, tzinfo=timezone.utc)
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"


def _requests(spec, fingerprint: str = "f" * 64) -> DeployRequests:
    return build_requests(spec, check_plan(spec), endpoint_name="tiny", fingerprint=fingerprint,
                          artifact_bytes=1000, model_data_uri=f"s3://{BUCKET}/p/{fingerprint}", bucket=BUCKET,
                          now=WHEN)


def _described(status: str, config: str = "tiny-old") -> dict:
    return {"EndpointName": "tiny", "EndpointArn": f"{ARN}:endpoint/tiny", "EndpointConfigName": config,
            "EndpointStatus": status, "CreationTime": WHEN, "LastModifiedTime": WHEN}


def _config(name: str = "tiny-old", models: tuple[str, ...] = ("tiny-old",)) -> dict:
    return {"EndpointConfigName": name, "EndpointConfigArn": f"{ARN}:endpoint-config/{name}", "CreationTime": WHEN,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model} for model in models]}


def _tags(**tags: str) -> dict:
    return {"Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}


@pytest.fixture
def scaling_stub(make_client):
    """The Stubber'd Application Auto Scaling client of ``stubbed``'s Deployer."""
    with Stubber(make_client("application-autoscaling")) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def stubbed(make_client, scaling_stub):
    """A Deployer on a Stubber'd SageMaker client; yields (deployer, stub, observer)."""
    sagemaker = make_client("sagemaker")
    observer = RecordingObserver()
    with Stubber(sagemaker) as stub:
        session = ClientsSession(sagemaker=sagemaker, **{"application-autoscaling": scaling_stub.client})
        yield Deployer(session, FakeClock(), observer), stub, observer
        stub.assert_no_pending_responses()


def _no_scalable_target(scaling_stub) -> None:
    scaling_stub.add_response("describe_scalable_targets", {"ScalableTargets": []}, {
        "ServiceNamespace": "sagemaker", "ResourceIds": ["endpoint/tiny/variant/AllTraffic"],
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"})


# --- stage -------------------------------------------------------------------------------------------------


def test_stage_creates_the_default_bucket_once_and_uploads_only_once(session, tiny_spec, tiny_artifact):
    observer = RecordingObserver()
    deployer = Deployer(session, FakeClock(), observer)
    first = deployer.stage_artifact(tiny_spec, prefix_root="inf2-deploy/tiny-gptj", artifact=tiny_artifact)
    again = deployer.stage_artifact(tiny_spec, prefix_root="inf2-deploy/tiny-gptj", artifact=tiny_artifact)

    assert first.s3_uri == f"s3://{BUCKET}/inf2-deploy/tiny-gptj/{tiny_artifact.fingerprint}/"
    assert first.upload.bytes_uploaded > 0 and again.upload.bytes_uploaded == 0
    assert [e for e in observer.events if e.startswith("created bucket")] == [f"created bucket {BUCKET}"]
    assert observer.progress[-1][0] == observer.progress[-1][1]  # the second upload reports all bytes done


def test_stage_needs_an_artifact_or_a_folder_to_package_into(session, tiny_spec):
    with pytest.raises(ConfigError) as refused:
        Deployer(session).stage_artifact(tiny_spec, prefix_root="inf2-deploy/tiny-gptj")
    assert refused.value.field == "output"


# --- build requests ----------------------------------------------------------------------------------------


def test_build_requests_names_after_the_clock_and_caches_compiles_in_the_bucket(tiny_spec, tiny_artifact):
    clock = FakeClock(start=WHEN)
    upload = UploadResult(BUCKET, "p/abc/", (), (), 0)
    deployer = Deployer(ClientsSession(), clock)  # no client: building requests calls nothing
    requests = deployer.build_requests(tiny_spec, check_plan(tiny_spec), StagedArtifact(tiny_artifact, upload),
                                       endpoint_name="tiny")
    assert requests.name == f"tiny-{tiny_artifact.fingerprint[:8]}-20250102000000000"
    assert requests.model["ModelName"] == requests.config["EndpointConfigName"] == requests.name
    environment = requests.model["PrimaryContainer"]["Environment"]
    assert environment["NEURON_COMPILE_CACHE_URL"] == f"s3://{BUCKET}/inf2-deploy/neuron-cache/"
    assert requests.model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/p/abc/"
    tags = {tag["Key"]: tag["Value"] for tag in requests.tags}
    assert (tags[TAG_FINGERPRINT], tags[TAG_SETTINGS]) == (tiny_artifact.fingerprint, requests.settings)


# --- reconcile ---------------------------------------------------------------------------------------------


def test_reconcile_creates_when_there_is_no_endpoint(stubbed, tiny_spec):
    deployer, stub, _ = stubbed
    stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint \"tiny\".")
    assert deployer.reconcile(_requests(tiny_spec)) == Reconciliation(Action.CREATE)


def _stub_found(stub: Stubber, config_tags: dict, endpoint_tags: dict, models: tuple[str, ...] = ("tiny-old",)):
    """Answer reconcile's look at an InService endpoint: the endpoint, its config and both tag lists."""
    stub.add_response("describe_endpoint", _described("InService"), {"EndpointName": "tiny"})
    stub.add_response("describe_endpoint_config", _config(models=models), {"EndpointConfigName": "tiny-old"})
    stub.add_response("list_tags", _tags(**config_tags), {"ResourceArn": f"{ARN}:endpoint-config/tiny-old"})
    stub.add_response("list_tags", _tags(**endpoint_tags), {"ResourceArn": f"{ARN}:endpoint/tiny"})


def _deployed_tags(requests: DeployRequests, **extra: str) -> dict:
    """The tags a deploy of ``requests`` left on its resources, with other values for ``extra`` keys."""
    return {**{tag["Key"]: tag["Value"] for tag in requests.tags}, **extra}


def test_reconcile_does_nothing_when_fingerprint_settings_and_tags_match(stubbed, tiny_spec):
    deployer, stub, _ = stubbed
    requests = _requests(tiny_spec.replace(tags={"team": "ml"}))
    # Another toolkit version deployed it, and someone tagged the endpoint by hand: neither is a change.
    tags = _deployed_tags(requests, **{TAG_VERSION: "0.0.1"})
    _stub_found(stub, tags, {**tags, "cost-center": "42"})
    found = deployer.reconcile(requests)
    assert (found.action, found.running_model, found.superseded, found.retag) == (
        Action.NOTHING, "tiny-old", (), ())
    assert found.endpoint.status is DeploymentStatus.IN_SERVICE


def test_reconcile_retags_when_only_the_tags_changed(stubbed, tiny_spec):
    deployer, stub, _ = stubbed
    before = _deployed_tags(_requests(tiny_spec.replace(tags={"team": "ml", "owner": "ana"})))
    requests = _requests(tiny_spec.replace(tags={"team": "search", "stage": "prod"}))
    _stub_found(stub, before, {**before, "cost-center": "42"})
    found = deployer.reconcile(requests)
    assert found.action is Action.RETAG and found.superseded == ()
    endpoint, config = found.retag
    assert (endpoint.arn, config.arn) == (f"{ARN}:endpoint/tiny", f"{ARN}:endpoint-config/tiny-old")
    for change in found.retag:  # only what the last deploy declared is removed: cost-center stays
        assert (dict(change.put), change.remove) == ({"team": "search", "stage": "prod"}, ("owner",))
    assert endpoint.summary() == "set team=search, stage=prod; removed owner"


@pytest.mark.parametrize(("managed", "superseded"), [
    ("true", (("endpoint config", "tiny-old"), ("model", "m1"), ("model", "m2"))),
    (None, ()),  # a config someone else made is left alone
])
def test_reconcile_updates_and_supersedes_only_what_inf2_deploy_made(stubbed, tiny_spec, managed, superseded):
    deployer, stub, _ = stubbed
    tags = {TAG_FINGERPRINT: "another", TAG_SETTINGS: "x", "owner": "ana"} | (
        {TAG_MANAGED: managed} if managed else {})
    _stub_found(stub, tags, tags, models=("m1", "m2"))
    requests = _requests(tiny_spec)
    found = deployer.reconcile(requests)
    assert (found.action, found.superseded) == (Action.UPDATE, superseded)
    (endpoint,) = found.retag  # the endpoint's tags follow the update; owner goes only if a deploy put it there
    assert (endpoint.put[TAG_FINGERPRINT], endpoint.put[TAG_SETTINGS]) == (requests.fingerprint, requests.settings)
    assert endpoint.remove == (("owner",) if managed else ())


@pytest.mark.parametrize(("status", "code"), [("Creating", "EndpointBusy"), ("Updating", "EndpointBusy"),
                                              ("Failed", "EndpointNotUpdatable")])
def test_reconcile_refuses_an_endpoint_that_cannot_take_an_update(stubbed, tiny_spec, status, code):
    deployer, stub, _ = stubbed
    stub.add_response("describe_endpoint", _described(status), {"EndpointName": "tiny"})
    with pytest.raises(AwsError) as refused:
        deployer.reconcile(_requests(tiny_spec))
    assert refused.value.code == code and "inf2-deploy" in refused.value.hint


# --- apply -------------------------------------------------------------------------------------------------


def _stub_model_and_config(stub: Stubber, spec) -> DeployRequests:  # noqa: ANN001
    """Answer CreateModel and CreateEndpointConfig for this spec's requests, which are returned."""
    requests = _requests(spec)
    stub.add_response("create_model", {"ModelArn": f"{ARN}:model/{requests.name}"})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"{ARN}:endpoint-config/{requests.name}"})
    return requests


def test_apply_creates_model_config_and_endpoint_in_order(stubbed, tiny_spec):
    deployer, stub, observer = stubbed
    requests = _stub_model_and_config(stub, tiny_spec)
    stub.add_response("create_endpoint", {"EndpointArn": f"{ARN}:endpoint/tiny"},
                      {"EndpointName": "tiny", "EndpointConfigName": requests.name, "Tags": requests.tags})
    rollout = deployer.apply(requests, Reconciliation(Action.CREATE))
    assert rollout.created == (("model", requests.name), ("endpoint config", requests.name), ("endpoint", "tiny"))
    assert observer.events == [f"created model {requests.name}", f"created endpoint config {requests.name}",
                               "creating endpoint tiny"]


def test_apply_updates_an_existing_endpoint_and_owns_only_model_and_config(stubbed, scaling_stub, tiny_spec):
    deployer, stub, observer = stubbed
    _no_scalable_target(scaling_stub)  # not autoscaled: UpdateEndpoint takes the new config's count
    requests = _stub_model_and_config(stub, tiny_spec)
    retag = plan_tags(f"{ARN}:endpoint/tiny", {"owner": "ana", TAG_FINGERPRINT: "old"}, requests.tags,
                      declared={"owner"})
    stub.add_response("add_tags", {}, {"ResourceArn": f"{ARN}:endpoint/tiny", "Tags": requests.tags})
    stub.add_response("delete_tags", {}, {"ResourceArn": f"{ARN}:endpoint/tiny", "TagKeys": ["owner"]})
    stub.add_response("update_endpoint", {"EndpointArn": f"{ARN}:endpoint/tiny"},
                      {"EndpointName": "tiny", "EndpointConfigName": requests.name})
    rollout = deployer.apply(requests, Reconciliation(Action.UPDATE, retag=(retag,)))
    assert rollout.created == (("model", requests.name), ("endpoint config", requests.name))
    assert rollout.retagged == (retag,)
    assert "tags of endpoint/tiny: removed owner" in observer.events


def test_a_failed_update_call_restores_the_endpoint_tags(stubbed, scaling_stub, tiny_spec):
    deployer, stub, observer = stubbed
    _no_scalable_target(scaling_stub)  # not autoscaled: UpdateEndpoint takes the new config's count
    requests = _stub_model_and_config(stub, tiny_spec)
    endpoint = f"{ARN}:endpoint/tiny"
    retag = plan_tags(endpoint, {"owner": "ana", TAG_FINGERPRINT: "old"}, requests.tags, declared={"owner"})
    stub.add_response("add_tags", {}, {"ResourceArn": endpoint, "Tags": requests.tags})
    stub.add_response("delete_tags", {}, {"ResourceArn": endpoint, "TagKeys": ["owner"]})
    stub.add_client_error("update_endpoint", "ResourceLimitExceeded", "account-level service limit")
    stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": requests.name})
    stub.add_response("delete_model", {}, {"ModelName": requests.name})
    # Undone: the old values back (owner, the old fingerprint), the keys the update added gone.
    stub.add_response("add_tags", {}, {"ResourceArn": endpoint, "Tags": [
        {"Key": TAG_FINGERPRINT, "Value": "old"}, {"Key": "owner", "Value": "ana"}]})
    stub.add_response("delete_tags", {}, {"ResourceArn": endpoint, "TagKeys": [
        tag["Key"] for tag in requests.tags if tag["Key"] != TAG_FINGERPRINT]})
    with pytest.raises(AwsError, match="service limit"):
        deployer.apply(requests, Reconciliation(Action.UPDATE, retag=(retag,)))
    assert observer.events[-1] == (f"rolled back: endpoint config {requests.name}, model {requests.name} "
                                   "(tags restored)")


def test_apply_of_a_retag_only_tags_the_endpoint_and_its_config(stubbed, tiny_spec):
    deployer, stub, _ = stubbed
    requests = _requests(tiny_spec.replace(tags={"team": "search"}))
    changes = tuple(plan_tags(arn, {"team": "ml", "owner": "ana"}, [{"Key": "team", "Value": "search"}],
                              declared={"team", "owner"})
                    for arn in (f"{ARN}:endpoint/tiny", f"{ARN}:endpoint-config/tiny-old"))
    for change in changes:
        stub.add_response("add_tags", {}, {"ResourceArn": change.arn, "Tags": [{"Key": "team", "Value": "search"}]})
        stub.add_response("delete_tags", {}, {"ResourceArn": change.arn, "TagKeys": ["owner"]})
    rollout = deployer.apply(requests, Reconciliation(Action.RETAG, running_model="tiny-old", retag=changes))
    assert (rollout.created, rollout.retagged) == ((), changes)


@pytest.mark.parametrize(("keep", "deletes"), [(False, True), (True, False)])
def test_apply_rolls_back_what_it_created_when_a_call_fails(stubbed, tiny_spec, keep, deletes):
    deployer, stub, observer = stubbed
    requests = _requests(tiny_spec)
    stub.add_response("create_model", {"ModelArn": f"{ARN}:model/{requests.name}"})
    stub.add_client_error("create_endpoint_config", "ValidationException", "instance type not allowed")
    if deletes:  # the config is listed before its call; deleting a config that was never made is a no-op
        stub.add_client_error("delete_endpoint_config", "ValidationException", "Could not find endpoint config.",
                              expected_params={"EndpointConfigName": requests.name})
        stub.add_response("delete_model", {}, {"ModelName": requests.name})
    with pytest.raises(AwsError, match="instance type not allowed"):
        deployer.apply(requests, Reconciliation(Action.CREATE), keep_on_failure=keep)
    assert (f"rolled back: model {requests.name}" in observer.events) is deletes


def test_apply_has_nothing_to_do_for_an_unchanged_endpoint(stubbed, tiny_spec):
    deployer, _, _ = stubbed
    with pytest.raises(ValueError, match="nothing to apply"):
        deployer.apply(_requests(tiny_spec), Reconciliation(Action.NOTHING))


# --- wait and retire (moto) --------------------------------------------------------------------------------


def _applied(session, spec, artifact, clock, observer=None) -> tuple[Deployer, Rollout]:
    deployer = Deployer(session, clock, observer)
    staged = deployer.stage_artifact(spec, prefix_root="inf2-deploy/tiny-gptj", artifact=artifact)
    requests = deployer.build_requests(spec, check_plan(spec), staged, endpoint_name="tiny")
    return deployer, deployer.apply(requests, deployer.reconcile(requests))


def _names(session) -> tuple[list[str], list[str], list[str]]:
    sagemaker = session.client("sagemaker")
    return ([e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]],
            [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]],
            [m["ModelName"] for m in sagemaker.list_models()["Models"]])


def test_wait_reports_each_poll_and_returns_the_endpoint_in_service(
        session, tiny_spec, tiny_artifact, status_script):
    observer = RecordingObserver()
    clock = FakeClock()
    deployer, rollout = _applied(session, tiny_spec, tiny_artifact, clock, observer)
    status_script(session.client("sagemaker"), ["Creating", "InService"])
    endpoint = deployer.wait(rollout, poll=10)
    assert endpoint.status is DeploymentStatus.IN_SERVICE
    assert observer.statuses == [(DeploymentStatus.CREATING, 0), (DeploymentStatus.IN_SERVICE, 10)]


def test_wait_rolls_back_a_failed_endpoint(session, tiny_spec, tiny_artifact, status_script):
    deployer, rollout = _applied(session, tiny_spec, tiny_artifact, FakeClock())
    status_script(session.client("sagemaker"), ["Failed"], failure_reason="ping failed")
    with pytest.raises(EndpointFailedError, match="ping failed") as failed:
        deployer.wait(rollout)
    name = rollout.requests.name
    assert f"rolled back: endpoint tiny, endpoint config {name}, model {name}" in str(failed.value)
    assert _names(session) == ([], [], [])


def test_ctrl_c_in_wait_keeps_the_endpoint(session, tiny_spec, tiny_artifact, status_script):
    deployer, rollout = _applied(session, tiny_spec, tiny_artifact, FakeClock(interrupt_after=1))
    status_script(session.client("sagemaker"), ["Creating"])
    with pytest.raises(WaitInterrupted, match="still Creating"):
        deployer.wait(rollout)
    assert _names(session)[0] == ["tiny"]


def test_retire_deletes_what_an_update_superseded(session, tiny_spec, tiny_artifact):
    deployer, rollout = _applied(session, tiny_spec, tiny_artifact, FakeClock())
    name = rollout.requests.name
    superseded = Reconciliation(Action.UPDATE, superseded=(("endpoint config", name), ("model", name),
                                                           ("model", "never-existed")))
    assert deployer.retire(superseded) == [f"endpoint config {name}", f"model {name}"]
    assert _names(session)[1:] == ([], [])


# --- the observer ------------------------------------------------------------------------------------------


def test_deploy_reports_each_step_to_one_observer(session, tiny_spec, tiny_artifact, make_clock):
    observer = RecordingObserver()
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock(), observer=observer)
    assert observer.events[0] == f"created bucket {BUCKET}"
    assert observer.events[2:] == [f"created model {first.model_name}",
                                   f"created endpoint config {first.model_name}", "creating endpoint tiny"]
    assert [status for status, _ in observer.statuses] == [DeploymentStatus.IN_SERVICE]
    observer.events.clear()
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock(), observer=observer)
    assert observer.events[-1].endswith("nothing to do")


def test_an_observer_and_loose_callbacks_do_not_mix():
    assert isinstance(observer_of(), NullObserver)
    assert isinstance(observer_of(progress=print), CallbackObserver)
    mine = RecordingObserver()
    assert observer_of(mine) is mine
    with pytest.raises(ConfigError) as both:
        observer_of(mine, on_log=print)
    assert both.value.field == "observer"
