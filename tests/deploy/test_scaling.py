"""Autoscaling of a deployed endpoint, against moto: registration and policy after InService, updates that
keep a scaled-out count, an instance-type change, deletes that leave no scalable target, manual
``scale``, and ``status`` (scaling activities through a Stubber: moto lacks DescribeScalingActivities)."""
from __future__ import annotations

import datetime

import pytest
from botocore.stub import Stubber
from inf2_deploy.aws.deploy import deploy
from inf2_deploy.aws.scaling import describe_scaling, policy_name, resource_id, scale
from inf2_deploy.aws.teardown import delete_deployment
from inf2_deploy.cli import main
from inf2_deploy.errors import ConfigError
from sagemaker_fakes import ClientsSession
from support.clock import FakeClock

TARGET = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/tiny/variant/AllTraffic",
          "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
CONCURRENCY = "SageMakerVariantConcurrentRequestsPerModelHighResolution"


def _later(seconds: float) -> FakeClock:
    clock = FakeClock()
    clock.advance(seconds)
    return clock


#: the service-linked role Application Auto Scaling answers with (moto leaves RoleARN out, the model requires it)
SCALING_ROLE = ("arn:aws:iam::123456789012:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")


def _targets(session) -> list[dict]:
    return [{"RoleARN": SCALING_ROLE, **target} for target in session.client("application-autoscaling")
            .describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]]


def _policies(session) -> list[dict]:
    return session.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker")["ScalingPolicies"]


def _counts(session) -> tuple[int, int]:
    variant = session.client("sagemaker").describe_endpoint(EndpointName="tiny")["ProductionVariants"][0]
    return variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]


@pytest.fixture
def scaled(tiny_spec):
    """tiny_spec autoscaled between 1 and 4 instances, batch size 4."""
    return tiny_spec.replace(batch_size=4, scaling={"max_instances": 4})


