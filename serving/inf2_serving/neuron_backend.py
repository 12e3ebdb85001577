"""The Neuron backend: GPT-J compiled for Inferentia2 with transformers-neuronx.

Start-up inside the LMI container:

1. The compiler environment (:func:`configure_compiler_env`): our ``neuron_cc_flags``
   are merged into any ``NEURON_CC_FLAGS`` already set. The compile cache is the
   ``--cache_dir`` in those flags when there is one (libneuronxla gives it precedence),
   else the ``compiled_cache_url`` property, else ``NEURON_COMPILE_CACHE_URL``, else
   ``/var/tmp/neuron-compile-cache``. A local cache that cannot be written (SageMaker
   mounts ``/opt/ml/model`` read-only) is copied to ``/var/tmp/neuron-compile-cache``,
   as LMI does, and that copy is used.
2. The working directory becomes a writable temp dir, because SageMaker starts us in
   the read-only model folder; the weights path is already absolute.
3. ``GPTJForSampling.from_pretrained(...)`` links the weights, then ``to_neuron()``
   reads them and compiles one graph per bucket: minutes with a warm cache and up to
   an hour without one. The graphs are built with the causal decode mask of
   :mod:`inf2_serving.neuron_mask`, because the library's own attends to position 0 only.

GPT-J's compiled graph runs one token per call, prompt tokens included
(``gptj/model.py:99-102`` at c8d6bdc), so the time to the first token grows with the
prompt: about prompt_tokens x the per-token step.

Generation goes through ``HuggingFaceGenerationModelAdapter`` (transformers'
``generate()`` over the Neuron model) when it imports, else through the model's own
``sample()``, which only knows top-k and never stops at EOS: there, greedy is top-k 1,
temperature and top_p are ignored, and tokens reach the client when the whole batch
is done.

GPT-J's Neuron ``forward`` ignores ``start_ids``, so left-padded rows of unequal
length can differ from their unbatched result (see :mod:`inf2_serving.engine`).

With the rolling batch (``option.rolling_batch`` not ``disable``), :meth:`NeuronBackend.decode_batch`
drives ``forward`` itself, one token per step with rows left-aligned, so every row is
exact whatever its batch mates' lengths; admitting a row while others run replays
their contexts (:mod:`inf2_serving.neuron_rolling`).
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from .config import ServingConfig
from .contract import MODEL_DIR
from .engine import StepObserver
from .hf_generation import run_generate
from .neuron_mask import decode_mask_installed
from .neuron_rolling import NeuronDecodeBatch
from .schema import GenerationParams

__all__ = ["DEFAULT_COMPILE_CACHE", "NeuronBackend", "configure_compiler_env", "merge_cc_flags", "neuron_available"]

logger = logging.getLogger(__name__)

DEFAULT_COMPILE_CACHE = "/var/tmp/neuron-compile-cache"
NEURON_DEVICE = "/dev/neuron0"
_CACHE_DIR_FLAG = "--cache_dir"


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


def _flag_groups(flags: str) -> list[tuple[str | None, list[str]]]:
    """Split compiler flags into ``(option name, tokens)``; ``--x=1`` and ``--x 1`` both name ``--x``."""
    groups: list[tuple[str | None, list[str]]] = []
    for token in shlex.split(flags):
        if token.startswith("-"):
            groups.append((token.split("=", 1)[0], [token]))
        elif groups and groups[-1][0] is not None and "=" not in groups[-1][1][0] and len(groups[-1][1]) == 1:
            groups[-1][1].append(token)  # the value of a "--name value" option
        else:
            groups.append((None, [token]))
    return groups


def merge_cc_flags(existing: str, ours: str) -> str:
    """``existing`` compiler flags with ``ours`` added; an option given in both takes our value."""
    mine = _flag_groups(ours)
    named = {name for name, _ in mine if name is not None}
    kept = [group for group in _flag_groups(existing) if group[0] is None or group[0] not in named]
    return " ".join(shlex.quote(token) for _, tokens in kept + mine for token in tokens)


def _cache_dir_flag(flags: str) -> str | None:
    for name, tokens in _flag_groups(flags):
        if name == _CACHE_DIR_FLAG:
            return tokens[0].split("=", 1)[1] if "=" in tokens[0] else (tokens[1] if len(tokens) > 1 else None)
    return None


def _writable_cache(location: str, read_only_root: str, default_cache: str) -> str:
    """``location``, or ``default_cache`` holding a copy of it when it cannot be written."""
    if location.startswith("s3://"):
        return location
    unwritable = os.path.exists(location) and not os.access(location, os.W_OK)
    if not (_inside(location, read_only_root) or unwritable):
        return location
    if os.path.isdir(location):
        shutil.copytree(location, default_cache, dirs_exist_ok=True)
        logger.info("compile cache %s is read-only; copied it to %s and compiling there", location, default_cache)
    else:
        logger.info("compile cache %s is read-only; using %s instead", location, default_cache)
    return default_cache


def configure_compiler_env(
    config: ServingConfig,
    environ: MutableMapping[str, str] | None = None,
    *,
    read_only_root: str = MODEL_DIR,
    default_cache: str = DEFAULT_COMPILE_CACHE,
) -> str:
    """Set ``NEURON_CC_FLAGS`` and ``NEURON_COMPILE_CACHE_URL``; return the cache the compiler will use.

    Args:
        environ: the environment to change (default ``os.environ``).
        read_only_root: a folder that is never written (SageMaker's model folder).
        default_cache: where a read-only cache is copied to.
    """
    env = os.environ if environ is None else environ
    flags = merge_cc_flags(env.get("NEURON_CC_FLAGS", ""), config.neuron_cc_flags or "")
    cache_dir = _cache_dir_flag(flags)
    if cache_dir is not None:
        usable = _writable_cache(cache_dir, read_only_root, default_cache)
        if usable != cache_dir:
            flags = merge_cc_flags(flags, f"{_CACHE_DIR_FLAG}={usable}")
        cache = usable
    else:
        url = config.compile_cache_url or env.get("NEURON_COMPILE_CACHE_URL") or default_cache
        cache = _writable_cache(url, read_only_root, default_cache)
        env["NEURON_COMPILE_CACHE_URL"] = cache
    if flags:
        env["NEURON_CC_FLAGS"] = flags
    return cache


class NeuronBackend:
    """GPT-J on NeuronCores; the batch size is fixed at compile time."""

    name = "neuron"
    fixed_batch = True

    def __init__(self, config: ServingConfig, model_config: Any, eos_token_id: int) -> None:
        from transformers_neuronx.gptj.model import GPTJForSampling

        self.batch_size = config.batch_size
        self.n_positions = config.n_positions or model_config.n_positions
        self._eos = eos_token_id
        self.replay_interval_ms = config.replay_interval_ms
        cache = configure_compiler_env(config)
        workdir = tempfile.gettempdir()
        os.chdir(workdir)
        logger.info(
            "Neuron backend: tp %d, amp %s, batch_size %d, n_positions %d, cache %s, cwd %s",
            config.tensor_parallel_degree, config.amp, self.batch_size, self.n_positions, cache, workdir,
        )
        # batch_size, amp and tp_degree are constructor arguments; every other keyword must
        # name an attribute of its GPT-J config (utils.maybe_override_attributes raises
        # KeyError otherwise), and n_positions is one.
        self.model = GPTJForSampling.from_pretrained(
            config.weights_dir,
            batch_size=self.batch_size,
            tp_degree=config.tensor_parallel_degree,
            amp=config.amp,
            n_positions=self.n_positions,
        )
        started = time.monotonic()
        with decode_mask_installed(config.correct_decode_mask):
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

    def next_token_logits(self, input_ids: Any) -> Any:
        """See :class:`inf2_serving.engine.Backend`; rows are padded to the compiled batch."""
        import torch

        rows, width = input_ids.shape
        padded = torch.cat([input_ids, input_ids[-1:].expand(self.batch_size - rows, width)])
        self.model.reset()
        with torch.no_grad():
            logits = self.model(padded, torch.arange(width, dtype=torch.int32))
        return logits[:rows].float()

    def decode_batch(self, clock: Callable[[], float] = time.monotonic) -> NeuronDecodeBatch:
        """A rolling decode batch over the compiled batch's ``batch_size`` slots.

        Args:
            clock: seconds, monotonic; times the decoding between two replays (``replay_interval_ms``).
        """
        return NeuronDecodeBatch(self.model, self.batch_size, self._eos, self.replay_interval_ms / 1000, clock)

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
