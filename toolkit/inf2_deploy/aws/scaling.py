"""Application Auto Scaling of an endpoint's variant, manual scaling, and multi-instance starts.

The scalable target is ``endpoint/NAME/variant/AllTraffic`` on the dimension
``sagemaker:variant:DesiredInstanceCount``; its one target-tracking policy is named
``inf2-deploy-NAME-METRIC``, so a redeploy finds and replaces it. Every call here is
idempotent: registering again updates min and max, putting the policy again updates it,
and deregistering a target that is gone is a no-op. Deregistering also removes the
target's policies (Application Auto Scaling deletes them with it).

Instances that start together on a cold compile cache each compile for 10 to 60 minutes, and
nothing locks across hosts on S3. So a new endpoint of several instances starts with one when
no earlier start of the same artifact and model filled the S3 cache (a marker beside the cache
records that), then grows to its count with ``update_endpoint_weights_and_capacities``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from inf2_serving.contract import VARIANT_NAME

from ..errors import AwsError, ConfigError
from ..spec.scaling import ScalingSpec
from .resources import describe_config
from .session import Session, aws_errors

if TYPE_CHECKING:
    from .requests import DeployRequests

__all__ = [
    "NAMESPACE",
    "DIMENSION",
    "POLICY_PREFIX",
    "ScalingActivity",
    "ScalingState",
    "apply_scaling",
    "target_tracking",
    "compile_cache_is_warm",
    "mark_compile_cache_warm",
    "single_instance",
    "deregister",
    "describe_scaling",
    "find_target",
    "policy_name",
    "resource_id",
    "scale",
    "sync_scaling",
    "update_arguments",
]

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
#: every policy this toolkit puts starts with this
POLICY_PREFIX = "inf2-deploy-"
#: scaling activities ``describe_scaling`` reports, newest first
RECENT_ACTIVITIES = 5


def resource_id(endpoint_name: str) -> str:
    """The scalable target's ResourceId: ``endpoint/NAME/variant/AllTraffic``."""
    return f"endpoint/{endpoint_name}/variant/{VARIANT_NAME}"


def policy_name(endpoint_name: str, metric: str) -> str:
    """The deterministic name of the endpoint's target-tracking policy for ``metric``."""
    return f"{POLICY_PREFIX}{endpoint_name}-{metric}"


def _target_keys(endpoint_name: str) -> dict[str, str]:
    return {"ServiceNamespace": NAMESPACE, "ResourceId": resource_id(endpoint_name), "ScalableDimension": DIMENSION}


def find_target(autoscaling: Any, endpoint_name: str) -> dict[str, Any] | None:
    """The endpoint's registered scalable target (DescribeScalableTargets' entry), or None."""
    with aws_errors(f"application-autoscaling:DescribeScalableTargets {endpoint_name}"):
        pages = autoscaling.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace=NAMESPACE, ResourceIds=[resource_id(endpoint_name)], ScalableDimension=DIMENSION)
        targets = [target for page in pages for target in page["ScalableTargets"]]
    return targets[0] if targets else None


def _policies(autoscaling: Any, endpoint_name: str) -> list[dict[str, Any]]:
    with aws_errors(f"application-autoscaling:DescribeScalingPolicies {endpoint_name}"):
        pages = autoscaling.get_paginator("describe_scaling_policies").paginate(**_target_keys(endpoint_name))
        return [policy for page in pages for policy in page["ScalingPolicies"]]


def target_tracking(scaling: ScalingSpec, batch_size: int) -> dict[str, Any]:
    """The ``TargetTrackingScalingPolicyConfiguration`` of ``scaling`` (PutScalingPolicy's and
    CloudFormation's ScalingPolicy property alike)."""
    return {
        "TargetValue": scaling.target_for(batch_size),
        "PredefinedMetricSpecification": {"PredefinedMetricType": scaling.predefined_metric},
        "ScaleOutCooldown": scaling.scale_out_cooldown,
        "ScaleInCooldown": scaling.scale_in_cooldown,
    }


def apply_scaling(autoscaling: Any, endpoint_name: str, scaling: ScalingSpec, *, batch_size: int = 1) -> str:
    """Register the endpoint's variant between min and max, then put its target-tracking policy; a policy
    of ours for another metric is deleted. Call once the endpoint is InService. The target is
    ``scaling.target_for(batch_size)``; ``batch_size`` matters only when the target is unset. Returns the
    policy name.

    Raises:
        AwsError: a call failed.
    """
    keys = _target_keys(endpoint_name)
    with aws_errors(f"application-autoscaling:RegisterScalableTarget {endpoint_name}"):
        autoscaling.register_scalable_target(**keys, MinCapacity=scaling.min_instances,
                                             MaxCapacity=scaling.max_instances)
    name = policy_name(endpoint_name, scaling.metric)
    configuration = target_tracking(scaling, batch_size)
    with aws_errors(f"application-autoscaling:PutScalingPolicy {name}"):
        autoscaling.put_scaling_policy(PolicyName=name, PolicyType="TargetTrackingScaling", **keys,
                                       TargetTrackingScalingPolicyConfiguration=configuration)
    for stale in _policies(autoscaling, endpoint_name):
        if stale["PolicyName"].startswith(policy_name(endpoint_name, "")) and stale["PolicyName"] != name:
            with aws_errors(f"application-autoscaling:DeleteScalingPolicy {stale['PolicyName']}"):
                autoscaling.delete_scaling_policy(PolicyName=stale["PolicyName"], **keys)
    return name