def test_a_deploy_registers_the_target_and_its_policy_after_in_service(session, scaled, tiny_artifact):
    deployment = deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())

    [target] = _targets(session)
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (resource_id("tiny"), 1, 4)
    [policy] = _policies(session)
    assert (policy["PolicyName"], policy["PolicyType"]) == ("inf2-deploy-tiny-concurrency", "TargetTrackingScaling")
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 3.0,  # 0.75 x batch size 4
        "PredefinedMetricSpecification": {"PredefinedMetricType": CONCURRENCY},
        "ScaleOutCooldown": 300, "ScaleInCooldown": 900}
    config = session.client("sagemaker").describe_endpoint_config(EndpointConfigName=deployment.endpoint_config_name)
    assert config["ProductionVariants"][0]["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}


def test_redeploying_is_idempotent_and_a_new_metric_replaces_the_policy(session, scaled, tiny_artifact, tmp_path):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    again = deploy(scaled, artifact=tiny_artifact, session=session, clock=_later(60))
    assert not again.changed and len(_targets(session)) == 1 and len(_policies(session)) == 1

    invocations = scaled.replace(scaling={"min_instances": 1, "max_instances": 2, "metric": "invocations",
                                          "target": 90})
    deploy(invocations, artifact=tiny_artifact, session=session, clock=_later(120))
    [policy] = _policies(session)
    assert policy["PolicyName"] == policy_name("tiny", "invocations")
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 90.0
    assert _targets(session)[0]["MaxCapacity"] == 2


def test_a_scaled_out_endpoint_keeps_its_count_through_a_redeploy(session, scaled, tiny_artifact, count_calls):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    scale("tiny", 3, session=session)  # as autoscaling would under load
    assert _counts(session) == (3, 3)
    calls = count_calls(session.client("sagemaker"))

    updated = deploy(scaled.replace(model_download_timeout=1200), artifact=tiny_artifact, session=session,
                     clock=_later(60))

    assert updated.changed
    [update] = calls.params("UpdateEndpoint")
    assert update["RetainAllVariantProperties"] is True
    assert update["ExcludeRetainedVariantProperties"] == [{"VariantPropertyType": "DataCaptureConfig"}]
    assert _counts(session) == (3, 3)  # not reset to the config's InitialInstanceCount of 1
    assert len(_targets(session)) == 1 and len(_policies(session)) == 1


def test_without_a_scalable_target_an_update_takes_the_new_count(session, tiny_spec, tiny_artifact, count_calls):
    deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    calls = count_calls(session.client("sagemaker"))
    deploy(tiny_spec.replace(instance_count=2), artifact=tiny_artifact, session=session, clock=_later(60))
    assert "RetainAllVariantProperties" not in calls.params("UpdateEndpoint")[0]
    assert _counts(session) == (2, 2)


def test_an_instance_type_change_deregisters_updates_and_registers_again(session, scaled, tiny_artifact,
                                                                         count_calls):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    calls = count_calls(session.client("sagemaker"), session.client("application-autoscaling"))

    deploy(scaled.replace(instance_type="ml.inf2.8xlarge"), artifact=tiny_artifact, session=session,
           clock=_later(60))

    names = calls.names()
    assert names.index("DeregisterScalableTarget") < names.index("UpdateEndpoint") \
        < names.index("RegisterScalableTarget") < names.index("PutScalingPolicy")
    assert "RetainAllVariantProperties" not in calls.params("UpdateEndpoint")[0]
    assert len(_targets(session)) == 1 and len(_policies(session)) == 1


def test_a_fixed_count_redeploy_removes_the_autoscaling(session, scaled, tiny_spec, tiny_artifact):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    deploy(tiny_spec.replace(batch_size=4), artifact=tiny_artifact, session=session, clock=_later(60))
    assert _targets(session) == [] and _policies(session) == []


def test_no_scalable_target_outlives_its_endpoint(session, scaled, tiny_spec, tiny_artifact):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert delete_deployment("tiny", session=session, dry_run=True)[0] == f"scalable target {resource_id('tiny')}"
    assert len(_targets(session)) == 1  # a dry run deletes nothing

    teardown = delete_deployment("tiny", session=session)

    assert teardown[:2] == (f"scalable target {resource_id('tiny')}", "endpoint tiny")
    assert _targets(session) == [] and _policies(session) == []
    # An endpoint that was never autoscaled: nothing to deregister, and no error.
    deploy(tiny_spec.replace(endpoint_name="plain"), artifact=tiny_artifact, session=session, clock=_later(60))
    assert delete_deployment("plain", session=session)[0] == "endpoint plain"


def test_scale_refuses_a_count_outside_the_range_unless_forced(session, scaled, tiny_artifact):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    with pytest.raises(ConfigError) as info:
        scale("tiny", 5, session=session)
    assert info.value.field == "count" and "outside the autoscaling range 1..4" in str(info.value)
    assert _counts(session) == (1, 1)

    before = scale("tiny", 5, force=True, session=session)

    assert (before.desired_instances, before.max_instances) == (1, 4)
    assert _counts(session) == (5, 5)
    with pytest.raises(ConfigError, match="at least 1"):
        scale("tiny", 0, force=True, session=session)


def test_scale_cli_exits_2_on_a_refused_count(session, scaled, tiny_artifact, monkeypatch, capsys):
    import inf2_deploy.aws.session as session_module

    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    monkeypatch.setattr(session_module, "make_session", lambda *args, **kwargs: session)

    assert main(["scale", "tiny", "9"]) == 2
    assert "outside the autoscaling range 1..4" in capsys.readouterr().err
    assert main(["scale", "tiny", "2"]) == 0
    assert "tiny: 1 -> 2 instances" in capsys.readouterr().out
    assert _counts(session) == (2, 2)


def _activity_answer(service_model) -> dict:
    """DescribeScalingActivities' answer, its StatusCode checked against the service model's enum."""
    status_codes = service_model.shape_for("ScalingActivity").members["StatusCode"].enum
    answer = {"ScalingActivities": [{
        "ActivityId": "a1", **TARGET, "Description": "Setting desired instance count to 2.",
        "Cause": "monitor alarm TargetTracking-endpoint/tiny-AlarmHigh in state ALARM triggered policy "
                 "inf2-deploy-tiny-concurrency",
        "StartTime": datetime.datetime(2026, 1, 5, 10, 0, tzinfo=datetime.timezone.utc),
        "StatusCode": "Successful"}]}
    assert answer["ScalingActivities"][0]["StatusCode"] in status_codes
    return answer


def test_describe_scaling_reports_counts_policy_and_activities(session, scaled, tiny_artifact, make_client):
    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    autoscaling = make_client("application-autoscaling")
    target = _targets(session)[0]
    [policy] = _policies(session)
    with Stubber(autoscaling) as stub:
        scope = {"ServiceNamespace": "sagemaker", "ResourceIds": [TARGET["ResourceId"]],
                 "ScalableDimension": TARGET["ScalableDimension"]}
        stub.add_response("describe_scalable_targets", {"ScalableTargets": [target]}, scope)
        stub.add_response("describe_scaling_policies", {"ScalingPolicies": [policy]}, TARGET)
        stub.add_response("describe_scaling_activities", _activity_answer(autoscaling.meta.service_model),
                          {**TARGET, "MaxResults": 5})
        state = describe_scaling(session.client("sagemaker"), autoscaling, "tiny")
        stub.assert_no_pending_responses()

    assert (state.current_instances, state.desired_instances, state.min_instances, state.max_instances) == (1, 1, 1, 4)
    assert state.policies == (f"inf2-deploy-tiny-concurrency: {CONCURRENCY} target 3.0",)
    [activity] = state.activities
    assert (activity.status, activity.description) == ("Successful", "Setting desired instance count to 2.")
    assert activity.start == "2026-01-05T10:00:00+00:00"


def test_status_shows_counts_and_autoscaling(session, scaled, tiny_artifact, make_client, monkeypatch, capsys):
    from inf2_deploy.client import targets

    deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock())
    autoscaling = make_client("application-autoscaling")
    stubbed = ClientsSession(sagemaker=session.client("sagemaker"), **{"application-autoscaling": autoscaling})
    stubbed.boto_session = session.boto_session
    with Stubber(autoscaling) as stub:
        stub.add_response("describe_scalable_targets", {"ScalableTargets": _targets(session)})
        stub.add_response("describe_scaling_policies", {"ScalingPolicies": _policies(session)})
        stub.add_response("describe_scaling_activities", _activity_answer(autoscaling.meta.service_model))
        description = targets.SageMakerTarget("tiny", session=stubbed).describe()

    assert (description.current_instances, description.desired_instances) == (1, 1)
    assert description.autoscaling == "1..4 instances"
    assert description.scaling_policies == (f"inf2-deploy-tiny-concurrency: {CONCURRENCY} target 3.0",)
    assert description.scaling_activities[0].startswith("2026-01-05T10:00:00+00:00 Successful: Setting desired")


