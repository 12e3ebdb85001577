"""Stand-in for ``transformers_neuronx/module.py``: lazy checkpoint linking and materialization.

As in the real module, ``from_pretrained`` reads no weight data for safetensors and
split checkpoints: each parameter only records the file and key it will come from
(``_file_path``, ``_global_key``), and ``materialize()`` (called by ``to_neuron()``)
reads them. A parameter that no checkpoint key named stays a
``torch.nn.parameter.UninitializedParameter`` and fails where the model first uses it,
with torch's own ``ValueError``.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from safetensors import safe_open
from torch.nn.parameter import UninitializedParameter
from transformers import AutoConfig

from transformers_neuronx import constants

# Mirrors module.py:29: lazy modules warn on construction; the real module silences that.
warnings.filterwarnings("ignore", category=UserWarning, module="torch.nn.modules.lazy")

_SAFETENSORS_MODEL_INDEX_FILENAME_JSON = "model.safetensors.index.json"
_SAFETENSORS_MODEL_FILENAME = "model.safetensors"
_PYTORCH_MODEL_BIN_INDEX_FILENAME_JSON = "pytorch_model.bin.index.json"
_PYTORCH_MODEL_BIN_FILENAME = "pytorch_model.bin"
_KEY_TO_FILENAME_JSON = "key_to_filename.json"


class LowMemoryModule(torch.nn.Module):
    """Mirrors transformers_neuronx/module.py:61-279 at c8d6bdc."""

    def materialize(self) -> None:
        """Mirrors module.py:63-85: read every linked parameter (safetensors by key, else ``torch.load``).

        A key missing from its safetensors file is ``FileNotFoundError``; unlinked parameters
        are skipped (and stay uninitialized). The ``.empty_json`` variant is not mirrored.
        """
        with torch.no_grad():
            for param in self.parameters():
                path = getattr(param, "_file_path", None)
                if path is None:
                    continue
                key = param._global_key
                if path.endswith(".safetensors"):
                    with safe_open(path, framework="pt") as handle:
                        if key not in handle.keys():
                            raise FileNotFoundError(f"Could not find a weight for {key} in {path}")
                        data = handle.get_tensor(key)
                else:
                    data = torch.load(path)
                if torch.nn.parameter.is_lazy(param):
                    param.materialize(data.shape)
                param.copy_(data)

    def nullify(self) -> None:
        """Mirrors module.py:87-104: swap each parameter for a blank (float32) one that keeps its link."""

        def blank_out(module: torch.nn.Module) -> None:
            for name, param in module.named_parameters():
                if "." in name or not hasattr(module, name):
                    continue
                blank = UninitializedParameter()
                if hasattr(param, "_file_path"):
                    blank._file_path = param._file_path
                    blank._global_key = param._global_key
                setattr(module, name, blank)
            for child in module.modules():
                if child is not module and child is not None:
                    blank_out(child)

        blank_out(self)

    def load_state_dict_low_memory(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Mirrors module.py:106-127: copy matching keys now (used by the eager pytorch_model.bin paths)."""

        def load(module: torch.nn.Module, prefix: str = "") -> None:
            module._load_from_state_dict_low_memory(state_dict, prefix)
            for name, child in module.named_modules():
                if child is not module and child is not None:
                    load(child, prefix + name + ".")

        load(self)

    def _load_from_state_dict_low_memory(self, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
        for name, param in self.named_parameters():
            if param is None or prefix + name not in state_dict:
                continue
            data = state_dict.pop(prefix + name)
            with torch.no_grad():
                if torch.nn.parameter.is_lazy(param):
                    param.materialize(data.shape)
                param.copy_(data)

    def _load_state(self, state_dict_dir: str, key_to_filename: dict[str, str], prefix: str = "") -> bool:
        """Mirrors module.py:129-140: link each parameter whose key is listed; True if all were."""
        complete = True
        for name, param in self.named_parameters():
            if param is None:
                continue
            key = prefix + name
            if key not in key_to_filename:
                complete = False
                continue
            param._file_path = os.path.join(state_dict_dir, key_to_filename[key])
            param._global_key = key
        return complete

    def _load_ties(self) -> None:
        """Mirrors module.py:142-159: an unlinked tied parameter borrows the link of a linked one."""
        for ties in self.get_tied_parameters():
            source = next((param for param in ties if hasattr(param, "_file_path")), None)
            if source is None:
                continue
            for param in ties:
                if not hasattr(param, "_file_path"):
                    param._file_path = source._file_path
                    param._global_key = source._global_key

    def _load_from_state_dict_dir(self, state_dict_dir: str, key_to_filename: dict[str, str],
                                  prefix: str = "") -> None:
        """Mirrors module.py:161-176: full names first; if some are missing, the base model's, then ties."""
        state_dict_dir = os.path.realpath(state_dict_dir)
        if self._load_state(state_dict_dir, key_to_filename, prefix):
            return
        base = self.get_base_model()
        if base:
            base._load_state(state_dict_dir, key_to_filename, prefix)
        self._load_ties()

    def load_pytorch_model_bin(self, state_dict_dir: str) -> None:
        """Mirrors module.py:178-184: eager, the whole state dict is read now."""
        state_dict = torch.load(os.path.join(state_dict_dir, _PYTORCH_MODEL_BIN_FILENAME))
        self.load_state_dict_low_memory(state_dict)

    def load_pytorch_model_bin_sharded(self, state_dict_dir: str) -> None:
        """Mirrors module.py:186-197: eager, shard by shard."""
        with open(os.path.join(state_dict_dir, _PYTORCH_MODEL_BIN_INDEX_FILENAME_JSON)) as handle:
            key_to_filename = json.load(handle)["weight_map"]
        for filename in set(key_to_filename.values()):
            self.load_state_dict_low_memory(torch.load(os.path.join(state_dict_dir, filename)))

    def load_safetensors(self, state_dict_dir: str) -> None:
        """Mirrors module.py:199-207: lazy, every key of model.safetensors links to that file."""
        filename = os.path.join(state_dict_dir, _SAFETENSORS_MODEL_FILENAME)
        with safe_open(filename, framework="pt") as handle:
            keys = list(handle.keys())
        self._load_from_state_dict_dir(state_dict_dir, dict.fromkeys(keys, _SAFETENSORS_MODEL_FILENAME))

    def load_safetensors_sharded(self, state_dict_dir: str) -> None:
        """Mirrors module.py:209-216: lazy, links follow the index's weight_map (not checked against the shards)."""
        with open(os.path.join(state_dict_dir, _SAFETENSORS_MODEL_INDEX_FILENAME_JSON)) as handle:
            key_to_filename = json.load(handle)["weight_map"]
        self._load_from_state_dict_dir(state_dict_dir, key_to_filename)

    def load_split_checkpoint(self, state_dict_dir: str) -> None:
        """Mirrors module.py:218-225: lazy, pytorch_model.bin/ is a folder with key_to_filename.json."""
        folder = os.path.join(state_dict_dir, _PYTORCH_MODEL_BIN_FILENAME)
        with open(os.path.join(folder, _KEY_TO_FILENAME_JSON)) as handle:
            key_to_filename = json.load(handle)
        self._load_from_state_dict_dir(folder, key_to_filename)

    def get_tied_parameters(self) -> list[tuple[torch.nn.Parameter, ...]]:
        """Mirrors module.py:227-245."""
        return []

    def get_base_model(self) -> LowMemoryModule | None:
        """Mirrors module.py:247-279."""
        return None


class LowMemoryModuleList(torch.nn.ModuleList, LowMemoryModule):
    """Mirrors transformers_neuronx/module.py:281 at c8d6bdc."""


class LowMemoryLazyLinear(torch.nn.LazyLinear, LowMemoryModule):
    """Mirrors transformers_neuronx/module.py:282 at c8d6bdc: weight (and bias) uninitialized, in ``dtype``."""


class LowMemoryLayerNorm(torch.nn.LayerNorm, LowMemoryModule):
    """Mirrors transformers_neuronx/module.py:284-298 at c8d6bdc: float32 uninitialized weight and bias."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(0)
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()

    def reset_parameters(self) -> None:
        pass


class LowMemoryEmbedding(torch.nn.Embedding, LowMemoryModule):
    """Mirrors transformers_neuronx/module.py:301-321 at c8d6bdc: float32 uninitialized weight."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Any = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__(0, 0)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self.weight = UninitializedParameter()

    def reset_parameters(self) -> None:
        pass


def maybe_download_weights(path_or_repo_id: str, safe_serialization: bool = True, **kwargs: Any) -> str:
    """Mirrors transformers_neuronx/module.py:324-390 at c8d6bdc for a local folder (returned as is).

    The real one downloads from the Hugging Face Hub otherwise; the stand-in refuses.
    """
    if os.path.isdir(path_or_repo_id):
        return path_or_repo_id
    raise OSError(f"transformers_neuronx stand-in: {path_or_repo_id} is not a local folder (no Hub downloads)")


class PretrainedModel(LowMemoryModule):
    """Mirrors transformers_neuronx/module.py:393-451 at c8d6bdc."""

    @classmethod
    def from_pretrained(cls, pretrained_model_path: str, *model_args: Any, **kwargs: Any) -> PretrainedModel:
        """Mirrors module.py:395-423: check, AutoConfig, ``cls(config, ...)``, then link the weights."""
        _sanity_check(**kwargs)
        config = AutoConfig.from_pretrained(pretrained_model_path)
        model = cls(config, *model_args, **kwargs)
        pretrained_model_path = maybe_download_weights(pretrained_model_path, **kwargs)
        model.load_state_dict_dir(pretrained_model_path)
        return model

    def load_state_dict_dir(self, pretrained_model_path: str) -> None:
        """Mirrors module.py:425-451: the first layout present wins, fastest first.

        model.safetensors, model.safetensors.index.json, a pytorch_model.bin/ folder (split
        checkpoint), a pytorch_model.bin file, pytorch_model.bin.index.json; else
        ``FileNotFoundError``.
        """
        def path(name: str) -> str:
            return os.path.join(pretrained_model_path, name)

        if os.path.isfile(path(_SAFETENSORS_MODEL_FILENAME)):
            self.load_safetensors(pretrained_model_path)
        elif os.path.exists(path(_SAFETENSORS_MODEL_INDEX_FILENAME_JSON)):
            self.load_safetensors_sharded(pretrained_model_path)
        elif os.path.isdir(path(_PYTORCH_MODEL_BIN_FILENAME)):
            self.load_split_checkpoint(pretrained_model_path)
        elif os.path.isfile(path(_PYTORCH_MODEL_BIN_FILENAME)):
            self.load_pytorch_model_bin(pretrained_model_path)
        elif os.path.isfile(path(_PYTORCH_MODEL_BIN_INDEX_FILENAME_JSON)):
            self.load_pytorch_model_bin_sharded(pretrained_model_path)
        else:
            raise FileNotFoundError(f"Can not find model.safetensors or pytorch_model.bin in {pretrained_model_path}")


def _sanity_check(**kwargs: Any) -> None:
    """Mirrors module.py:398-416: continuous batching's batch size; BSH cache layout only with it."""
    neuron_config = kwargs.get("neuron_config")
    bsh_cache_layout = neuron_config is not None and neuron_config.cache_layout == constants.LAYOUT_BSH
    continuous_batching = neuron_config and neuron_config.continuous_batching
    if continuous_batching:
        expected = kwargs.get("batch_size")
        shared = continuous_batching.batch_size_for_shared_caches
        assert shared == expected, f"invalid batch_size_for_shared_caches ({shared}), {expected} is expected"
        if bsh_cache_layout:
            assert isinstance(kwargs.get("n_positions", 2048), list) and len(kwargs["n_positions"]) == 1
            estimate = kwargs.get("context_length_estimate")
            assert isinstance(estimate, list) and len(estimate) == 1, (
                "BSH cache layout does not support multi-bucketing")
    else:
        assert not bsh_cache_layout, "BSH cache layout can only be configured with continuous batching."
