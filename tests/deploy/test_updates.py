"""Complete endpoint updates and the SDK's deploy options, against moto: tags reconciled with
AddTags/DeleteTags, KmsKeyId and DataCaptureConfig on the endpoint config, ``--model-data`` checked
before any create, and ``wait`` after ``deploy --no-wait``."""
from __future__ import annotations

import time

import boto3
import pytest
from inf2_deploy.artifact.manifest import MANIFEST_NAME
from inf2_deploy.aws.deploy import deploy
from inf2_deploy.aws.requests import TAG_FINGERPRINT, TAG_MANAGED, TAG_SETTINGS
from inf2_deploy.aws.s3 import ensure_bucket
from inf2_deploy.aws.upload import upload_artifact
from inf2_deploy.cli import main
from inf2_deploy.client.targets import SageMakerTarget, resolve
from inf2_deploy.errors import ConfigError, DeploymentStoppedError, EndpointFailedError, ModelSourceError
from inf2_deploy.local.records import LocalDeployment, LocalStore
from inf2_deploy.status import DeploymentStatus
from sagemaker_fakes import RecordingObserver
from support.aws import ACCOUNT, REGION, ROLE
from support.clock import FakeClock

BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
UPLOAD_CALLS = {"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload"}
CHANGE_CALLS = {"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint", "DeleteModel",
                "DeleteEndpointConfig"}
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _tags(sagemaker, arn: str) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in sagemaker.list_tags(ResourceArn=arn)["Tags"]}


def _later(make_clock, seconds: float) -> FakeClock:
    clock = make_clock()
    clock.advance(seconds)
    return clock


# --- tags ----------------------------------------------------------------------------------------------------


def test_a_tag_only_redeploy_adds_and_removes_tags_and_uploads_nothing(
        session, tiny_spec, tiny_artifact, make_clock, count_calls):
    first = deploy(tiny_spec.replace(tags={"team": "ml", "owner": "ana"}), artifact=tiny_artifact,
                   session=session, clock=make_clock())
    sagemaker = session.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName="tiny")["EndpointArn"]
    config = sagemaker.describe_endpoint_config(EndpointConfigName=first.endpoint_config_name)["EndpointConfigArn"]
    sagemaker.add_tags(ResourceArn=endpoint, Tags=[{"Key": "cost-center", "Value": "42"}])  # someone, by hand
    calls = count_calls(session.client("s3"), sagemaker)

    second = deploy(tiny_spec.replace(tags={"team": "search", "stage": "prod"}), artifact=tiny_artifact,
                    session=session, clock=_later(make_clock, 60))

    assert second.changed and second.bytes_uploaded == 0
    assert second.message.endswith("updated its tags: set team=search, stage=prod; removed owner")
    assert (second.model_name, second.endpoint_config_name) == (first.model_name, first.endpoint_config_name)
    assert not (UPLOAD_CALLS | CHANGE_CALLS) & set(calls.names())
    assert calls.params("DeleteTags") == [{"ResourceArn": endpoint, "TagKeys": ["owner"]},
                                          {"ResourceArn": config, "TagKeys": ["owner"]}]
    on_endpoint, on_config = _tags(sagemaker, endpoint), _tags(sagemaker, config)
    assert {key: on_endpoint.get(key) for key in ("team", "stage", "owner", "cost-center")} == {
        "team": "search", "stage": "prod", "owner": None, "cost-center": "42"}
    assert {key: on_config.get(key) for key in ("team", "stage", "owner")} == {
        "team": "search", "stage": "prod", "owner": None}
    for ours in (TAG_MANAGED, TAG_FINGERPRINT, TAG_SETTINGS):  # the toolkit's own stay, unchanged
        assert on_endpoint[ours] == on_config[ours] and on_endpoint[ours]

    third = deploy(tiny_spec.replace(tags={"team": "search", "stage": "prod"}), artifact=tiny_artifact,
                   session=session, clock=_later(make_clock, 120))
    assert not third.changed and third.message.endswith("nothing to do")


