"""Request builders and the CLI's local / Ctrl-C paths, without AWS."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from inf2_deploy.aws.deploy import list_deployments
from inf2_deploy.aws.deployment import WaitInterrupted
from inf2_deploy.aws.requests import endpoint_config_request, model_request, settings_digest
from inf2_deploy.cli import main
from inf2_deploy.errors import ConfigError
from inf2_deploy.local.records import LocalDeployment, LocalStore
from inf2_deploy.spec.deployment_spec import load_spec
from inf2_deploy.status import DeploymentStatus
from support.aws import ROLE


def _spec(**overrides):
    return load_spec(model="tiny-gptj", role_arn=ROLE, instance_type="ml.inf2.8xlarge", **overrides)


def test_model_request_with_vpc_isolation_env_and_cache_override():
    spec = _spec(subnets=("subnet-1", "subnet-2"), security_group_ids=("sg-1",), enable_network_isolation=True,
                 env={"OPTION_ROLLING_BATCH": "disable"}, neuron_cc_flags="--model-type=transformer",
                 compile_cache_url="s3://cache-bucket/neuron/")
    request = model_request(spec, name="m", image_uri="img", model_data_uri="s3://b/p",
                            compile_cache_url=spec.compile_cache_url)
    assert request["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert request["EnableNetworkIsolation"] is True
    assert request["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"] == "s3://b/p/"
    assert request["PrimaryContainer"]["Environment"] == {
        "NEURON_COMPILE_CACHE_URL": "s3://cache-bucket/neuron/",
        "NEURON_CC_FLAGS": "--model-type=transformer",
        "OPTION_ROLLING_BATCH": "disable",
    }


def test_endpoint_config_request_options():
    spec = _spec(instance_count=3, volume_size_gb=100, inference_ami_version="al2-ami-sagemaker-inference-neuron-2",
                 startup_health_check_timeout=1800, model_download_timeout=900)
    variant = endpoint_config_request(spec, name="c", model_name="m", instance_type="ml.inf2.8xlarge",
                                      artifact_bytes=12_100_000_000)["ProductionVariants"][0]
    assert variant == {
        "VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.inf2.8xlarge",
        "InitialInstanceCount": 3, "ContainerStartupHealthCheckTimeoutInSeconds": 1800,
        "ModelDataDownloadTimeoutInSeconds": 900, "VolumeSizeInGB": 100,
        "InferenceAmiVersion": "al2-ami-sagemaker-inference-neuron-2",
        # three instances: each request goes to the least busy one
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }


def test_kms_key_encrypts_the_endpoint_volume_as_the_sdks_kms_key():
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    request = endpoint_config_request(_spec(kms_key_id=key), name="c", model_name="m",
                                      instance_type="ml.inf2.8xlarge", artifact_bytes=1)
    assert request["KmsKeyId"] == key
    plain = endpoint_config_request(_spec(), name="c", model_name="m", instance_type="ml.inf2.8xlarge",
                                    artifact_bytes=1)
    assert "KmsKeyId" not in plain and "DataCaptureConfig" not in plain


@pytest.mark.parametrize(("percent", "kms", "sampled"), [(None, None, 20), (100, "alias/capture", 100)])
def test_data_capture_config_captures_requests_and_responses_as_json_text(percent, kms, sampled):
    spec = _spec(data_capture_uri="s3://capture-bucket/tiny/", capture_percent=percent, kms_key_id=kms)
    capture = endpoint_config_request(spec, name="c", model_name="m", instance_type="ml.inf2.8xlarge",
                                      artifact_bytes=1)["DataCaptureConfig"]
    assert capture == {
        "EnableCapture": True, "InitialSamplingPercentage": sampled, "DestinationS3Uri": "s3://capture-bucket/tiny/",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json", "application/jsonlines"]},
        **({"KmsKeyId": kms} if kms else {}),
    }


def _model_problems(value, shape, where: str = "") -> list[str]:
    """What in ``value`` breaks ``shape`` of a botocore service model: required members, enums, lengths,
    ranges and patterns (botocore's ParamValidator checks types and required members only)."""
    limits = shape.metadata
    problems = []
    if shape.type_name == "structure":
        problems += [f"{where}.{name} missing" for name in shape.required_members if name not in value]
        for name, item in value.items():
            problems += _model_problems(item, shape.members[name], f"{where}.{name}")
        return problems
    if shape.type_name == "list":
        for index, item in enumerate(value):
            problems += _model_problems(item, shape.member, f"{where}[{index}]")
    size = value if shape.type_name in ("integer", "long") else len(value) if shape.type_name in (
        "string", "list") else None
    if size is not None and not limits.get("min", size) <= size <= limits.get("max", size):
        problems.append(f"{where}={value!r} outside {limits.get('min')}..{limits.get('max')}")
    if "enum" in limits and value not in limits["enum"]:
        problems.append(f"{where}={value!r} not in {limits['enum']}")
    if "pattern" in limits and not re.fullmatch(limits["pattern"], value):
        problems.append(f"{where}={value!r} does not match {limits['pattern']}")
    return problems


def test_kms_and_data_capture_requests_satisfy_the_sagemaker_service_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    spec = _spec(kms_key_id="alias/volume", data_capture_uri="s3://capture-bucket/p", capture_percent=1)
    request = endpoint_config_request(spec, name="c", model_name="m", instance_type="ml.inf2.8xlarge",
                                      artifact_bytes=1)
    shape = model.operation_model("CreateEndpointConfig").input_shape
    for name in ("KmsKeyId", "DataCaptureConfig"):
        assert _model_problems(request[name], shape.members[name], name) == []
    # The checker itself finds what SageMaker would refuse.
    broken = {**request["DataCaptureConfig"], "InitialSamplingPercentage": 101,
              "CaptureOptions": [{"CaptureMode": "Both"}]}
    assert len(_model_problems(broken, shape.members["DataCaptureConfig"])) == 2


@pytest.mark.parametrize(("settings", "field"), [
    ({"data_capture_uri": "https://bucket/capture"}, "data_capture_uri"),
    ({"data_capture_uri": "s3://Bad_Bucket/capture"}, "data_capture_uri"),
    ({"data_capture_uri": "s3://bucket/" + "k" * 600}, "data_capture_uri"),
    ({"data_capture_uri": "s3://bucket/capture", "capture_percent": 0}, "capture_percent"),
    ({"data_capture_uri": "s3://bucket/capture", "capture_percent": 101}, "capture_percent"),
    ({"capture_percent": 50}, "capture_percent"),  # a percent of nothing
])
def test_bad_data_capture_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError) as refused:
        _spec(**settings)
    assert refused.value.field == field


