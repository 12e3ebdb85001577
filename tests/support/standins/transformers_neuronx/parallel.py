"""Stand-in for ``transformers_neuronx/parallel.py``: tensor-parallel placement, on the CPU.

A "NeuronCore" is an index into a list: ``shard_along`` returns one tensor per rank.
"""
from __future__ import annotations

import torch


class ParallelTensorManipulator:
    """Mirrors transformers_neuronx/parallel.py:86-145 at c8d6bdc (single instance: local tp = tp)."""

    def __init__(self, tp_degree: int) -> None:
        self.tp_degree = tp_degree

    def duplicate(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Mirrors parallel.py:98-99: the same tensor on every rank."""
        return [tensor.contiguous() for _ in range(self.tp_degree)]

    def duplicate_on_cpu(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Mirrors parallel.py:95-96."""
        return [tensor for _ in range(self.tp_degree)]

    def shard_along(self, tensor: torch.Tensor, dim: int) -> list[torch.Tensor]:
        """Mirrors parallel.py:101-129: consecutive equal slices along ``dim``, one per rank.

        Slices of ``size // tp`` are cut from the start; if that does not give exactly
        ``tp`` of them, the real ``ValueError`` is raised (``size < tp`` fails in
        ``range`` with a zero step, as in the real one).
        """
        size = tensor.shape[dim]
        step = size // self.tp_degree
        shards = [tensor.narrow(dim, start, min(step, size - start)).contiguous()
                  for start in range(0, size, step)]
        if len(shards) != self.tp_degree:
            raise ValueError(
                f"Weight with shape {tensor.shape} cannot be sharded along dimension {dim}. "
                f"This results in {len(shards)} weight partitions which cannot be distributed to "
                f"{self.tp_degree} NeuronCores evenly. To fix this issue either the model parameters or the "
                f"`tp_degree` must be changed to allow the weight to be evenly split")
        return shards

    def primary_only(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Mirrors parallel.py:136-139: the tensor on rank 0, zeros of its shape elsewhere."""
        return [tensor] + [torch.zeros_like(tensor) for _ in range(1, self.tp_degree)]

    def unshard_along(self, shards: list[torch.Tensor], dim: int) -> torch.Tensor:
        """Mirrors parallel.py:141-142."""
        return torch.cat(shards, dim=dim)

    def slice_on_nc(self, tensors: list[torch.Tensor], dim: int, start: int, end: int, step: int
                    ) -> list[torch.Tensor]:
        """Mirrors parallel.py:144-145: views (the real slices alias device memory too)."""
        index = (slice(None),) * dim + (slice(start, end, step),)
        return [tensor[index] for tensor in tensors]
