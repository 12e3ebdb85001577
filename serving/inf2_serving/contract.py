"""What the laptop and the container must agree on, written once.

The client renders ``serving.properties`` and validates requests from these
tables, and the handler in the container parses and validates from the same
ones, so a value one side accepts is never refused by the other:

- names: :data:`ENDPOINT_NAME`, :data:`VARIANT_NAME`, :data:`MODEL_DIR`;
- the weight types (:data:`DTYPES`) and the serving backends (:data:`BACKENDS`);
- every ``serving.properties`` key, its reader, type and default (:data:`PROPERTIES`);
- every generation parameter of a request and the values the server accepts
  (:data:`PARAMETERS`, :func:`validate_parameters`).

Standard library only, and Python 3.9: this module ships in every artifact and
runs in the LMI container as well as on the laptop.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    # names
    "ENDPOINT_NAME", "ENDPOINT_NAME_RULE", "MODEL_DIR", "VARIANT_NAME",
    # dtypes and backends
    "BACKENDS", "DTYPES", "DTYPE_NAMES", "Dtype",
    # serving.properties
    "DEFAULT_MAX_BATCH_DELAY_MS", "ENGINE", "ENTRY_POINT", "HANDLER_PROPERTIES", "OPTION_PREFIX", "PROPERTIES",
    "PROPERTY_BY_FIELD", "ROLLING_BATCH_OFF", "ROLLING_BATCH_ON", "DEFAULT_REPLAY_INTERVAL_MS",
    "DJL_MAX_ROLLING_BATCH_SIZE", "Property",
    "format_value", "rolling_batch_enabled",
    # request parameters
    "DEFAULT_MAX_NEW_TOKENS", "InvalidParameters", "MAX_STOP_SEQUENCES", "PARAMETERS", "PARAMETER_BY_NAME",
    "PARAMETER_NAMES", "Parameter", "ParameterProblem", "REPETITION_PENALTY_RANGE", "lone_surrogate_at",
    "text_problem", "validate_parameters",
]

# --- names ------------------------------------------------------------------------------------------------

ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
"""SageMaker's name rule for endpoints, endpoint configs and models; local deployment names follow it too."""
ENDPOINT_NAME_RULE = "must be 1-63 letters, digits or hyphens, starting with a letter or digit"
VARIANT_NAME = "AllTraffic"
"""The one production variant of every endpoint (the name SageMaker's runtime reports back)."""
MODEL_DIR = "/opt/ml/model"
"""Where SageMaker puts the artifact in the container; mounted read-only."""

# --- dtypes and backends ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dtype:
    """One weight and compute type, with the name each library gives it."""

    name: str
    """Ours, the spec's and LMI's ``option.dtype`` value."""
    itemsize: int
    """Bytes per element."""
    torch_name: str
    """The ``torch`` attribute, also written as ``torch_dtype`` in config.json."""
    neuron_amp: str
    """transformers-neuronx's ``amp`` argument."""
    safetensors_code: str
    """The dtype code in a safetensors header."""


DTYPES: dict[str, Dtype] = {dtype.name: dtype for dtype in (
    Dtype("fp16", 2, "float16", "f16", "F16"),
    Dtype("bf16", 2, "bfloat16", "bf16", "BF16"),
    Dtype("fp32", 4, "float32", "f32", "F32"),
)}
DTYPE_NAMES: tuple[str, ...] = tuple(DTYPES)
BACKENDS = ("auto", "cpu", "neuron")
"""How the handler runs the model: ``auto`` picks neuron when /dev/neuron0 exists and
transformers-neuronx imports, else cpu."""

# --- serving.properties -----------------------------------------------------------------------------------

OPTION_PREFIX = "option."
"""DJL strips this prefix before the handler sees a key."""
ENGINE = "Python"
ENTRY_POINT = "model.py"
"""The handler file at the artifact root."""
ROLLING_BATCH_OFF = "disable"
"""``option.rolling_batch`` value for static batches. DJL's Java front end runs its
rolling-batch loop for any other value (``PyPredictor``: set and not ``disable``)."""
ROLLING_BATCH_ON = "auto"
"""What the packager writes to turn the rolling batch on. LMI's config recommender
may show it as ``tnx`` on the neuronx image; our handler reads any value but
``disable`` as on, as DJL's Java side does."""
DJL_MAX_ROLLING_BATCH_SIZE = 32
"""DJL's default ``max_rolling_batch_size``: requests its rolling-batch loop keeps in flight."""
DEFAULT_REPLAY_INTERVAL_MS = 1000
"""Neuron rolling batch: decoding time between two admissions that replay running rows."""


