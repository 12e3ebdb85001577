"""``inf2-deploy export --format cloudformation``: templates from a spec and from a deployed endpoint.

Every template is checked by cfn-lint (offline, its bundled us-east-1 resource schemas); the
endpoint export runs against a moto server over real HTTP.
"""
from __future__ import annotations

import json

import boto3
import pytest
import yaml
from cfnlint.api import lint
from inf2_deploy.aws.cloudformation import build_template, spec_template
from inf2_deploy.aws.requests import endpoint_config_request
from inf2_deploy.cli import main
from inf2_deploy.cli.export_cmd import render_template
from inf2_deploy.spec.planner import check_plan
from support.artifacts import deployable_tiny_spec
from support.aws import ACCOUNT, REGION, ROLE

BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
SCALING = {"min_instances": 1, "max_instances": 4, "metric": "invocations", "target": 120.0,
           "scale_in_cooldown": 600, "scale_out_cooldown": 120}
FULL_OPTIONS = {"bucket": "team-artifacts", "kms_key_id": "alias/inf2", "data_capture_uri": "s3://team-capture/tiny/",
                "capture_percent": 50, "subnets": ("subnet-0a1b2c3d",), "security_group_ids": ("sg-0a1b2c3d",),
                "enable_network_isolation": True, "env": {"LOG_LEVEL": "debug"}, "tags": {"team": "ml"},
                "inference_ami_version": "al2-ami-sagemaker-inference-neuron-2", "volume_size_gb": 64,
                "instance_count": 2}


def _lint(template: dict) -> list[str]:
    return [str(match) for match in lint(render_template(template), regions=[REGION])]


def _template(**overrides) -> dict:
    spec = deployable_tiny_spec(**overrides)
    return spec_template(spec, check_plan(spec), endpoint_name="tiny")


def test_default_spec_template_lints_clean_and_keeps_the_scaled_count():
    template = _template()
    assert _lint(template) == []
    resources = template["Resources"]
    assert {name: item["Type"] for name, item in resources.items()} == {
        "Model": "AWS::SageMaker::Model", "EndpointConfig": "AWS::SageMaker::EndpointConfig",
        "Endpoint": "AWS::SageMaker::Endpoint"}
    assert resources["Endpoint"]["Properties"]["RetainAllVariantProperties"] is True
    assert set(template["Parameters"]) == {"ExecutionRoleArn", "ArtifactBucket", "ModelDataUri", "ImageUri",
                                           "EndpointName"}
    assert template["Parameters"]["ExecutionRoleArn"]["Default"] == ROLE
    assert "Default" not in template["Parameters"]["ModelDataUri"]  # no artifact is built for an export
    container = resources["Model"]["Properties"]["PrimaryContainer"]
    assert container["Image"] == {"Ref": "ImageUri"}
    assert container["ModelDataSource"]["S3DataSource"]["S3Uri"] == {"Ref": "ModelDataUri"}
    assert container["Environment"]["NEURON_COMPILE_CACHE_URL"] == {
        "Fn::Sub": "s3://${ArtifactBucket}/inf2-deploy/neuron-cache/"}


def test_fully_optioned_spec_with_scaling_lints_clean_and_carries_every_setting():
    template = _template(**FULL_OPTIONS, scaling=SCALING)
    assert _lint(template) == []
    resources = template["Resources"]
    target = resources["ScalableTarget"]["Properties"]
    assert target == {"ServiceNamespace": "sagemaker", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                      "ResourceId": {"Fn::Sub": "endpoint/${Endpoint.EndpointName}/variant/AllTraffic"},
                      "MinCapacity": 1, "MaxCapacity": 4}
    policy = resources["ScalingPolicy"]["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": "ScalableTarget"}
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 120.0, "ScaleInCooldown": 600, "ScaleOutCooldown": 120,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}
    # The config is the deploy's own request, names aside: the template and a deploy cannot drift.
    spec = deployable_tiny_spec(**FULL_OPTIONS, scaling=SCALING)
    request = endpoint_config_request(spec, name="", model_name="", instance_type="ml.inf2.xlarge",
                                      artifact_bytes=0)
    config = resources["EndpointConfig"]["Properties"]
    assert config["ProductionVariants"] == [{**request["ProductionVariants"][0],
                                             "ModelName": {"Fn::GetAtt": ["Model", "ModelName"]}}]
    assert (config["KmsKeyId"], config["DataCaptureConfig"]) == (request["KmsKeyId"], request["DataCaptureConfig"])
    model = resources["Model"]["Properties"]
    assert model["VpcConfig"] == {"Subnets": ["subnet-0a1b2c3d"], "SecurityGroupIds": ["sg-0a1b2c3d"]}
    assert model["EnableNetworkIsolation"] is True
    assert model["PrimaryContainer"]["Environment"]["LOG_LEVEL"] == "debug"
    assert [item["Tags"] for item in (model, config, resources["Endpoint"]["Properties"])] == \
        [[{"Key": "team", "Value": "ml"}]] * 3
    assert template["Parameters"]["ArtifactBucket"]["Default"] == "team-artifacts"


