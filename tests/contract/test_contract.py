"""The laptop and the container read one contract: the same values pass on both sides.

Every case is generated from the contract's own tables (PARAMETERS, PROPERTIES,
DTYPES, BACKENDS), so a new rule is covered without a new test.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, get_args

import pytest
from inf2_deploy.artifact.djl_properties import handler_properties, parse_properties
from inf2_deploy.artifact.properties import PROPERTY_REFERENCE, render_properties, serving_properties
from inf2_deploy.client.invocation import check_parameters
from inf2_deploy.errors import ConfigError
from inf2_deploy.local.supervisor import check_backend
from inf2_deploy.spec.deployment_spec import DeploymentSpec, load_spec
from inf2_deploy.spec.planner import make_plan
from inf2_deploy.spec.validators import check_endpoint_name
from inf2_serving import config as serving_config
from inf2_serving.contract import (
    BACKENDS,
    DTYPE_NAMES,
    DTYPES,
    HANDLER_PROPERTIES,
    PARAMETERS,
    PROPERTIES,
    PROPERTY_BY_FIELD,
    Parameter,
    Property,
    format_value,
)
from inf2_serving.schema import GenerationParams, InvalidRequest, parse_body, parse_request

# --- request parameters ------------------------------------------------------------------------------------


def _beyond(bound: float, kind: str, direction: float) -> float:
    """The nearest value past ``bound`` in ``direction``: the next whole number, or the next float."""
    return bound + direction if kind == "int" else math.nextafter(bound, direction * math.inf)


def _bound_cases(parameter: Parameter) -> list[tuple[Any, bool]]:
    low, high, kind = parameter.minimum, parameter.maximum, parameter.kind
    cases = []
    if low is not None:
        cases += [(low, not parameter.above_minimum), (_beyond(low, kind, -1), False),
                  (_beyond(low, kind, +1), True)]
    if high is not None:
        cases += [(high, True), (_beyond(high, kind, +1), False), (_beyond(high, kind, -1), True)]
    else:
        cases.append((10**30, True))
    return cases


def _cases(parameter: Parameter) -> list[tuple[Any, bool]]:
    """(value, whether the rule accepts it): at and just beyond each bound, and of every wrong type."""
    if parameter.kind == "bool":
        return [(True, True), (False, True), (0, False), (1, False), ("true", False), ([True], False)]
    if parameter.kind == "strings":
        most = parameter.max_items
        return [("a", True), ("", False), ([], True), (["a"] * most, True), (("a",) * most, True),
                (["a"] * (most + 1), False), ([""], False), (["a", 1], False), (5, False), ({"a": "b"}, False),
                ("\ud800", False), (["ok", "x\udc00y"], False), (["\U0001f600"], True)]
    wrong_types = [("1", False), (True, False), (False, False), ([1], False), ({}, False)]
    inside = parameter.minimum + 1 if parameter.minimum is not None else 1
    if parameter.kind == "int":
        wrong_types.append((float(inside), False))
    else:  # numbers: a whole number is one, but NaN, infinities and ints too large for a float are not
        wrong_types += [(int(inside), True), (math.nan, False), (math.inf, False), (-math.inf, False),
                        (10**400, False)]
    return _bound_cases(parameter) + wrong_types


PARAMETER_CASES = [pytest.param(parameter, value, accepted, id=f"{parameter.name}={value!r:.30}")
                   for parameter in PARAMETERS for value, accepted in _cases(parameter)]


def _client(parameters: dict[str, Any]) -> tuple[dict[str, Any] | None, ConfigError | None]:
    try:
        return check_parameters(parameters), None
    except ConfigError as exc:
        return None, exc


def _server(parameters: dict[str, Any]) -> tuple[GenerationParams | None, InvalidRequest | None]:
    try:
        return parse_request({"inputs": "hi", "parameters": parameters}).params, None
    except InvalidRequest as exc:
        return None, exc


@pytest.mark.parametrize(("parameter", "value", "accepted"), PARAMETER_CASES)
def test_client_and_server_accept_and_refuse_the_same_values(parameter: Parameter, value: Any,
                                                             accepted: bool) -> None:
    sent, refused_by_client = _client({parameter.name: value})
    params, refused_by_server = _server({parameter.name: value})
    assert (refused_by_client is None, refused_by_server is None) == (accepted, accepted)
    if accepted:
        expected = parameter.normalize(value)
        assert getattr(params, parameter.name) == expected
        # What the client sends is what the server parses, over the wire too.
        wire = parse_body(json.dumps({"inputs": "hi", "parameters": sent}).encode("utf-8"))
        assert getattr(wire.params, parameter.name) == expected
    else:
        server_field = refused_by_server.field.removeprefix("parameters.")
        assert refused_by_client.field == server_field and server_field.startswith(parameter.name)
        assert refused_by_server.code == 400 and server_field in str(refused_by_server)


@pytest.mark.parametrize("parameter", PARAMETERS, ids=lambda p: p.name)
def test_null_means_the_default_on_both_sides(parameter: Parameter) -> None:
    assert check_parameters({parameter.name: None}) == {}
    assert getattr(_server({parameter.name: None})[0], parameter.name) == parameter.default
    assert getattr(GenerationParams(), parameter.name) == parameter.default


@pytest.mark.parametrize("parameter", PARAMETERS, ids=lambda p: p.name)
def test_a_misspelled_name_is_refused_on_both_sides(parameter: Parameter) -> None:
    typo = parameter.name + "s"
    _, client_error = _client({typo: 1})
    _, server_error = _server({typo: 1})
    assert client_error.field == server_error.field == typo
    assert f"did you mean {parameter.name}?" in str(client_error) and typo in str(server_error)


def test_every_problem_is_reported_with_its_field() -> None:
    bad = {"top_p": 2, "seed": -1, "stop": ["ok", ""]}
    _, client_error = _client(bad)
    _, server_error = _server(bad)
    fields = [field for field, _ in client_error.problems]
    assert fields == ["top_p", "stop[1]", "seed"]
    assert all(f"parameters.{field} " in str(server_error) for field in fields)


def test_the_server_accepts_exactly_the_contract_parameters() -> None:
    assert [field.name for field in dataclasses.fields(GenerationParams)] == [p.name for p in PARAMETERS]


# --- serving.properties ------------------------------------------------------------------------------------

_SAMPLES = {"int": (1, 8, 4096), "bool": (True, False), "text": ("s3://bucket/prefix/", "--model-type=transformer -O1")}
_REFUSED = {"int": ("0", "-1", "four", "2.5"), "bool": ("yes", "1"), "text": (), "choice": ("bogus",)}


def _samples(prop: Property) -> tuple[Any, ...]:
    return prop.choices if prop.kind == "choice" else _SAMPLES[prop.kind]


@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda p: p.key)
def test_every_property_reads_back_what_is_written(prop: Property) -> None:
    assert prop.parse(None) == prop.parse("") == prop.default
    for value in _samples(prop):
        assert prop.parse(format_value(value)) == value
    if prop.kind == "choice":
        assert all(prop.parse(choice.upper()) == choice for choice in prop.choices)
    for raw in _REFUSED[prop.kind]:
        with pytest.raises(ValueError):
            prop.parse(raw)


@pytest.mark.parametrize("prop", [p for p in HANDLER_PROPERTIES if p.field != "model_id"], ids=lambda p: p.key)
def test_the_handler_reads_each_property_with_the_contract_default(prop: Property, tmp_path: Path) -> None:
    absent = serving_config.ServingConfig.from_properties({"model_dir": str(tmp_path)})
    assert getattr(absent, prop.field) == prop.default
    assert getattr(serving_config.ServingConfig("m", "m"), prop.field) == prop.default
    for value in _samples(prop):
        config = serving_config.ServingConfig.from_properties(
            {"model_dir": str(tmp_path), prop.handler_key: format_value(value)})
        assert getattr(config, prop.field) == value
    for raw in _REFUSED[prop.kind]:
        with pytest.raises(serving_config.ConfigError) as info:
            serving_config.ServingConfig.from_properties({"model_dir": str(tmp_path), prop.handler_key: raw})
        assert info.value.field == prop.handler_key


PLANS = [
    {},
    {"instance_type": "ml.inf2.48xlarge", "tensor_parallel_degree": 8, "n_positions": 1024, "batch_size": 4,
     "dtype": "bf16", "neuron_cc_flags": "--model-type=transformer -O1", "model_loading_timeout": 7200},
    {"instance_type": "ml.inf2.48xlarge", "tensor_parallel_degree": 8, "n_positions": 512, "dtype": "fp32"},
]


@pytest.mark.parametrize("settings", PLANS)
def test_what_the_client_renders_the_container_parses_to_the_same_values(settings: dict, tmp_path: Path) -> None:
    plan = make_plan(load_spec(region="us-east-1", **settings), image_resolver=lambda region, version: "image")
    weights = tmp_path / "weights"
    weights.mkdir()
    written = parse_properties(render_properties(serving_properties(plan, model_id=str(weights))))
    by_key = {prop.key: prop for prop in PROPERTIES}
    assert set(written) <= set(by_key)
    for key, text in written.items():
        prop = by_key[key]
        source = plan if hasattr(plan, prop.field) else plan.spec  # the plan resolves tp and n_positions
        if hasattr(source, prop.field):
            assert prop.parse(text) == getattr(source, prop.field), key
    config = serving_config.ServingConfig.from_properties(handler_properties(written, tmp_path))
    assert config.weights_dir == os.path.abspath(weights)
    for prop in HANDLER_PROPERTIES:
        if prop.field != "model_id":
            assert getattr(config, prop.field) == prop.parse(written.get(prop.key)), prop.key


def test_spec_fields_map_to_property_keys_once() -> None:
    assert PROPERTY_BY_FIELD["compile_cache_url"].key == "option.compiled_cache_url"
    assert len(PROPERTY_BY_FIELD) == len(PROPERTIES) == len({prop.key for prop in PROPERTIES})
    config_fields = {field.name for field in dataclasses.fields(serving_config.ServingConfig)}
    assert {prop.field for prop in HANDLER_PROPERTIES} - {"model_id"} == config_fields - {"model_dir", "weights_dir"}


def test_the_reference_documents_every_property() -> None:
    assert [row[0] for row in PROPERTY_REFERENCE] == [prop.key for prop in PROPERTIES]
    assert all(row[3] == prop.description for row, prop in zip(PROPERTY_REFERENCE, PROPERTIES, strict=True))


# --- dtypes, backends and names ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [*DTYPE_NAMES, "int8", "fp8"])
def test_the_spec_and_the_handler_take_the_same_dtypes(dtype: str, tmp_path: Path) -> None:
    known = dtype in DTYPES
    assert set(get_args(DeploymentSpec.model_fields["dtype"].annotation)) == set(DTYPE_NAMES)
    try:
        config = serving_config.ServingConfig.from_properties({"model_dir": str(tmp_path), "dtype": dtype})
    except serving_config.ConfigError:
        config = None
    try:
        spec_dtype = load_spec(dtype=dtype).dtype
    except ConfigError:
        spec_dtype = None
    assert (config is not None, spec_dtype is not None) == (known, known)
    if known:
        assert config.amp == DTYPES[dtype].neuron_amp and spec_dtype == dtype


@pytest.mark.parametrize("backend", [*BACKENDS, "gpu"])
def test_the_local_server_and_the_handler_take_the_same_backends(backend: str, tmp_path: Path) -> None:
    known = backend in BACKENDS
    props = {"model_dir": str(tmp_path), "backend": backend}
    if known:
        assert check_backend(backend) == serving_config.ServingConfig.from_properties(props).backend == backend
        return
    with pytest.raises(ConfigError):
        check_backend(backend)
    with pytest.raises(serving_config.ConfigError):
        serving_config.ServingConfig.from_properties(props)


@pytest.mark.parametrize(("name", "valid"), [
    ("a", True), ("a" * 63, True), ("a" * 64, False), ("gptj-6b-1", True), ("a--b", True), ("-a", False),
    ("a-", False), ("a_b", False), ("", False),
])
def test_endpoint_names_follow_one_rule(name: str, valid: bool) -> None:
    try:
        check_endpoint_name(name, "name")
        checked = True
    except ConfigError:
        checked = False
    try:
        load_spec(endpoint_name=name)
        spec_ok = True
    except ConfigError:
        spec_ok = False
    assert (checked, spec_ok) == (valid, valid)