def rolling_batch_enabled(value: str | None) -> bool:
    """Whether DJL runs its rolling-batch loop for this ``option.rolling_batch`` value."""
    return value is not None and value != "" and value != ROLLING_BATCH_OFF
DEFAULT_MAX_BATCH_DELAY_MS = 100
"""How long DJL waits to fill a dynamic batch (DJL's default, and that of its examples)."""


def format_value(value: object) -> str:
    """The ``serving.properties`` text for ``value``: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Property:
    """One ``serving.properties`` key: who reads it, its type, and its default when absent or empty."""

    key: str
    """As written in serving.properties."""
    field: str
    """Our name for the value: the spec field and the :class:`~inf2_serving.config.ServingConfig`
    attribute of that name carry it."""
    kind: str
    """``text``, ``int`` (a whole number >= 1), ``bool`` or ``choice`` (one of :attr:`choices`)."""
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    handler: bool = False
    """Read by our handler (into ServingConfig); else by DJL itself."""
    shown_default: str | None = None
    """How the reference shows the default when the value alone would mislead."""
    packaged: str = "not written"
    """What the packager writes, for the reference."""

    @property
    def handler_key(self) -> str:
        """The name the handler sees the key by."""
        return self.key[len(OPTION_PREFIX):] if self.key.startswith(OPTION_PREFIX) else self.key

    def parse(self, raw: str | None) -> Any:
        """The value of ``raw``; absent or empty text is the default.

        Raises:
            ValueError: the text is not a value of this kind; the message says what is expected.
        """
        if raw is None or raw == "":
            return self.default
        if self.kind == "int":
            try:
                value = int(raw)
            except ValueError:
                raise ValueError("expected a whole number") from None
            if value < 1:
                raise ValueError("must be at least 1")
            return value
        if self.kind == "bool":
            text = raw.strip().lower()
            if text not in ("true", "false"):
                raise ValueError("expected true or false")
            return text == "true"
        if self.kind == "choice":
            if raw.lower() not in self.choices:
                raise ValueError("use one of " + ", ".join(self.choices))
            return raw.lower()
        return raw


_CACHE_DEFAULT = "env NEURON_COMPILE_CACHE_URL, else /var/tmp/neuron-compile-cache"

PROPERTIES: tuple[Property, ...] = (
    Property("engine", "engine", "text", None, "DJL engine that runs model.py.",
             shown_default="DJL's", packaged=ENGINE),
    Property("option.entryPoint", "entry_point", "text", None, "The handler file at the artifact root.",
             shown_default="DJL's", packaged=ENTRY_POINT),
    Property("option.rolling_batch", "rolling_batch", "text", None,
             "Any value but disable: DJL's rolling-batch loop calls the handler once per generation step and "
             "our slot scheduler admits requests at every step. disable: DJL's dynamic batching (batch_size, "
             "max_batch_delay) and static batches.", handler=True,
             shown_default="unset: static batches", packaged=f"the spec's ({ROLLING_BATCH_ON} unless set)"),
    Property("option.max_rolling_batch_size", "max_rolling_batch_size", "int", None,
             "Requests DJL's rolling-batch loop keeps in flight: those beyond batch_size wait for a slot in "
             "our scheduler's queue; more wait in DJL's, which fails them after the predict timeout.",
             shown_default=f"DJL's ({DJL_MAX_ROLLING_BATCH_SIZE})",
             packaged=f"max(batch_size, {DJL_MAX_ROLLING_BATCH_SIZE}), with the rolling batch"),
    Property("option.replay_interval_ms", "replay_interval_ms", "int", DEFAULT_REPLAY_INTERVAL_MS,
             "Neuron rolling batch: milliseconds of decoding between two admissions that replay the running "
             "rows' contexts (at most 1000/this replays per second of decoding).", handler=True),
    Property("option.tensor_parallel_degree", "tensor_parallel_degree", "int", 1,
             "NeuronCores the model is sharded over (tp).", handler=True, packaged="the plan's"),
    Property("option.n_positions", "n_positions", "int", None, "Longest sequence the compiled graphs accept.",
             handler=True, shown_default="the model's n_positions", packaged="the plan's"),
    Property("option.batch_size", "batch_size", "int", 1, "Compiled batch size; partial batches are padded.",
             handler=True, packaged="the spec's"),
    Property("option.dtype", "dtype", "choice", "fp32",
             "fp32, fp16 or bf16; transformers-neuronx amp f32/f16/bf16. The default is LMI's.",
             choices=DTYPE_NAMES, handler=True, packaged="the spec's (fp16 unless set)"),
    Property("option.model_loading_timeout", "model_loading_timeout", "int", None,
             "Seconds DJL waits for load plus Neuron compilation.", shown_default="DJL's",
             packaged="the spec's (3600 unless set)"),
    Property("option.model_id", "model_id", "text", None,
             "Weights location when they are not in the artifact folder.", handler=True,
             shown_default="unset: the artifact folder", packaged="when the weights are elsewhere"),
    Property("option.neuron_cc_flags", "neuron_cc_flags", "text", None,
             "Extra neuronx-cc flags, merged into NEURON_CC_FLAGS (ours win where both set an option).",
             handler=True, shown_default="unset", packaged="the spec's, when set"),
    Property("option.compiled_cache_url", "compile_cache_url", "text", None,
             "Neuron persistent compile cache (local path or s3:// URL). A --cache_dir in NEURON_CC_FLAGS takes "
             "precedence; a read-only local cache is copied to /var/tmp/neuron-compile-cache. Deploys pass the "
             "spec's compile_cache_url as NEURON_COMPILE_CACHE_URL instead.",
             handler=True, shown_default=_CACHE_DEFAULT),
    Property("option.correct_decode_mask", "correct_decode_mask", "bool", True,
             "Build GPT-J's Neuron graph with a causal decode mask; transformers-neuronx 0.11.351's own attends "
             "to position 0 only. false is for diagnosis.", handler=True),
    Property("option.startup_self_check", "startup_self_check", "bool", True,
             "Refuse to serve (FAILED, so /ping fails) when next-token logits are not finite or ignore the "
             "prompt's context. false serves anyway, for diagnosis with `inf2-deploy verify`.", handler=True),
    Property("option.backend", "backend", "choice", "auto",
             "neuron, cpu or auto (neuron when /dev/neuron0 exists and transformers-neuronx imports).",
             choices=BACKENDS, handler=True),
    Property("batch_size", "dynamic_batch_size", "int", 1,
             "DJL dynamic batching: requests gathered into one handler call.",
             packaged="the spec's, when > 1 with rolling_batch disable"),
    Property("max_batch_delay", "max_batch_delay_ms", "int", DEFAULT_MAX_BATCH_DELAY_MS,
             "Milliseconds DJL waits to fill a dynamic batch.",
             packaged="when batch_size > 1 with rolling_batch disable"),
)
PROPERTY_BY_FIELD: dict[str, Property] = {prop.field: prop for prop in PROPERTIES}
HANDLER_PROPERTIES: tuple[Property, ...] = tuple(prop for prop in PROPERTIES if prop.handler)

# --- request parameters -----------------------------------------------------------------------------------

DEFAULT_MAX_NEW_TOKENS = 30
MAX_STOP_SEQUENCES = 8
# Logits are divided or multiplied by the penalty in fp32: far outside this range they
# reach 0 or inf and sampling fails; inside it, 1 is off and 1.2 is the usual setting.
REPETITION_PENALTY_RANGE = (0.01, 100.0)


def lone_surrogate_at(text: str) -> int | None:
    """The index of the first lone UTF-16 surrogate in ``text``, or None when it is valid Unicode.

    JSON's ``\\ud800`` escapes and Python's ``surrogatepass`` decoding of bytes like
    ``ed a0 80`` both produce such characters; no tokenizer can encode them.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def text_problem(text: str) -> str | None:
    """Why no tokenizer can take ``text``, or None when it is valid Unicode."""
    index = lone_surrogate_at(text)
    if index is None:
        return None
    return f"has a lone UTF-16 surrogate (U+{ord(text[index]):04X}) at character {index}; send valid Unicode text"