def deregister(autoscaling: Any, endpoint_name: str) -> bool:
    """Deregister the endpoint's scalable target (its policies go with it); False when there was none.

    Raises:
        AwsError: a call failed.
    """
    if find_target(autoscaling, endpoint_name) is None:
        return False
    # Deregistering deletes the policies too; deleting them first also leaves none where that lags.
    for policy in _policies(autoscaling, endpoint_name):
        with aws_errors(f"application-autoscaling:DeleteScalingPolicy {policy['PolicyName']}"):
            autoscaling.delete_scaling_policy(PolicyName=policy["PolicyName"], **_target_keys(endpoint_name))
    try:
        with aws_errors(f"application-autoscaling:DeregisterScalableTarget {endpoint_name}"):
            autoscaling.deregister_scalable_target(**_target_keys(endpoint_name))
    except AwsError as exc:
        if exc.code != "ObjectNotFoundException":  # gone since the describe: another client removed it
            raise
        return False
    return True


def sync_scaling(autoscaling: Any, endpoint_name: str, scaling: ScalingSpec | None) -> str | None:
    """Bring the endpoint's autoscaling to ``scaling`` once it is InService: register it and put its policy
    (``scaling.target`` resolved), or, for a fixed count (None), deregister what an earlier deploy
    registered. Returns one line on what changed, or None when nothing did.

    Raises:
        AwsError: a call failed.
    """
    if scaling is None:
        if deregister(autoscaling, endpoint_name):
            return f"removed the autoscaling of {endpoint_name}: this deploy sets a fixed count"
        return None
    policy = apply_scaling(autoscaling, endpoint_name, scaling)
    return (f"autoscaling {endpoint_name} between {scaling.min_instances} and {scaling.max_instances} instances: "
            f"{policy} tracks {scaling.predefined_metric} at {scaling.target}")


def update_arguments(autoscaling: Any, sagemaker: Any, endpoint_name: str, *, current_config: str,
                     instance_type: str) -> tuple[dict[str, Any], bool]:
    """UpdateEndpoint's extra arguments for the endpoint, and whether its target was deregistered.

    Without a scalable target: none. With one, the instance count and weight stay as autoscaling set
    them (RetainAllVariantProperties; data capture follows the new config), unless the new config's
    ``instance_type`` differs from ``current_config``'s: SageMaker refuses that update of a scaled
    variant, so the target is deregistered first (``sync_scaling`` registers it again once InService).

    Raises:
        AwsError: a call failed.
    """
    if find_target(autoscaling, endpoint_name) is None:
        return {}, False
    current = describe_config(sagemaker, current_config)
    if (current["ProductionVariants"][0].get("InstanceType") if current else None) != instance_type:
        return {}, deregister(autoscaling, endpoint_name)
    return {"RetainAllVariantProperties": True,
            "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DataCaptureConfig"}]}, False


@dataclass(frozen=True)
class ScalingActivity:
    """One scaling activity (DescribeScalingActivities), newest first."""

    start: str
    status: str
    description: str
    cause: str = ""


@dataclass(frozen=True)
class ScalingState:
    """An endpoint's instance counts and, when registered, its autoscaling range, policy and recent activity."""

    current_instances: int | None
    desired_instances: int | None
    min_instances: int | None = None
    max_instances: int | None = None
    #: ``NAME: METRIC target VALUE`` of each policy on the target
    policies: tuple[str, ...] = ()
    activities: tuple[ScalingActivity, ...] = ()

    @property
    def autoscaled(self) -> bool:
        """True when a scalable target is registered."""
        return self.min_instances is not None