def test_a_deploy_that_does_not_wait_says_autoscaling_waits_for_in_service(session, scaled, tiny_artifact):
    deployment = deploy(scaled, artifact=tiny_artifact, session=session, clock=FakeClock(), wait=False)
    assert deployment.message.endswith("; autoscaling is registered by a deploy that waits for InService")
    assert _targets(session) == []  # registering a variant that is not InService yet would fail


def test_several_instances_on_a_cold_compile_cache_start_with_one(session, tiny_spec, tiny_artifact, count_calls):
    from sagemaker_fakes import RecordingObserver

    calls = count_calls(session.client("sagemaker"))
    observer = RecordingObserver()
    cold = deploy(tiny_spec.replace(instance_count=3), artifact=tiny_artifact, session=session, clock=FakeClock(),
                  observer=observer)

    [config] = calls.params("CreateEndpointConfig")
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 1
    [raised] = calls.params("UpdateEndpointWeightsAndCapacities")
    assert raised["DesiredWeightsAndCapacities"] == [{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
    assert _counts(session) == (3, 3)
    assert any(event.startswith("the compile cache holds nothing for artifact") for event in observer.events)
    assert "the compile cache is warm: raising tiny to 3 instances" in observer.events
    # The tags record the full count: the same deploy again has nothing to do.
    assert not deploy(tiny_spec.replace(instance_count=3), artifact=tiny_artifact, session=session,
                      clock=_later(60)).changed

    # Another endpoint of the same artifact and model finds the cache warm and starts all three at once.
    calls = count_calls(session.client("sagemaker"))
    deploy(tiny_spec.replace(instance_count=3, endpoint_name="tiny-b"), artifact=tiny_artifact, session=session,
           clock=_later(120))
    assert calls.params("CreateEndpointConfig")[0]["ProductionVariants"][0]["InitialInstanceCount"] == 3
    assert calls.params("UpdateEndpointWeightsAndCapacities") == []
    assert cold.status is not None and cold.status.value == "InService"