def test_an_update_brings_the_endpoint_tags_along(session, tiny_spec, tiny_artifact, make_clock):
    deploy(tiny_spec.replace(tags={"owner": "ana"}), artifact=tiny_artifact, session=session, clock=make_clock())
    second = deploy(tiny_spec.replace(instance_count=2), artifact=tiny_artifact, session=session,
                    clock=_later(make_clock, 60))
    sagemaker = session.client("sagemaker")
    endpoint = _tags(sagemaker, sagemaker.describe_endpoint(EndpointName="tiny")["EndpointArn"])
    config = _tags(sagemaker, sagemaker.describe_endpoint_config(
        EndpointConfigName=second.endpoint_config_name)["EndpointConfigArn"])
    assert "owner" not in endpoint
    assert endpoint[TAG_SETTINGS] == config[TAG_SETTINGS]  # UpdateEndpoint alone would leave the first's


# --- KMS and data capture ------------------------------------------------------------------------------------


def test_kms_key_and_data_capture_reach_the_endpoint_config(session, tiny_spec, tiny_artifact, make_clock):
    spec = tiny_spec.replace(kms_key_id=KMS_KEY, data_capture_uri="s3://capture-bucket/tiny/", capture_percent=50)
    deployment = deploy(spec, artifact=tiny_artifact, session=session, clock=make_clock())
    config = session.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=deployment.endpoint_config_name)
    assert config["KmsKeyId"] == KMS_KEY
    capture = config["DataCaptureConfig"]
    assert (capture["EnableCapture"], capture["InitialSamplingPercentage"], capture["DestinationS3Uri"]) == (
        True, 50, "s3://capture-bucket/tiny/")
    assert [option["CaptureMode"] for option in capture["CaptureOptions"]] == ["Input", "Output"]
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json", "application/jsonlines"]}
    assert capture["KmsKeyId"] == KMS_KEY


def test_turning_data_capture_on_updates_the_endpoint_and_uploads_nothing(
        session, tiny_spec, tiny_artifact, make_clock, count_calls):
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock())
    calls = count_calls(session.client("s3"), session.client("sagemaker"))
    second = deploy(tiny_spec.replace(data_capture_uri="s3://capture-bucket/tiny/"), artifact=tiny_artifact,
                    session=session, clock=_later(make_clock, 60))
    assert second.changed and second.bytes_uploaded == 0 and second.endpoint_config_name != first.endpoint_config_name
    assert "UpdateEndpoint" in calls.names() and not UPLOAD_CALLS & set(calls.names())
    (request,) = calls.params("CreateEndpointConfig")
    assert request["DataCaptureConfig"]["InitialSamplingPercentage"] == 20  # the SDK's default


# --- --model-data --------------------------------------------------------------------------------------------


@pytest.fixture
def model_data(session, tiny_artifact) -> str:
    """tiny-gptj's artifact uploaded to ``s3://BUCKET/shared/tiny/`` as a package step would leave it."""
    s3 = session.client("s3")
    ensure_bucket(s3, BUCKET, REGION, create=True)
    upload_artifact(s3, tiny_artifact, BUCKET, "shared/tiny")
    return f"s3://{BUCKET}/shared/tiny/"


def test_model_data_deploys_the_artifact_in_s3_as_it_is(session, tiny_spec, tiny_artifact, model_data, clock,
                                                        count_calls):
    calls = count_calls(session.client("s3"), session.client("sagemaker"))
    deployment = deploy(tiny_spec, model_data=model_data, session=session, clock=clock)
    assert deployment.status is DeploymentStatus.IN_SERVICE and deployment.bytes_uploaded == 0
    assert deployment.artifact_s3_uri == model_data
    assert not UPLOAD_CALLS & set(calls.names()) and "CreateBucket" not in calls.names()
    (model,) = calls.params("CreateModel")
    container = model["PrimaryContainer"]
    assert container["ModelDataSource"]["S3DataSource"]["S3Uri"] == model_data
    # No bucket named: the compile cache goes beside the artifact, and nothing is created for it.
    assert container["Environment"]["NEURON_COMPILE_CACHE_URL"] == f"s3://{BUCKET}/inf2-deploy/neuron-cache/"
    tags = {tag["Key"]: tag["Value"] for tag in model["Tags"]}
    assert tags[TAG_FINGERPRINT] == tiny_artifact.fingerprint