def test_a_concurrency_target_defaults_from_the_batch_size():
    template = _template(batch_size=4, scaling={"max_instances": 2})
    policy = template["Resources"]["ScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["TargetValue"] == 3.0
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == \
        "SageMakerVariantConcurrentRequestsPerModelHighResolution"


def test_cfn_lint_catches_a_wrong_template():
    # The lint is not vacuous: a misspelt property and a bad scalable dimension are both reported.
    template = _template(scaling=SCALING)
    template["Resources"]["Endpoint"]["Properties"]["RetainAllVariantProperty"] = True
    template["Resources"]["ScalableTarget"]["Properties"]["ScalableDimension"] = "sagemaker:variant:Count"
    problems = "\n".join(_lint(template))
    assert "RetainAllVariantProperty" in problems and "sagemaker:variant:Count" in problems


def test_tags_of_the_toolkit_and_aws_are_not_exported():
    template = build_template(
        {"PrimaryContainer": {"Image": "img", "ModelDataSource": {"S3DataSource": {"S3Uri": "s3://b/p/"}}}},
        {"ProductionVariants": [{"VariantName": "AllTraffic", "InstanceType": "ml.inf2.xlarge",
                                 "InitialInstanceCount": 1, "CurrentWeight": 1.0}]},
        endpoint_name="tiny", bucket="b", model_data_uri="s3://b/p/",
        tags={"inf2-deploy:managed": "true", "aws:cloudformation:stack-name": "s", "team": "ml"})
    assert template["Resources"]["Endpoint"]["Properties"]["Tags"] == [{"Key": "team", "Value": "ml"}]
    # Only what a deploy sets is kept from a described variant.
    assert "CurrentWeight" not in template["Resources"]["EndpointConfig"]["Properties"]["ProductionVariants"][0]


def test_cli_writes_yaml_to_stdout_and_json_to_a_file(tmp_path, capsys):
    argv = ["export", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--region", REGION]
    assert main(argv) == 0
    from_yaml = yaml.safe_load(capsys.readouterr().out)
    out = tmp_path / "stack.json"
    assert main([*argv, "--json", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == from_yaml
    assert from_yaml["Parameters"]["EndpointName"]["Default"] == "tiny-gptj"


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "terraform", "--model", "tiny-gptj"],
     "error: format: must be one of cloudformation, got 'terraform'"),
    (["--from-endpoint", "tiny", "--model", "tiny-gptj"],
     "error: from_endpoint: --model does not apply with --from-endpoint, which exports the endpoint as deployed"),
])
def test_cli_refuses_a_bad_format_or_spec_flags_with_an_endpoint(argv, message, capsys):
    assert main(["export", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and captured.out == ""


@pytest.mark.slow
def test_endpoint_export_matches_the_spec_export_on_moto(moto_server, tmp_path):
    flags = ["--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--endpoint-name", "tiny", "--region",
             REGION, "--role", ROLE, "--tag", "team=ml", "--env", "LOG_LEVEL=debug", "--max-instances", "3",
             "--scale-target", "2"]
    assert main(["deploy", *flags]) == 0
    # The deploy registered the scaling block's target and policy; the export reads them back.
    autoscaling = boto3.client("application-autoscaling", region_name=REGION, endpoint_url=moto_server)
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [policy["ResourceId"] for policy in policies] == ["endpoint/tiny/variant/AllTraffic"]
    deployed_file, spec_file = tmp_path / "deployed.yaml", tmp_path / "spec.yaml"
    assert main(["export", "--from-endpoint", "tiny", "--region", REGION, "--out", str(deployed_file)]) == 0
    assert main(["export", *flags, "--out", str(spec_file)]) == 0
    deployed, from_spec = (yaml.safe_load(path.read_text()) for path in (deployed_file, spec_file))
    assert _lint(deployed) == []
    assert deployed["Resources"] == from_spec["Resources"]
    variant = deployed["Resources"]["EndpointConfig"]["Properties"]["ProductionVariants"][0]
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert deployed["Resources"]["ScalableTarget"]["Properties"]["MaxCapacity"] == 3
    assert deployed["Resources"]["ScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"][
        "TargetValue"] == 2.0
    assert deployed["Resources"]["Model"]["Properties"]["Tags"] == [{"Key": "team", "Value": "ml"}]
    parameters = deployed["Parameters"]
    assert parameters["ArtifactBucket"]["Default"] == BUCKET
    assert parameters["ModelDataUri"]["Default"].startswith(f"s3://{BUCKET}/inf2-deploy/tiny-gptj/")
    assert {name: parameters[name]["Default"] for name in ("ExecutionRoleArn", "ImageUri", "EndpointName")} == \
        {name: from_spec["Parameters"][name]["Default"] for name in ("ExecutionRoleArn", "ImageUri", "EndpointName")}


def test_exporting_an_unknown_endpoint_is_one_line_and_exit_2(moto_server, capsys):
    assert main(["export", "--from-endpoint", "nope", "--region", REGION]) == 2
    err = capsys.readouterr().err
    assert err == "error: name: no endpoint named nope in us-east-1 (there are no endpoints there) " \
                  "(see `inf2-deploy list`)\n"
