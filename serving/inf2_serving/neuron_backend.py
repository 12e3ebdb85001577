"""The Neuron backend: GPT-J compiled for Inferentia2 with transformers-neuronx.

Start-up inside the LMI container:

1. ``NEURON_COMPILE_CACHE_URL`` is set from the ``compiled_cache_url`` property, else
   kept from the environment, else ``/var/tmp/neuron-compile-cache``. A cache under
   ``/opt/ml/model`` is refused: SageMaker mounts that folder read-only.
   ``NEURON_CC_FLAGS`` is set from ``neuron_cc_flags``.
2. The working directory becomes a writable temp dir, because the compiler writes
   scratch files to the current directory and SageMaker starts us in the read-only
   model folder.
3. ``GPTJForSampling.from_pretrained(...)`` then ``to_neuron()``: the compilation,
   minutes with a warm cache and up to an hour without one. It is timed and logged.

Generation goes through ``HuggingFaceGenerationModelAdapter`` (transformers'
``generate()`` over the Neuron model) when it imports, else through the model's own
``sample()``, which only knows top-k: there, greedy is top-k 1, temperature and
top_p are ignored, and tokens reach the client when the whole batch is done.

GPT-J's Neuron ``forward`` ignores ``start_ids``, so left-padded rows of unequal
length can differ from their unbatched result (see :mod:`inf2_serving.engine`).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import MutableMapping
from typing import Any

from .config import ConfigError, ServingConfig
from .engine import StepObserver
from .hf_generation import run_generate
from .schema import GenerationParams

__all__ = ["DEFAULT_COMPILE_CACHE", "NeuronBackend", "configure_compiler_env", "neuron_available"]

logger = logging.getLogger(__name__)

DEFAULT_COMPILE_CACHE = "/var/tmp/neuron-compile-cache"
READ_ONLY_MODEL_DIR = "/opt/ml/model"
NEURON_DEVICE = "/dev/neuron0"


def neuron_available() -> bool:
    """True when a Neuron device exists and transformers-neuronx imports (``backend=auto``)."""
    if not os.path.exists(NEURON_DEVICE):
        return False
    try:
        import transformers_neuronx  # noqa: F401
    except ImportError:
        return False
    return True


def _inside(path: str, folder: str) -> bool:
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder.rstrip("/") + "/")


def configure_compiler_env(config: ServingConfig, environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``NEURON_COMPILE_CACHE_URL`` (and ``NEURON_CC_FLAGS``); return the cache URL.

    Raises:
        ConfigError: the cache would be inside the read-only ``/opt/ml/model``.
    """
    env = os.environ if environ is None else environ
    field = "compiled_cache_url" if config.compiled_cache_url else "NEURON_COMPILE_CACHE_URL"
    url = config.compiled_cache_url or env.get("NEURON_COMPILE_CACHE_URL") or DEFAULT_COMPILE_CACHE
    if not url.startswith("s3://") and _inside(url, READ_ONLY_MODEL_DIR):
        raise ConfigError(field, url, f"{READ_ONLY_MODEL_DIR} is read-only on SageMaker; use "
                          f"{DEFAULT_COMPILE_CACHE} or an s3:// URL")
    env["NEURON_COMPILE_CACHE_URL"] = url
    if config.neuron_cc_flags:
        env["NEURON_CC_FLAGS"] = config.neuron_cc_flags
    return url


class NeuronBackend:
    """GPT-J on NeuronCores; the batch size is fixed at compile time."""

    name = "neuron"
    fixed_batch = True

    def __init__(self, config: ServingConfig, model_config: Any, eos_token_id: int) -> None:
        from transformers_neuronx.gptj.model import GPTJForSampling

        self.batch_size = config.batch_size
        self.n_positions = config.n_positions or model_config.n_positions
        self._eos = eos_token_id
        cache = configure_compiler_env(config)
        workdir = tempfile.gettempdir()
        os.chdir(workdir)
        logger.info(
            "Neuron backend: tp %d, amp %s, batch_size %d, n_positions %d, cache %s, cwd %s",
            config.tensor_parallel_degree, config.amp, self.batch_size, self.n_positions, cache, workdir,
        )
        self.model = GPTJForSampling.from_pretrained(
            config.weights_dir,
            batch_size=self.batch_size,
            tp_degree=config.tensor_parallel_degree,
            n_positions=self.n_positions,
            amp=config.amp,
        )
        started = time.monotonic()
        self.model.to_neuron()
        logger.info("Neuron backend: to_neuron() (compile and load) took %.1f s", time.monotonic() - started)
        self.adapter = self._make_adapter(model_config)

    def _make_adapter(self, model_config: Any) -> Any:
        try:
            from transformers_neuronx.generation_utils import HuggingFaceGenerationModelAdapter
        except ImportError:
            logger.info("HuggingFaceGenerationModelAdapter unavailable; generating with sample()")
            return None
        return HuggingFaceGenerationModelAdapter(model_config, self.model)

    def generate(
        self, input_ids: Any, attention_mask: Any, params: GenerationParams, max_new_tokens: int,
        observer: StepObserver,
    ) -> None:
        """See :class:`inf2_serving.engine.Backend`."""
        self.model.reset()
        if self.adapter is not None:
            run_generate(self.adapter, input_ids, attention_mask, params, max_new_tokens, observer, self._eos)
            return
        width = input_ids.shape[1]
        top_k = (params.top_k or 50) if params.sampling else 1
        start_ids = attention_mask.argmax(dim=1)
        out = self.model.sample(input_ids, width + max_new_tokens, start_ids=start_ids, top_k=top_k)
        for step in range(width, out.shape[1]):
            if all(observer.on_step(out[:, step].tolist())):
                break
