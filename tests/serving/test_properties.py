"""What DJL hands the handler, and how the handler validates it."""
from __future__ import annotations

import pytest
from inf2_deploy.artifact.djl_properties import PropertiesError, handler_properties, parse_properties
from inf2_serving.config import ConfigError, ServingConfig


def test_handler_properties_strip_option_and_add_model_dir() -> None:
    text = "engine=Python\noption.entryPoint=model.py\noption.tensor_parallel_degree=2\nbatch_size=4\n" \
           "max_batch_delay=50\n# comment\noption.batch_size=2\n"
    props = handler_properties(parse_properties(text), "/opt/ml/model")
    assert props == {"engine": "Python", "entryPoint": "model.py", "tensor_parallel_degree": "2",
                     "batch_size": "2", "max_batch_delay": "50", "model_dir": "/opt/ml/model"}


def test_spaced_keys_are_refused() -> None:
    with pytest.raises(PropertiesError, match="no spaces"):
        parse_properties("option.dtype = fp16\n")


def test_serving_config_reads_every_property(tiny_gptj) -> None:
    config = ServingConfig.from_properties({
        "model_dir": "/opt/ml/model", "model_id": str(tiny_gptj), "backend": "Neuron", "tensor_parallel_degree": "8",
        "n_positions": "1024", "batch_size": "4", "dtype": "bf16", "compiled_cache_url": "s3://b/c",
        "neuron_cc_flags": "-O2",
    })
    assert config.weights_dir == str(tiny_gptj) and config.backend == "neuron"
    assert (config.tensor_parallel_degree, config.n_positions, config.batch_size) == (8, 1024, 4)
    assert (config.amp, config.compile_cache_url, config.neuron_cc_flags) == ("bf16", "s3://b/c", "-O2")
    defaults = ServingConfig.from_properties({"model_dir": "/m"})
    assert (defaults.backend, defaults.batch_size, defaults.amp, defaults.n_positions) == ("auto", 1, "f32", None)


@pytest.mark.parametrize(("props", "field"), [
    ({}, "model_dir"),
    ({"model_dir": "/m", "backend": "gpu"}, "backend"),
    ({"model_dir": "/m", "dtype": "int8"}, "dtype"),
    ({"model_dir": "/m", "batch_size": "four"}, "batch_size"),
    ({"model_dir": "/m", "tensor_parallel_degree": "0"}, "tensor_parallel_degree"),
    ({"model_dir": "/m", "model_id": "EleutherAI/gpt-j-6b"}, "model_id"),
])
def test_bad_properties_name_the_field(props, field) -> None:
    with pytest.raises(ConfigError) as info:
        ServingConfig.from_properties(props)
    assert info.value.field == field and field in str(info.value)
