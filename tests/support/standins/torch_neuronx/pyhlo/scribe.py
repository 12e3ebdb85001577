"""Stand-in for ``torch_neuronx/pyhlo/scribe.py``: the HloScribe / HloShape DSL.

Calling conventions are those of the real scribe:

* ``HloScribe(constant_serializer=None)(func)`` makes a fresh scribe, makes it
  ``HloScribe.context`` while ``func(scribe)`` runs, and returns that scribe.
* every XLA element type, lowercased, is a dimensionless ``HloShape`` attribute of the
  scribe (``scribe.f32``, ``scribe.s32``, ``scribe.pred``, ...);
* ``shape[sizes]`` gives a sized shape; an XLA op called on it (``f32[2, 3].Add(a, b)``)
  returns a new shape carrying that instruction; ``shape.sizes``, ``shape.dtype`` and
  ``shape.scribe`` (= ``HloScribe.context``) are as in the real one.

Differences, all stand-in only: the real scribe serializes an HLO module proto
(``scribe.module_proto``); this one records each instruction (opcode, element type,
sizes, operands, attributes) on the returned shape (``shape.instruction``), keeps them
in ``scribe.instructions`` and the value ``func`` returned in ``scribe.root``, and
:func:`evaluate` computes a recorded instruction with torch under XLA semantics. Only
the ops in ``ARITY`` exist here; any other XLA op raises ``NotImplementedError``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "ARITY", "PRIMITIVE_TYPES", "HloScribe", "HloShape", "Instruction", "evaluate", "scribe_context", "torch_dtype",
]

# XLA's PrimitiveType names, lowercased: each is an attribute of every scribe.
PRIMITIVE_TYPES = (
    "pred", "s4", "s8", "s16", "s32", "s64", "u4", "u8", "u16", "u32", "u64",
    "f16", "f32", "bf16", "f64", "c64", "c128",
    "f8e5m2", "f8e4m3fn", "f8e4m3b11fnuz", "f8e5m2fnuz", "f8e4m3fnuz",
    "tuple", "opaque_type", "token",
)

# Operand counts the real scribe checks; these are also the only ops this stand-in has.
ARITY = {
    "Add": 2, "And": 2, "Broadcast": 1, "Compare": 2, "Constant": 0, "Convert": 1,
    "Divide": 2, "Iota": 0, "Maximum": 2, "Minimum": 2, "Multiply": 2, "Not": 1,
    "Or": 2, "Parameter": 0, "Select": 3, "Subtract": 2,
}

_TORCH_DTYPES = {
    "pred": torch.bool, "s8": torch.int8, "s16": torch.int16, "s32": torch.int32, "s64": torch.int64,
    "u8": torch.uint8, "u16": getattr(torch, "uint16", None), "u32": getattr(torch, "uint32", None),
    "u64": getattr(torch, "uint64", None), "f16": torch.float16, "bf16": torch.bfloat16,
    "f32": torch.float32, "f64": torch.float64, "c64": torch.complex64, "c128": torch.complex128,
    "f8e5m2": getattr(torch, "float8_e5m2", None), "f8e4m3fn": getattr(torch, "float8_e4m3fn", None),
}

_COMPARISONS = {
    "EQ": torch.eq, "NE": torch.ne, "LT": torch.lt, "LE": torch.le, "GT": torch.gt, "GE": torch.ge,
}


@contextlib.contextmanager
def scribe_context(scribe: HloScribe):
    """Make ``scribe`` the one ``HloShape.scribe`` returns while the block runs."""
    previous = HloScribe.context
    HloScribe.context = scribe
    try:
        yield scribe
    finally:
        HloScribe.context = previous


class HloScribe:
    """Stand-in for ``torch_neuronx.pyhlo.scribe.HloScribe``."""

    context: HloScribe | None = None

    def __init__(self, constant_serializer: Any = None) -> None:
        self.constant_serializer = constant_serializer
        self.instructions: list[Instruction] = []  # stand-in only: every instruction scribed, in order
        self.root: Any = None  # stand-in only: what the scribed function returned
        for name in PRIMITIVE_TYPES:
            setattr(self, name, HloShape(name))

    def __call__(self, func: Any) -> HloScribe:
        scribe = HloScribe(self.constant_serializer)
        with scribe_context(scribe):
            scribe.root = func(scribe)
        return scribe

    @property
    def module_proto(self) -> Any:
        raise NotImplementedError("the HloScribe stand-in records instructions; it does not serialize HLO")

    @property
    def parameters(self) -> dict[int, HloShape]:
        """Stand-in only: the ``Parameter`` instructions scribed, by parameter number."""
        return {ins.attributes["parameter_number"]: ins.shape for ins in self.instructions
                if ins.opcode == "Parameter"}


@dataclass(eq=False)
class Instruction:
    """Stand-in only: one scribed op (the real scribe writes an HloInstructionProto)."""

    opcode: str
    element_type: str
    sizes: tuple[int, ...]
    operands: tuple[HloShape, ...]
    attributes: dict[str, Any] = field(default_factory=dict)
    shape: Any = field(default=None, repr=False)  # the HloShape that carries this instruction


class HloShape:
    """Stand-in for ``torch_neuronx.pyhlo.scribe.HloShape``: an element type, sizes, maybe an instruction."""

    def __init__(self, element_type: str, sizes: tuple[int, ...] = (), instruction: Instruction | None = None):
        self.element_type = element_type  # stand-in only name (the real one keeps a shape proto)
        self.sizes = tuple(sizes)
        self.instruction = instruction  # stand-in only

    @property
    def scribe(self) -> HloScribe | None:
        return HloScribe.context

    @property
    def dtype(self) -> HloShape:
        return getattr(self.scribe, self.element_type)

    def __getitem__(self, sizes: Any) -> HloShape:
        if isinstance(sizes, int):
            sizes = (sizes,)
        return HloShape(self.element_type, tuple(int(size) for size in sizes))

    def __call__(self, *shapes: Any) -> HloShape:
        raise NotImplementedError("the HloScribe stand-in has no tuple shapes")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not name[:1].isupper():
            raise AttributeError(name)
        if name not in ARITY:
            def unsupported(*operands: Any, **attributes: Any) -> HloShape:
                raise NotImplementedError(f"the HloScribe stand-in does not implement {name}")
            return unsupported

        def op(*operands: Any, **attributes: Any) -> HloShape:
            return self._scribe_op(name, operands, attributes)
        return op

    def _scribe_op(self, opcode: str, operands: tuple[Any, ...], attributes: dict[str, Any]) -> HloShape:
        arity = ARITY[opcode]
        if len(operands) != arity:
            raise ValueError(f"{opcode} accepts {arity} operands; received {len(operands)}")
        for operand in operands:
            if not isinstance(operand, HloShape) or operand.instruction is None:
                raise TypeError(f"{opcode} operands must be scribed instructions, got {operand!r}")
        instruction = Instruction(opcode, self.element_type, self.sizes, tuple(operands), dict(attributes))
        shape = HloShape(self.element_type, self.sizes, instruction)
        instruction.shape = shape
        if HloScribe.context is not None:
            HloScribe.context.instructions.append(instruction)
        return shape

    def __repr__(self) -> str:
        opcode = self.instruction.opcode if self.instruction else None
        return f"HloShape({self.element_type}{list(self.sizes)}, {opcode})"


# ---------------------------------------------------------------------------------------------
# Stand-in only: evaluation with torch.


def evaluate(shape: HloShape, parameters: dict[int, torch.Tensor]) -> torch.Tensor:
    """Stand-in only (not part of the real torch_neuronx API): compute ``shape``'s instruction.

    ``parameters`` maps parameter numbers to tensors. Semantics are XLA's: elementwise ops
    need operands of the result's exact sizes and element type (no implicit broadcasting),
    ``Broadcast(x, dimensions=dims)`` maps operand dimension ``i`` to output dimension
    ``dims[i]`` (strictly increasing; operand size equal to the output's or 1),
    ``Iota(dimensions=[d])`` is each element's index along ``d``, ``Compare`` gives pred,
    ``Convert`` changes the element type (pred to a number gives 0/1), integer ``Divide``
    rounds toward zero. Every result is checked against the instruction's declared sizes
    and element type; a mismatch raises ``ValueError``, as XLA would reject the module.
    """
    memo: dict[int, torch.Tensor] = {}

    def value(node: HloShape) -> torch.Tensor:
        instruction = node.instruction
        if instruction is None:
            raise ValueError(f"{node!r} carries no instruction to evaluate")
        key = id(instruction)
        if key not in memo:
            args = [value(operand) for operand in instruction.operands]
            result = _compute(instruction, args, parameters)
            if tuple(result.shape) != instruction.sizes:
                raise ValueError(f"{instruction.opcode} computes sizes {tuple(result.shape)} but declares "
                                 f"{instruction.sizes}")
            if result.dtype != torch_dtype(instruction.element_type):
                raise ValueError(f"{instruction.opcode} computes {result.dtype} but declares "
                                 f"{instruction.element_type}")
            memo[key] = result
        return memo[key]

    return value(shape)


def torch_dtype(element_type: str) -> torch.dtype:
    """Stand-in only: the torch dtype of an XLA element type name (``"f32"`` -> ``torch.float32``)."""
    dtype = _TORCH_DTYPES.get(element_type)
    if dtype is None:
        raise NotImplementedError(f"the HloScribe stand-in cannot evaluate element type {element_type}")
    return dtype


def _same_as_result(instruction: Instruction, args: list[torch.Tensor], element_types: list[str]) -> None:
    for index, operand in enumerate(instruction.operands):
        arg, element_type = args[index], element_types[index]
        if tuple(arg.shape) != instruction.sizes:
            raise ValueError(f"{instruction.opcode} operand {operand!r} has sizes {tuple(arg.shape)}; "
                             f"expected {instruction.sizes}")
        if operand.element_type != element_type:
            raise ValueError(f"{instruction.opcode} operand {operand!r} has element type "
                             f"{operand.element_type}; expected {element_type}")


def _compute(instruction: Instruction, args: list[torch.Tensor], parameters: dict[int, torch.Tensor]) -> torch.Tensor:
    opcode = instruction.opcode
    attrs = instruction.attributes
    sizes = instruction.sizes
    dtype = torch_dtype(instruction.element_type)
    if opcode == "Parameter":
        number = attrs["parameter_number"]
        if number not in parameters:
            raise ValueError(f"no value was given for parameter {number}")
        tensor = parameters[number]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"parameter {number} must be a torch.Tensor, got {type(tensor).__name__}")
        return tensor
    if opcode == "Constant":
        return torch.tensor(attrs["constant_value"], dtype=dtype)
    if opcode == "Iota":
        (dim,) = attrs["dimensions"]
        if not 0 <= dim < len(sizes):
            raise ValueError(f"Iota dimension {dim} is out of range for sizes {sizes}")
        view = [1] * len(sizes)
        view[dim] = sizes[dim]
        return torch.arange(sizes[dim], dtype=dtype).reshape(view).expand(sizes).contiguous()
    if opcode == "Broadcast":
        (arg,) = args
        dims = list(attrs["dimensions"])
        if len(dims) != arg.dim():
            raise ValueError(f"Broadcast of a rank-{arg.dim()} operand needs {arg.dim()} dimensions, got {dims}")
        if any(dims[i + 1] <= dims[i] for i in range(len(dims) - 1)):
            raise ValueError(f"Broadcast dimensions must be strictly increasing, got {dims}")
        if instruction.operands[0].element_type != instruction.element_type:
            raise ValueError("Broadcast cannot change the element type")
        view = [1] * len(sizes)
        for operand_dim, out_dim in enumerate(dims):
            if not 0 <= out_dim < len(sizes):
                raise ValueError(f"Broadcast dimension {out_dim} is out of range for sizes {sizes}")
            if arg.shape[operand_dim] not in (1, sizes[out_dim]):
                raise ValueError(f"Broadcast operand dimension {operand_dim} (size {arg.shape[operand_dim]}) "
                                 f"does not fit output dimension {out_dim} (size {sizes[out_dim]})")
            view[out_dim] = arg.shape[operand_dim]
        return arg.reshape(view).expand(sizes).contiguous()
    if opcode == "Compare":
        direction = attrs["comparison_direction"]
        if direction not in _COMPARISONS:
            raise ValueError(f"unknown comparison_direction {direction!r}")
        if instruction.element_type != "pred":
            raise ValueError("Compare produces pred")
        lhs_type = instruction.operands[0].element_type
        _same_as_result(instruction, args, [lhs_type, lhs_type])
        return _COMPARISONS[direction](args[0], args[1])
    if opcode == "Convert":
        (arg,) = args
        _same_as_result(instruction, args, [instruction.operands[0].element_type])
        return arg.to(dtype)
    if opcode == "Select":
        _same_as_result(instruction, args, ["pred", instruction.element_type, instruction.element_type])
        return torch.where(args[0], args[1], args[2])
    if opcode in ("And", "Or", "Not"):
        if dtype.is_floating_point or dtype.is_complex:
            raise ValueError(f"{opcode} needs pred or integer operands, not {instruction.element_type}")
        _same_as_result(instruction, args, [instruction.element_type] * len(args))
        if opcode == "Not":
            return torch.bitwise_not(args[0])
        return (torch.bitwise_and if opcode == "And" else torch.bitwise_or)(args[0], args[1])
    if opcode in ("Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum"):
        _same_as_result(instruction, args, [instruction.element_type] * 2)
        lhs, rhs = args
        if opcode == "Add":
            return lhs + rhs
        if opcode == "Subtract":
            return lhs - rhs
        if opcode == "Multiply":
            return lhs * rhs
        if opcode == "Divide":
            if dtype.is_floating_point or dtype.is_complex:
                return lhs / rhs
            return torch.div(lhs, rhs, rounding_mode="trunc")
        return torch.maximum(lhs, rhs) if opcode == "Maximum" else torch.minimum(lhs, rhs)
    raise NotImplementedError(f"the HloScribe stand-in cannot evaluate {opcode}")