@dataclass(frozen=True)
class ParameterProblem:
    """Why one generation parameter (or one item of it) is refused."""

    name: str
    value: Any
    message: str
    index: int | None = None
    """The item at fault, for a list parameter."""

    @property
    def field(self) -> str:
        """The parameter, or the item: ``stop[1]``."""
        return self.name if self.index is None else f"{self.name}[{self.index}]"


class InvalidParameters(ValueError):
    """Generation parameters the server refuses; :attr:`problems` names each field at fault."""

    def __init__(self, problems: list[ParameterProblem]) -> None:
        super().__init__("; ".join(f"parameters.{p.field} {p.message}" for p in problems))
        self.problems = tuple(problems)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (JSON has no NaN or Infinity; 1e400 decodes to inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


_KIND_TESTS = {"int": _is_int, "number": _is_number, "bool": lambda value: isinstance(value, bool)}
_KIND_NAMES = {"int": "a whole number", "number": "a number", "bool": "true or false"}


@dataclass(frozen=True)
class Parameter:
    """One LMI/TGI generation parameter and the values the server accepts."""

    name: str
    kind: str
    """``int``, ``number`` (finite), ``bool``, or ``strings`` (a string or a list of them)."""
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False
    """The minimum itself is refused."""
    max_items: int | None = None
    """For ``strings``: how many at most."""

    @property
    def expected(self) -> str:
        """What a value must be, e.g. ``a number from 0.01 to 100.0``."""
        if self.kind == "strings":
            return f"a non-empty string or a list of at most {self.max_items} of them"
        text = _KIND_NAMES[self.kind]
        low = self.minimum
        if low is not None and self.maximum is not None:
            return f"{text} in ({low}, {self.maximum}]" if self.above_minimum else \
                f"{text} from {low} to {self.maximum}"
        if low is not None:
            return f"{text} {'>' if self.above_minimum else '>='} {low}"
        return text

    def _in_range(self, value: Any) -> bool:
        low, high = self.minimum, self.maximum
        if low is not None and (value <= low if self.above_minimum else value < low):
            return False
        return high is None or value <= high

    def check(self, value: Any) -> list[ParameterProblem]:
        """Every problem with ``value`` (not None); empty when the server accepts it."""
        if self.kind == "strings":
            return self._check_strings(value)
        if not _KIND_TESTS[self.kind](value) or not self._in_range(value):
            return [ParameterProblem(self.name, value, f"must be {self.expected}, got {_shown(value)}")]
        return []

    def _check_strings(self, value: Any) -> list[ParameterProblem]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            return [ParameterProblem(self.name, value, f"must be {self.expected}, got {_shown(value)}")]
        if self.max_items is not None and len(items) > self.max_items:
            return [ParameterProblem(self.name, value, f"allows at most {self.max_items} strings, got {len(items)}")]
        problems = []
        for index, item in enumerate(items):
            problem = text_problem(item) if isinstance(item, str) and item else \
                f"must be a non-empty string, got {_shown(item)}"
            if problem is not None:
                problems.append(ParameterProblem(self.name, item, problem, index))
        return problems

    def normalize(self, value: Any) -> Any:
        """An accepted ``value`` as the server holds it: numbers as float, strings as a tuple."""
        if self.kind == "number":
            return float(value)
        if self.kind == "strings":
            return (value,) if isinstance(value, str) else tuple(value)
        return value


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("max_new_tokens", "int", DEFAULT_MAX_NEW_TOKENS, "Tokens to generate at most.", minimum=1),
    Parameter("temperature", "number", 1.0, "Divides the logits when sampling; below 1e-5 decodes greedily.",
              minimum=0),
    Parameter("top_k", "int", None, "Sample among the k likeliest tokens; 0 disables.", minimum=0),
    Parameter("top_p", "number", None, "Sample among the likeliest tokens whose probabilities sum to p.",
              minimum=0, maximum=1, above_minimum=True),
    Parameter("do_sample", "bool", False, "Sample; without it, decoding is greedy and temperature, top_k and "
              "top_p have no effect."),
    Parameter("repetition_penalty", "number", None, "Penalizes tokens already in the sequence; 1 is off.",
              minimum=REPETITION_PENALTY_RANGE[0], maximum=REPETITION_PENALTY_RANGE[1]),
    Parameter("stop", "strings", (), "Sequences that end generation; kept at the end of the text, as TGI does.",
              max_items=MAX_STOP_SEQUENCES),
    Parameter("seed", "int", None, "Seed of the sampler, for repeatable samples.", minimum=0, maximum=2**63 - 1),
    Parameter("return_full_text", "bool", False, "Prepend the prompt to generated_text."),
    Parameter("details", "bool", False, "Add finish_reason, token counts and the seed to the answer."),
)
PARAMETER_BY_NAME: dict[str, Parameter] = {parameter.name: parameter for parameter in PARAMETERS}
PARAMETER_NAMES: tuple[str, ...] = tuple(PARAMETER_BY_NAME)


def _unknown(name: str, value: Any) -> ParameterProblem:
    close = difflib.get_close_matches(str(name), PARAMETER_NAMES, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return ParameterProblem(name, value, f"is not a generation parameter{guess}; supported: "
                                         f"{', '.join(PARAMETER_NAMES)}")


def validate_parameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check generation parameters as the server does; those set to None are left out.

    Returns:
        The accepted parameters, normalized (:meth:`Parameter.normalize`).

    Raises:
        InvalidParameters: every problem found, unknown names first, each naming its field.
    """
    problems = [_unknown(name, raw[name]) for name in sorted(raw, key=str) if name not in PARAMETER_BY_NAME]
    values: dict[str, Any] = {}
    for parameter in PARAMETERS:
        value = raw.get(parameter.name)
        if value is None:
            continue
        found = parameter.check(value)
        problems.extend(found)
        if not found:
            values[parameter.name] = parameter.normalize(value)
    if problems:
        raise InvalidParameters(problems)
    return values
