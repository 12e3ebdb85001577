"""The public surface is deliberate: ``inf2_deploy.__all__`` is pinned, and every module's ``__all__`` is exact."""
from __future__ import annotations

import ast
import importlib
import pkgutil

import inf2_deploy
import pytest

PUBLIC_API = {
    "__version__",
    # planning
    "DeploymentSpec", "load_spec", "Plan", "plan", "make_plan",
    # deploying
    "deploy_gptj", "Deployment", "delete_deployment", "list_deployments",
    # deployment targets
    "resolve", "LocalTarget", "SageMakerTarget", "DeploymentStatus",
    # errors
    "Inf2DeployError", "ConfigError", "PlanError", "ImageNotFoundError", "ModelSourceError", "AwsError",
    "CredentialsError", "EndpointFailedError", "EndpointNotFoundError", "InvocationError", "DeploymentStoppedError",
    # models and packaging
    "build_tiny_gptj", "package", "Artifact",
    # invoking and local deployments
    "Predictor", "LocalPredictor", "LocalDeployment", "serve_local", "connect",
    # benchmarking
    "bench", "BenchConfig", "BenchResult",
    # security
    "iam_policies",
}

MODULES = sorted(m.name for m in pkgutil.walk_packages(inf2_deploy.__path__, "inf2_deploy.")
                 if not m.name.endswith("__main__"))


def test_the_public_api_is_exactly_the_pinned_names() -> None:
    assert set(inf2_deploy.__all__) == PUBLIC_API
    assert len(inf2_deploy.__all__) == len(PUBLIC_API)  # no name twice
    assert dir(inf2_deploy) == sorted(PUBLIC_API)


@pytest.mark.parametrize("name", sorted(PUBLIC_API - {"__version__"}))
def test_every_public_name_is_defined_in_the_package(name: str) -> None:
    value = getattr(inf2_deploy, name)
    assert value.__module__.startswith("inf2_deploy."), f"{name} comes from {value.__module__}"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'deploy_everything'"):
        inf2_deploy.deploy_everything  # noqa: B018 - the attribute access is the test


@pytest.mark.parametrize("module_name", MODULES)
def test_each_modules_all_lists_what_it_defines_publicly(module_name: str) -> None:
    """As httpx checks its exported members: ``__all__`` names exist, and each public class or function
    defined in the module is listed (modules without ``__all__``, such as CLI commands' helpers, are skipped)."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what it does not have: {missing}"
    tree = ast.parse(open(module.__file__, encoding="utf-8").read())
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
               and not node.name.startswith("_")}
    unlisted = sorted(defined - set(exported))
    assert not unlisted, f"{module_name} defines public names missing from __all__: {unlisted}"