def _no_sagemaker_change(calls) -> None:  # noqa: ANN001 - a CallCounter
    assert not {name for name in calls.names() if name.startswith(("Create", "Update", "Delete"))}


def test_model_data_without_a_manifest_is_refused_before_any_create(session, tiny_spec, model_data, clock,
                                                                    count_calls):
    calls = count_calls(session.client("sagemaker"))
    with pytest.raises(ModelSourceError) as refused:
        deploy(tiny_spec, model_data=f"s3://{BUCKET}/shared/elsewhere/", session=session, clock=clock)
    assert refused.value.field == "model_data"
    assert str(refused.value).startswith(f"model_data: there is no {MANIFEST_NAME} under s3://{BUCKET}/shared/")
    _no_sagemaker_change(calls)


@pytest.mark.parametrize(("damage", "error", "said"), [
    ("missing", ModelSourceError, "model.safetensors missing"),
    ("resized", ModelSourceError, "model.safetensors is 3 bytes, the manifest says"),
    ("malformed", ModelSourceError, f"cannot read s3://{BUCKET}/shared/tiny/{MANIFEST_NAME}: Expecting"),
    ("other plan", ConfigError, "was built for n_positions 1024; this deployment plans n_positions 64"),
])
def test_a_mismatched_model_data_is_refused_before_any_create(
        session, tiny_spec, model_data, clock, count_calls, damage, error, said):
    s3 = session.client("s3")
    spec = tiny_spec
    if damage == "missing":
        s3.delete_object(Bucket=BUCKET, Key="shared/tiny/model.safetensors")
    elif damage == "resized":
        s3.put_object(Bucket=BUCKET, Key="shared/tiny/model.safetensors", Body=b"abc")
    elif damage == "malformed":
        s3.put_object(Bucket=BUCKET, Key=f"shared/tiny/{MANIFEST_NAME}", Body=b"{not json")
    else:
        spec = tiny_spec.replace(n_positions=64)
    calls = count_calls(session.client("sagemaker"))
    with pytest.raises(error) as refused:
        deploy(spec, model_data=model_data, session=session, clock=clock)
    assert refused.value.field == "model_data" and said in str(refused.value)
    assert "inf2-deploy-model-data-" not in str(refused.value)  # the URI is named, not a temporary copy
    _no_sagemaker_change(calls)


@pytest.mark.parametrize("uri", ["shared/tiny", "s3://Bad_Bucket/tiny/", f"s3://{BUCKET}", f"s3://{BUCKET}/a/../b"])
def test_a_malformed_model_data_uri_is_a_usage_error_with_no_aws_call(uri, capsys, monkeypatch):
    def no_aws(*args: object, **kwargs: object) -> None:
        raise AssertionError("an AWS client was created")

    monkeypatch.setattr(boto3.session.Session, "client", no_aws)
    argv = ["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--role", ROLE,
            "--region", REGION, "--model-data", uri]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: model_data: must be the s3://BUCKET/PREFIX/")
    assert main([*argv, "--local"]) == 2
    assert "--model-data applies to SageMaker deploys" in capsys.readouterr().err


# --- wait ----------------------------------------------------------------------------------------------------


def _put_log_line(session, message: str) -> None:
    logs = session.client("logs")
    group = "/aws/sagemaker/Endpoints/tiny"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0")
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-0",
                        logEvents=[{"timestamp": int(time.time() * 1000) + 1000, "message": message}])


def test_wait_follows_a_no_wait_deploy_until_in_service_with_its_logs(
        session, tiny_spec, tiny_artifact, clock, status_script):
    deployment = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, wait=False)
    assert deployment.status is DeploymentStatus.CREATING
    _put_log_line(session, "Compiling bucket 128")
    # The first answer is the lookup's, before the polls.
    status_script(session.client("sagemaker"), ["Creating", "Creating", "Creating", "InService"])
    observer = RecordingObserver()
    waiting = FakeClock()
    status = SageMakerTarget("tiny", session=session, clock=waiting).wait(poll=20, observer=observer)
    assert status is DeploymentStatus.IN_SERVICE
    assert observer.statuses == [(DeploymentStatus.CREATING, 0), (DeploymentStatus.CREATING, 20),
                                 (DeploymentStatus.IN_SERVICE, 40)]
    assert observer.lines == ["Compiling bucket 128"] and waiting.sleeps == [20, 20]