def _policy_line(policy: dict[str, Any]) -> str:
    tracking = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
    metric = (tracking.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType", "custom metric")
    return f"{policy['PolicyName']}: {metric} target {tracking.get('TargetValue')}"


def _activities(autoscaling: Any, endpoint_name: str) -> tuple[ScalingActivity, ...]:
    with aws_errors(f"application-autoscaling:DescribeScalingActivities {endpoint_name}"):
        answer = autoscaling.describe_scaling_activities(**_target_keys(endpoint_name), MaxResults=RECENT_ACTIVITIES)
    return tuple(ScalingActivity(start=activity["StartTime"].isoformat(), status=activity["StatusCode"],
                                 description=activity["Description"], cause=activity.get("Cause", ""))
                 for activity in answer["ScalingActivities"][:RECENT_ACTIVITIES])


def _instance_counts(sagemaker: Any, endpoint_name: str) -> tuple[int | None, int | None]:
    """The variant's current and desired instance counts."""
    with aws_errors(f"sagemaker:DescribeEndpoint {endpoint_name}"):
        variants = sagemaker.describe_endpoint(EndpointName=endpoint_name).get("ProductionVariants") or [{}]
    variant = next((v for v in variants if v.get("VariantName") == VARIANT_NAME), variants[0])
    return variant.get("CurrentInstanceCount"), variant.get("DesiredInstanceCount")


def describe_scaling(sagemaker: Any, autoscaling: Any, endpoint_name: str) -> ScalingState:
    """The variant's current and desired instance counts, and its autoscaling when registered.

    Raises:
        AwsError: a call failed (no endpoint by that name: code ``ValidationException``).
    """
    counts = _instance_counts(sagemaker, endpoint_name)
    target = find_target(autoscaling, endpoint_name)
    if target is None:
        return ScalingState(*counts)
    return ScalingState(*counts, min_instances=target["MinCapacity"], max_instances=target["MaxCapacity"],
                        policies=tuple(_policy_line(p) for p in _policies(autoscaling, endpoint_name)),
                        activities=_activities(autoscaling, endpoint_name))


def scale(endpoint_name: str, count: int, *, force: bool = False, session: Session) -> ScalingState:
    """Set the endpoint's instance count now (UpdateEndpointWeightsAndCapacities); returns the counts and range
    before (no policies or activities).

    A count outside the registered min..max is refused unless ``force``: autoscaling would
    otherwise pull it back at its next evaluation.

    Raises:
        ConfigError: ``count`` below 1, or outside min..max without ``force`` (field ``count``).
        AwsError: a call failed.
    """
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}", field="count", value=str(count))
    sagemaker, autoscaling = session.client("sagemaker"), session.client("application-autoscaling")
    target = find_target(autoscaling, endpoint_name)
    state = ScalingState(*_instance_counts(sagemaker, endpoint_name),
                         min_instances=target["MinCapacity"] if target else None,
                         max_instances=target["MaxCapacity"] if target else None)
    if state.autoscaled and not force and not state.min_instances <= count <= state.max_instances:
        raise ConfigError(
            f"count {count} is outside the autoscaling range {state.min_instances}..{state.max_instances} "
            f"of {endpoint_name}", field="count", value=str(count),
            hint="pass --force to set it anyway, or redeploy with other --min-instances/--max-instances")
    with aws_errors(f"sagemaker:UpdateEndpointWeightsAndCapacities {endpoint_name}"):
        sagemaker.update_endpoint_weights_and_capacities(
            EndpointName=endpoint_name,
            DesiredWeightsAndCapacities=[{"VariantName": VARIANT_NAME, "DesiredInstanceCount": count}])
    return state


def _warm_marker(requests: DeployRequests) -> tuple[str, str] | None:
    """(bucket, key) recording that this artifact and model compiled into the S3 compile cache, beside it."""
    cache = requests.model["PrimaryContainer"]["Environment"].get("NEURON_COMPILE_CACHE_URL", "")
    if not cache.startswith("s3://"):
        return None
    bucket, _, prefix = cache.removeprefix("s3://").partition("/")
    # Beside Neuron's cache, not in it; keyed by the artifact and the model settings (image, flags).
    return bucket, f"{prefix.strip('/')}-warm/{requests.fingerprint}-{requests.model_settings}"


def compile_cache_is_warm(s3: Any, requests: DeployRequests) -> bool:
    """True when an earlier staged start of this artifact and model filled the compile cache (or when
    the cache is not in S3, where each instance compiles on its own whatever the order).

    Raises:
        AwsError: a call failed.
    """
    marker = _warm_marker(requests)
    if marker is None:
        return True
    try:
        with aws_errors(f"s3:HeadObject s3://{marker[0]}/{marker[1]}"):
            s3.head_object(Bucket=marker[0], Key=marker[1])
    except AwsError as exc:
        if exc.code not in ("404", "NoSuchKey", "NotFound"):
            raise
        return False
    return True


def mark_compile_cache_warm(s3: Any, requests: DeployRequests) -> None:
    """Record that an instance of this artifact and model is InService, so its graphs are in the cache.

    Raises:
        AwsError: a call failed.
    """
    marker = _warm_marker(requests)
    if marker is not None:
        with aws_errors(f"s3:PutObject s3://{marker[0]}/{marker[1]}"):
            s3.put_object(Bucket=marker[0], Key=marker[1], Body=b"")


def single_instance(requests: DeployRequests) -> DeployRequests:
    """``requests`` whose endpoint config starts one instance; names, tags and digests stay those of the
    full count, so that the next deploy sees the endpoint as this deploy leaves it."""
    variants = [{**variant, "InitialInstanceCount": 1} for variant in requests.config["ProductionVariants"]]
    return replace(requests, config={**requests.config, "ProductionVariants": variants})
