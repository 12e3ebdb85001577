"""inf2-deploy: GPT-J on Amazon SageMaker with AWS Inferentia2.

Plan a deployment, package the artifact, deploy it (to SageMaker or a local
server), invoke, stream, benchmark and delete it. Public names are loaded on
first use so that ``import inf2_deploy`` and the CLI start fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # planning
    "DeploymentSpec": "spec.deployment_spec",
    "load_spec": "spec.deployment_spec",
    "Plan": "spec.planner",
    "plan": "spec.planner",
    "make_plan": "spec.planner",
    # deploying
    "deploy_gptj": "api",
    "Deployment": "aws.deployment",
    "delete_deployment": "aws.teardown",
    "list_deployments": "aws.deploy",
    # deployment targets: one name or URL, one set of verbs
    "resolve": "client.targets",
    "LocalTarget": "client.targets",
    "SageMakerTarget": "client.targets",
    "DeploymentStatus": "status",
    # errors
    "Inf2DeployError": "errors",
    "ConfigError": "errors",
    "PlanError": "errors",
    "ImageNotFoundError": "errors",
    "ModelSourceError": "errors",
    "AwsError": "errors",
    "CredentialsError": "errors",
    "EndpointFailedError": "errors",
    "EndpointNotFoundError": "errors",
    "InvocationError": "errors",
    "DeploymentStoppedError": "errors",
    # models
    "build_tiny_gptj": "artifact.tiny",
    # packaging
    "package": "artifact.packager",
    "Artifact": "artifact.manifest",
    # invoking and local deployments
    "Predictor": "client.predictor",
    "LocalPredictor": "client.predictor",
    "LocalDeployment": "local.records",
    "serve_local": "local.deploy",
    "connect": "client.targets",
    # benchmarking
    "bench": "benchmarking.runner",
    "BenchConfig": "benchmarking.config",
    "BenchResult": "benchmarking.runner",
    # security
    "iam_policies": "aws.iam",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'inf2_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