def test_wait_raises_the_failure_reason_of_a_failed_endpoint(session, tiny_spec, tiny_artifact, clock,
                                                             status_script):
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, wait=False)
    status_script(session.client("sagemaker"), ["Creating", "Failed"], failure_reason="ping health check failed")
    with pytest.raises(EndpointFailedError, match="endpoint tiny is Failed: ping health check failed"):
        SageMakerTarget("tiny", session=session, clock=FakeClock()).wait()


def test_wait_reports_an_update_that_sagemaker_rolled_back(session, tiny_spec, tiny_artifact, make_clock,
                                                           status_script):
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock())
    deploy(tiny_spec.replace(instance_count=2), artifact=tiny_artifact, session=session,
           clock=_later(make_clock, 60), wait=False)
    sagemaker = session.client("sagemaker")
    status_script(sagemaker, ["Updating", "Updating", "InService"])

    def rolled_back(parsed: dict, **kwargs: object) -> None:
        # SageMaker's automatic rollback: InService again, on the previous config, with a reason.
        if parsed.get("EndpointStatus") == "InService":
            parsed["EndpointConfigName"] = first.endpoint_config_name
            parsed["FailureReason"] = "new variant failed the ping health check"

    sagemaker.meta.events.register("after-call.sagemaker.DescribeEndpoint", rolled_back)
    with pytest.raises(EndpointFailedError) as failed:
        SageMakerTarget("tiny", session=session, clock=FakeClock()).wait()
    assert str(failed.value).startswith(f"the update of endpoint tiny failed and SageMaker rolled it back to "
                                        f"{first.endpoint_config_name}, which still serves: new variant failed")


def test_wait_gives_up_after_its_timeout(session, tiny_spec, tiny_artifact, clock, status_script):
    from inf2_deploy.errors import AwsError

    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, wait=False)
    status_script(session.client("sagemaker"), ["Creating"])
    waiting = FakeClock()
    with pytest.raises(AwsError) as late:
        SageMakerTarget("tiny", session=session, clock=waiting).wait(timeout=60, poll=15)
    assert late.value.code == "Timeout" and waiting.elapsed == 60


@pytest.mark.parametrize(("statuses", "code", "said"), [
    (["Creating", "InService"], 0, "endpoint tiny is InService"),
    (["Creating", "Failed"], 1, "error: endpoint tiny is Failed: no capacity"),
])
def test_cli_wait_exits_0_in_service_and_1_failed(session, tiny_spec, tiny_artifact, clock, status_script,
                                                  monkeypatch, capsys, statuses, code, said):
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, wait=False)
    status_script(session.client("sagemaker"), statuses, failure_reason="no capacity")
    # The command resolves NAME to this session's endpoint (with the status script), on a fake clock.
    monkeypatch.setattr("inf2_deploy.client.targets.resolve",
                        lambda name, region=None: SageMakerTarget(name, session=session, clock=FakeClock()))
    assert main(["wait", "tiny"]) == code
    captured = capsys.readouterr()
    assert said in (captured.out if code == 0 else captured.err)


def test_cli_wait_for_an_unknown_endpoint_exits_2(session, capsys):
    assert main(["wait", "nope", "--region", REGION]) == 2
    assert capsys.readouterr().err.startswith("error: name: no endpoint named nope")


@pytest.mark.parametrize("alive", [True, False])
def test_a_local_target_is_ready_or_stopped_at_once(tmp_path, alive):
    store = LocalStore(tmp_path / "records", alive=lambda pid: alive)
    store.save(LocalDeployment(name="demo", url="http://127.0.0.1:8124", pid=42, artifact_dir="/a",
                               log_file="/a.log", started_at="2025-01-02T03:04:05+00:00"))
    target = resolve("demo", store=store)
    if alive:
        assert target.wait(timeout=1) is DeploymentStatus.IN_SERVICE
    else:
        with pytest.raises(DeploymentStoppedError):
            target.wait()

