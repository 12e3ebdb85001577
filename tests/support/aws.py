"""Fake AWS for the tests: the environment, moto extended for ml.inf2, UpdateEndpoint and
DescribeScalingActivities, a moto server.

moto is imported only inside the functions that use it: the serving tests also run in an
environment without it.
"""
from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from support.servers import free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
#: an LMI Neuron image in REGION, for specs that name one (nothing looks it up)
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.29.0-neuronx-sdk2.19.1"
INF2_INSTANCE_TYPES = ("ml.inf2.xlarge", "ml.inf2.8xlarge", "ml.inf2.24xlarge", "ml.inf2.48xlarge")

#: what fake_aws_environment sets by default: credentials any fake AWS accepts
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: credentials and tokens distinctive enough to search for: no produced file or output may contain them
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY777",
    "AWS_SECRET_ACCESS_KEY": "fakeSecretKey/DoNotLeak+Q4bYsd83hdl2",
    "AWS_SESSION_TOKEN": "FakeSessionTokenNeverPrinted0123456789",
    "HF_TOKEN": "hf_FakeTokenThatMustNeverAppear9876",
}


def fake_aws_environment(monkeypatch: pytest.MonkeyPatch, folder: Path,
                         secrets: Mapping[str, str] = FAKE_CREDENTIALS) -> dict[str, str]:
    """Fake credentials (``secrets``) and region, so that nothing can reach real AWS.

    Every ``AWS_*`` variable and ``HF_TOKEN`` from outside is dropped (profiles, endpoints,
    tokens, regions); the AWS config files are absent files under ``folder``, the instance
    metadata service is off, and ``INF2_DEPLOY_HOME`` is ``folder/home``. Returns ``secrets``.
    """
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "HF_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(folder / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(folder / "home"))
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    return dict(secrets)


def accept_inf2_instance_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let moto's CreateEndpointConfig accept the four ml.inf2 types.

    moto 5.2.x validates InstanceType against an enum that predates Inferentia2
    (FakeEndpointConfig.validate_instance_type), so every real inf2 request would
    fail there. Only those four names are added; anything else still goes through
    moto's own check. This works for the in-process ThreadedMotoServer too.
    """
    from moto.sagemaker import models

    original = models.FakeEndpointConfig.validate_instance_type

    def validate_instance_type(self, instance_type: str) -> None:  # noqa: ANN001 - moto's signature
        if instance_type not in INF2_INSTANCE_TYPES:
            original(self, instance_type)

    monkeypatch.setattr(models.FakeEndpointConfig, "validate_instance_type", validate_instance_type)


def add_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give moto the UpdateEndpoint action it lacks (moto 5.2.x answers "not implemented").

    Like SageMaker once an update succeeded: the endpoint serves the new config's variants. With
    RetainAllVariantProperties, a variant of the same name keeps its instance count and weight (as
    autoscaling or UpdateEndpointWeightsAndCapacities left them) unless ExcludeRetainedVariantProperties
    names them; otherwise the new config's InitialInstanceCount resets them, as SageMaker does.
    """
    retained = {"DesiredInstanceCount": ("CurrentInstanceCount", "DesiredInstanceCount"),
                "DesiredWeight": ("CurrentWeight", "DesiredWeight")}
    from moto.core.responses import ActionResult
    from moto.sagemaker import models
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self: SageMakerResponse) -> ActionResult:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        config_name = self._get_param("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise models.ValidationError(message=f"Could not find endpoint '{name}'.")
        config = backend.describe_endpoint_config(config_name)
        before = {variant["VariantName"]: variant for variant in endpoint.production_variants}
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        if self._get_param("RetainAllVariantProperties"):
            excluded = {item["VariantPropertyType"] for item in self._get_param("ExcludeRetainedVariantProperties")
                        or []}
            for variant in endpoint.production_variants:
                for kind, keys in retained.items():
                    old = before.get(variant["VariantName"], {})
                    if kind not in excluded:
                        variant.update({key: old[key] for key in keys if key in old})
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)


def add_scaling_activities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give moto the DescribeScalingActivities action it lacks (moto 5.2.x answers "not implemented").

    The answer is an empty list, as Application Auto Scaling gives before anything scaled; tests of
    real activities use botocore's Stubber.
    """
    import json

    from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse

    def describe_scaling_activities(self: ApplicationAutoScalingResponse) -> str:
        return json.dumps({"ScalingActivities": []})

    monkeypatch.setattr(ApplicationAutoScalingResponse, "describe_scaling_activities", describe_scaling_activities,
                        raising=False)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """An in-process moto server on 127.0.0.1 (real HTTP), from an empty account; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        # moto's backends are process-wide: start from an empty account whatever ran before.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()
        yield url
    finally:
        server.stop()