def test_settings_digest_ignores_names_and_token_values_but_not_settings():
    def digest(spec, name="n", token=None):
        model = model_request(spec, name=name, image_uri="img", model_data_uri="s3://b/p/",
                              compile_cache_url="s3://b/c/", hf_token=token)
        config = endpoint_config_request(spec, name=name, model_name=name, instance_type="ml.inf2.8xlarge",
                                         artifact_bytes=1)
        return settings_digest(model, config)

    base = digest(_spec())
    assert digest(_spec(), name="other") == base
    assert digest(_spec(), token="a") == digest(_spec(), token="b") != base
    assert digest(_spec(instance_count=2)) != base
    assert digest(_spec(env={"X": "1"})) != base
    assert digest(_spec(kms_key_id="alias/volume")) != base
    assert digest(_spec(data_capture_uri="s3://capture-bucket/p")) != base


def test_list_includes_local_deployments(monkeypatch, tmp_path):
    record = LocalDeployment(name="demo", url="http://127.0.0.1:8080", pid=123, artifact_dir="/a",
                             log_file="/a.log", started_at="2025-01-02T03:04:05+00:00")
    store = LocalStore(tmp_path / "records", alive=lambda pid: True)  # pid 123 stands for a live server
    store.save(record)
    monkeypatch.setattr("inf2_deploy.local.records.default_store", lambda: store)
    (item,) = list_deployments(sagemaker=False)
    assert (item.name, item.kind, item.status, item.location) == ("demo", "local", "InService", record.url)
    assert item.created == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_cli_deploy_local_delegates_to_the_local_server(monkeypatch, capsys):
    calls = []
    record = LocalDeployment(name="demo", url="http://127.0.0.1:8124", pid=42, artifact_dir="/a",
                             log_file="/a.log", started_at="2025-01-02T03:04:05+00:00")

    def serve_local(spec, **kwargs):
        calls.append((spec, kwargs))
        return record

    monkeypatch.setattr("inf2_deploy.local.deploy.serve_local", serve_local)
    assert main(["deploy", "--local", "--model", "tiny-gptj", "--endpoint-name", "demo", "--port", "8124"]) == 0
    spec, kwargs = calls[0]
    assert spec.model == "tiny-gptj" and kwargs == {"name": "demo", "port": 8124, "wait": True}
    assert "local deployment demo serving at http://127.0.0.1:8124" in capsys.readouterr().out


def test_cli_delete_of_a_local_name_stops_the_server(capsys):
    from inf2_deploy.local.records import default_store

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()  # a pid that runs no server: delete forgets the record and signals nothing
    store = default_store()  # under INF2_DEPLOY_HOME, which fake_aws_env points at tmp_path
    log = store.log_path("demo")
    log.parent.mkdir(parents=True)
    log.write_text("served\n")
    store.save(LocalDeployment(name="demo", url="http://127.0.0.1:8124", pid=exited.pid, artifact_dir="/a",
                               log_file=str(log), started_at="2025-01-02T03:04:05+00:00"))
    assert main(["delete", "demo"]) == 0
    assert store.get("demo") is None and not log.exists()
    assert "stopped local deployment demo" in capsys.readouterr().out


def test_cli_ctrl_c_while_waiting_prints_what_next_and_exits_130(monkeypatch, capsys):
    def interrupted(spec, **kwargs):
        raise WaitInterrupted("tiny", DeploymentStatus.CREATING)

    monkeypatch.setattr("inf2_deploy.aws.deploy.deploy", interrupted)
    code = main(["deploy", "--model", "tiny-gptj", "--role", ROLE, "--endpoint-name", "tiny"])
    err = capsys.readouterr().err
    assert code == 130
    assert "still Creating" in err
    assert "inf2-deploy status tiny" in err and "inf2-deploy delete tiny" in err


@pytest.mark.parametrize("model", ["EleutherAI/gpt-j-6b", "/data/ckpt/GPT-J_6B/", "s3://bucket/models/gptj"])
def test_default_endpoint_names_are_valid(model):
    from inf2_deploy.aws.deploy import default_endpoint_name

    name = default_endpoint_name(load_spec(model=model))
    assert name and len(name) <= 63 and name[0].isalnum() and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
