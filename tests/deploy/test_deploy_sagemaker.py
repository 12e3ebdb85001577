"""deploy() against moto: exact SageMaker requests, S3 objects, no-op redeploy, update, failure, Ctrl-C."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from inf2_deploy import version
from inf2_deploy.aws.deploy import deploy, list_deployments
from inf2_deploy.aws.deployment import WaitInterrupted
from inf2_deploy.aws.teardown import delete_deployment
from inf2_deploy.errors import AwsError, EndpointFailedError
from inf2_deploy.status import DeploymentStatus
from support.aws import ACCOUNT, IMAGE, REGION, ROLE

BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
UPLOAD_CALLS = {"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload"}


def _names(session, kind: str) -> list[str]:
    sagemaker = session.client("sagemaker")
    if kind == "models":
        return [m["ModelName"] for m in sagemaker.list_models()["Models"]]
    if kind == "configs":
        return [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    return [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]


def test_first_deploy_sends_exact_requests(session, tiny_spec, tiny_artifact, clock, count_calls):
    calls = count_calls(session.client("sagemaker"))
    deployment = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock)

    fingerprint = tiny_artifact.fingerprint
    name = f"tiny-{fingerprint[:8]}-20250102030405000"
    prefix = f"s3://{BUCKET}/inf2-deploy/tiny-gptj/{fingerprint}/"
    assert deployment.endpoint_name == "tiny"
    assert (deployment.model_name, deployment.endpoint_config_name) == (name, name)
    assert deployment.artifact_s3_uri == prefix
    assert deployment.status is DeploymentStatus.IN_SERVICE and deployment.changed
    sent = dict((t["Key"], t["Value"]) for t in calls.params("CreateModel")[0]["Tags"])
    tags = [
        {"Key": "inf2-deploy:managed", "Value": "true"},
        {"Key": "inf2-deploy:version", "Value": version.__version__},
        {"Key": "inf2-deploy:fingerprint", "Value": fingerprint},
        {"Key": "inf2-deploy:settings", "Value": sent["inf2-deploy:settings"]},
        {"Key": "inf2-deploy:model-settings", "Value": sent["inf2-deploy:model-settings"]},
        {"Key": "inf2-deploy:endpoint", "Value": "tiny"},
    ]
    assert calls.params("CreateModel") == [{
        "ModelName": name,
        "PrimaryContainer": {
            "Image": IMAGE,
            "ModelDataSource": {"S3DataSource": {"S3Uri": prefix, "S3DataType": "S3Prefix",
                                                 "CompressionType": "None"}},
            "Environment": {"NEURON_COMPILE_CACHE_URL": f"s3://{BUCKET}/inf2-deploy/neuron-cache/"},
        },
        "ExecutionRoleArn": ROLE,
        "Tags": tags,
    }]
    assert calls.params("CreateEndpointConfig") == [{
        "EndpointConfigName": name,
        "ProductionVariants": [{
            "VariantName": "AllTraffic",
            "ModelName": name,
            "InstanceType": "ml.inf2.xlarge",
            "InitialInstanceCount": 1,
            "ContainerStartupHealthCheckTimeoutInSeconds": 3600,
            "ModelDataDownloadTimeoutInSeconds": 3600,
            "VolumeSizeInGB": 30,
        }],
        "Tags": tags,
    }]
    assert calls.params("CreateEndpoint") == [{"EndpointName": "tiny", "EndpointConfigName": name, "Tags": tags}]
    assert "UpdateEndpoint" not in calls.names()


def test_upload_sets_sse_metadata_and_private_bucket(session, tiny_spec, tiny_artifact, clock):
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock)
    s3 = session.client("s3")
    key_prefix = f"inf2-deploy/tiny-gptj/{tiny_artifact.fingerprint}/"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix)["Contents"]
    expected = {f.path: f for f in tiny_artifact.files}
    assert sorted(o["Key"][len(key_prefix):] for o in listed) == sorted([*expected, "manifest.json"])
    for path, item in expected.items():
        head = s3.head_object(Bucket=BUCKET, Key=key_prefix + path)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["Metadata"] == {"sha256": item.sha256}
        assert head["ContentLength"] == item.size
        assert head["ETag"].strip('"') == item.s3_etag
    assert s3.get_object(Bucket=BUCKET, Key=key_prefix + "manifest.json")["Body"].read() == \
        tiny_artifact.manifest_path.read_bytes()
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_kms_key_encrypts_every_object(session, tiny_spec, tiny_artifact, clock):
    key = session.client("kms").create_key()["KeyMetadata"]["Arn"]
    deploy(tiny_spec.replace(kms_key_id=key), artifact=tiny_artifact, session=session, clock=clock)
    s3 = session.client("s3")
    for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        head = s3.head_object(Bucket=BUCKET, Key=obj["Key"])
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)


def test_second_deploy_uploads_nothing_and_is_a_no_op(
        session, tiny_spec, tiny_artifact, make_clock, count_calls):
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock())
    calls = count_calls(session.client("s3"), session.client("sagemaker"))
    later = make_clock()
    later.elapsed = 3600.0
    second = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=later)

    assert not second.changed and second.bytes_uploaded == 0
    assert first.bytes_uploaded == tiny_artifact.total_bytes + tiny_artifact.manifest_path.stat().st_size
    assert "nothing to do" in second.message
    assert (second.model_name, second.endpoint_config_name) == (first.model_name, first.endpoint_config_name)
    assert not UPLOAD_CALLS & set(calls.names())
    assert not {"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint",
                "DeleteModel", "DeleteEndpointConfig"} & set(calls.names())
    assert _names(session, "models") == [first.model_name]


def test_an_instance_count_change_updates_only_the_endpoint_config(
        session, tiny_spec, tiny_artifact, make_clock, count_calls, status_script):
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock())
    sagemaker = session.client("sagemaker")
    calls = count_calls(sagemaker)
    served = status_script(sagemaker, ["InService", "Updating", "Updating", "InService"])
    later = make_clock()
    later.elapsed = 60.0
    statuses = []
    second = deploy(tiny_spec.replace(instance_count=2), artifact=tiny_artifact, session=session, clock=later,
                    on_status=lambda status, elapsed: statuses.append(status))

    # The model (artifact, image, environment) is unchanged: the new config serves the running model.
    assert second.changed and second.model_name == first.model_name and second.bytes_uploaded == 0
    assert "CreateModel" not in calls.names()
    assert calls.params("CreateEndpointConfig")[0]["ProductionVariants"][0]["ModelName"] == first.model_name
    assert calls.params("UpdateEndpoint") == [{"EndpointName": "tiny",
                                               "EndpointConfigName": second.endpoint_config_name}]
    assert "CreateEndpoint" not in calls.names()
    assert served == ["InService", "Updating", "Updating", "InService"]
    assert statuses == [DeploymentStatus.UPDATING, DeploymentStatus.UPDATING, DeploymentStatus.IN_SERVICE]
    # SageMaker moved traffic to the new config; the old config was removed afterwards, the model kept.
    assert calls.names().index("UpdateEndpoint") < calls.names().index("DeleteEndpointConfig")
    assert "DeleteModel" not in calls.names()
    assert _names(session, "models") == [first.model_name]
    assert _names(session, "configs") == [second.endpoint_config_name]
    described = sagemaker.describe_endpoint(EndpointName="tiny")
    assert described["EndpointConfigName"] == second.endpoint_config_name
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2


def test_a_model_change_updates_in_place_and_removes_the_superseded_model(
        session, tiny_spec, tiny_artifact, make_clock, count_calls, status_script):
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock())
    sagemaker = session.client("sagemaker")
    calls = count_calls(sagemaker)
    status_script(sagemaker, ["InService", "Updating", "InService"])
    later = make_clock()
    later.elapsed = 60.0
    second = deploy(tiny_spec.replace(env={"OPTION_ROLLING_BATCH": "disable"}), artifact=tiny_artifact,
                    session=session, clock=later)

    assert second.changed and second.model_name != first.model_name
    assert len(calls.params("CreateModel")) == 1
    assert calls.params("UpdateEndpoint") == [{"EndpointName": "tiny", "EndpointConfigName": second.model_name}]
    assert calls.names().index("UpdateEndpoint") < calls.names().index("DeleteModel")
    assert _names(session, "models") == [second.model_name]
    assert _names(session, "configs") == [second.endpoint_config_name]


def test_failed_update_keeps_the_old_config_and_removes_only_the_new_one(
        session, tiny_spec, tiny_artifact, make_clock, status_script):
    first = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock())
    sagemaker = session.client("sagemaker")
    status_script(sagemaker, ["InService", "Updating", "InService"])

    def rolled_back(parsed: dict, **kwargs: object) -> None:
        # SageMaker's automatic rollback: InService again, on the previous config, with a reason.
        if parsed.get("EndpointStatus") == "InService":
            parsed["EndpointConfigName"] = first.endpoint_config_name
            parsed["FailureReason"] = "new variant failed the ping health check; rolled back"

    sagemaker.meta.events.register("after-call.sagemaker.DescribeEndpoint", rolled_back)
    later = make_clock()
    later.elapsed = 60.0
    with pytest.raises(EndpointFailedError, match="rolled back") as failed:
        deploy(tiny_spec.replace(instance_count=2), artifact=tiny_artifact, session=session, clock=later)
    assert "endpoint tiny" not in str(failed.value).split("rolled back:")[-1]
    assert _names(session, "models") == [first.model_name]
    assert _names(session, "configs") == [first.endpoint_config_name]
    assert _names(session, "endpoints") == ["tiny"]


def _put_logs(session, lines: list[str], start_ms: int) -> None:
    logs = session.client("logs")
    group = "/aws/sagemaker/Endpoints/tiny"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0")
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-0",
                        logEvents=[{"timestamp": start_ms + i, "message": line} for i, line in enumerate(lines)])


def test_failed_endpoint_is_rolled_back_with_reason_and_logs(
        session, tiny_spec, tiny_artifact, make_clock, status_script):
    # CloudWatch (and moto) reject events older than 14 days, so this clock starts now.
    clock = make_clock(start=datetime.now(timezone.utc))
    sagemaker = session.client("sagemaker")
    status_script(sagemaker, ["Creating", "Creating", "Failed"],
                  failure_reason="The primary container for production variant AllTraffic did not pass the ping "
                                 "health check.")
    _put_logs(session, ["Compiler status PASS", "RuntimeError: NRT init failed"],
              int(clock.now().timestamp() * 1000) + 5)
    seen = []
    with pytest.raises(EndpointFailedError) as failed:
        deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, poll=30,
               on_log=lambda line: seen.append(line.message))

    message = str(failed.value)
    assert "did not pass the ping health check" in message
    assert "RuntimeError: NRT init failed" in message
    assert "rolled back: endpoint tiny" in message
    assert seen == ["Compiler status PASS", "RuntimeError: NRT init failed"]
    assert clock.sleeps == [30, 30]
    assert (_names(session, "endpoints"), _names(session, "models"), _names(session, "configs")) == ([], [], [])


def test_keep_on_failure_keeps_everything(session, tiny_spec, tiny_artifact, clock, status_script):
    status_script(session.client("sagemaker"), ["Failed"], failure_reason="boom")
    with pytest.raises(EndpointFailedError, match="boom") as failed:
        deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, keep_on_failure=True)
    assert "inf2-deploy delete tiny" in str(failed.value)
    assert _names(session, "endpoints") == ["tiny"]
    assert len(_names(session, "models")) == len(_names(session, "configs")) == 1


def test_ctrl_c_while_waiting_leaves_the_endpoint_and_says_what_next(
        session, tiny_spec, tiny_artifact, make_clock, status_script):
    status_script(session.client("sagemaker"), ["Creating"])
    with pytest.raises(WaitInterrupted) as interrupted:
        deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=make_clock(interrupt_after=3))
    message = str(interrupted.value)
    assert "still Creating" in message
    assert "inf2-deploy status tiny" in message and "inf2-deploy delete tiny" in message
    assert isinstance(interrupted.value, KeyboardInterrupt)
    assert _names(session, "endpoints") == ["tiny"]
    assert len(_names(session, "models")) == len(_names(session, "configs")) == 1


def test_no_wait_returns_while_creating(session, tiny_spec, tiny_artifact, clock, count_calls):
    calls = count_calls(session.client("sagemaker"))
    deployment = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, wait=False)
    assert deployment.status is DeploymentStatus.CREATING
    assert "DescribeEndpoint" in calls.names()  # the existence check, before creating
    assert calls.names()[-1] == "CreateEndpoint"
    assert clock.sleeps == []


def test_hf_token_reaches_the_container_only_when_given(session, tiny_spec, tiny_artifact, clock, count_calls):
    calls = count_calls(session.client("sagemaker"))
    deployment = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, hf_token="hf_secret")
    assert calls.params("CreateModel")[0]["PrimaryContainer"]["Environment"]["HF_TOKEN"] == "hf_secret"
    assert "hf_secret" not in repr(deployment) + deployment.message
    tags = {t["Key"]: t["Value"] for t in calls.params("CreateModel")[0]["Tags"]}
    assert "hf_secret" not in str(tags)


def test_delete_removes_endpoint_config_model_and_purges_artifact(session, tiny_spec, tiny_artifact, clock):
    deployment = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock)
    deleted = delete_deployment("tiny", purge_artifacts=True, session=session)
    assert list(deleted[:3]) == ["endpoint tiny", f"endpoint config {deployment.endpoint_config_name}",
                                 f"model {deployment.model_name}"]
    assert deleted[3] == f"{len(tiny_artifact.files) + 1} S3 objects under {deployment.artifact_s3_uri}"
    assert deleted[4] == f"artifact index s3://{BUCKET}/inf2-deploy/tiny-gptj/index/tiny.json"
    assert len(deleted) == 5 and deleted.kept == () and not deleted.dry_run
    assert (_names(session, "endpoints"), _names(session, "models"), _names(session, "configs")) == ([], [], [])
    key_prefix = f"inf2-deploy/tiny-gptj/{tiny_artifact.fingerprint}/"
    assert "Contents" not in session.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=key_prefix)


def test_delete_of_a_creating_endpoint_refuses_or_waits(
        session, tiny_spec, tiny_artifact, clock, status_script):
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock, wait=False)
    status_script(session.client("sagemaker"), ["Creating", "Creating", "InService"])
    with pytest.raises(AwsError) as busy:
        delete_deployment("tiny", session=session, clock=clock)
    assert busy.value.code == "EndpointBusy"
    assert "refuses to delete it until it leaves Creating" in str(busy.value)
    assert "--wait" in str(busy.value)
    assert delete_deployment("tiny", wait=True, session=session, clock=clock)[0] == "endpoint tiny"
    assert _names(session, "endpoints") == []


def test_delete_unknown_endpoint_names_list_command(session):
    with pytest.raises(AwsError, match="no endpoint named nope") as missing:
        delete_deployment("nope", session=session)
    assert missing.value.code == "NotFound" and "inf2-deploy list" in str(missing.value)


def test_list_shows_only_managed_endpoints(session, tiny_spec, tiny_artifact, clock):
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock)
    sagemaker = session.client("sagemaker")
    # An endpoint someone else made, without our tags, in the same account.
    sagemaker.create_model(ModelName="other", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    sagemaker.create_endpoint_config(EndpointConfigName="other", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "other", "InstanceType": "ml.m5.large",
         "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="other", EndpointConfigName="other")

    items = list_deployments(session, local=False)
    assert [(i.name, i.kind, i.status, i.instance_type, i.location) for i in items] == [
        ("tiny", "sagemaker", "InService", "ml.inf2.xlarge", REGION)]
    assert items[0].age_seconds() is not None and items[0].age_seconds() >= 0
