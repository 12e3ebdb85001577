"""``verify``: proof that a deployed endpoint computes what its model computes.

A fixed set of greedy prompts (short, long, non-ASCII) goes to the endpoint, which
streams back its token ids. The same artifact, the local folder or the one read back
from the endpoint's S3 model data, is loaded on the CPU with transformers (the
reference), and every token the endpoint chose is scored against the reference's
logits after the endpoint's own prefix (teacher forcing: one forward pass per prompt).
A token agrees when it is the reference's top choice, or when its logit is within
``margin`` x the row's largest |logit| of the top one: fp16/bf16 rounding on the
device may swap near-ties, and nothing else may. The endpoint streams its EOS token
too, so stopping early is scored like any other choice.

The reference needs torch and transformers (the ``serve`` extra) and host RAM for the
weights in ``reference_dtype``: 12.1 GB in bf16 or 24.2 GB in fp32 for GPT-J-6B
(``inf2-deploy plan`` shows it).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inf2_serving.contract import DTYPES

from ..errors import ConfigError, InvocationError, ModelSourceError
from ..spec.floors import REFERENCE_DTYPE_BYTES
from ..spec.validators import check_path

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_TOKENS",
    "PromptVerdict",
    "ReferenceModel",
    "VerifyReport",
    "verification_prompts",
    "verify",
]

DEFAULT_TOKENS = 16
DEFAULT_MARGIN = 0.02
_SHORT = "The capital of France is"
_NON_ASCII = "Le café de la gare coûte 3 € — 東京の天気は"
_LONG_SENTENCE = ("The committee met on a rainy Tuesday to review the harbour plans, the budget for the new "
                  "bridge and the schedule for repairing the old lighthouse. ")
_LONG_TOKENS = 160

#: ``(stage, done, total)``: stage is ``download``, ``load`` or a prompt's label.
VerifyProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PromptVerdict:
    """How one prompt's greedy tokens from the endpoint compare with the reference."""

    label: str
    prompt_tokens: int
    endpoint_ids: tuple[int, ...]
    compared: int
    exact: int
    near_ties: int
    first_divergence: int | None
    endpoint_text: str
    reference_choice: str | None

    @property
    def agrees(self) -> bool:
        """Every compared token agreed (exactly or as a near-tie)."""
        return self.first_divergence is None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "prompt_tokens": self.prompt_tokens, "endpoint_ids": list(self.endpoint_ids),
                "compared": self.compared,
                "exact": self.exact, "near_ties": self.near_ties, "first_divergence": self.first_divergence,
                "agrees": self.agrees, "endpoint_text": self.endpoint_text,
                "reference_choice": self.reference_choice}


@dataclass(frozen=True)
class VerifyReport:
    """The verdict over every prompt."""

    target: str
    artifact: str
    reference_dtype: str
    tokens: int
    margin: float
    prompts: tuple[PromptVerdict, ...]

    @property
    def ok(self) -> bool:
        """Every prompt agreed over its first ``tokens`` tokens."""
        return all(p.agrees for p in self.prompts)

    @property
    def agreement(self) -> float:
        """Agreeing tokens over compared tokens, all prompts together."""
        compared = sum(p.compared for p in self.prompts)
        agreed = sum(p.exact + p.near_ties for p in self.prompts)
        return agreed / compared if compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "artifact": self.artifact, "reference_dtype": self.reference_dtype,
                "tokens": self.tokens, "margin": self.margin, "ok": self.ok,
                "agreement": round(self.agreement, 4), "prompts": [p.to_dict() for p in self.prompts]}


class ReferenceModel:
    """transformers' model on the artifact's own weights and tokenizer, on the CPU."""

    def __init__(self, folder: str | os.PathLike[str], *, dtype: str = "fp32") -> None:
        """Load the reference.

        Raises:
            ConfigError: ``dtype`` is not bf16 or fp32, or torch/transformers are missing.
            ModelSourceError: the folder holds no loadable model.
        """
        if dtype not in REFERENCE_DTYPE_BYTES:
            raise ConfigError(f"reference dtype must be one of {', '.join(REFERENCE_DTYPE_BYTES)}",
                              field="reference_dtype", value=dtype)
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ConfigError("verify computes a reference on the CPU and needs torch and transformers",
                              field="reference_dtype", value=dtype,
                              hint='pip install "inf2-deploy[serve]" (and the CPU build of torch)') from None
        transformers.utils.logging.disable_progress_bar()  # our caller draws progress, not transformers
        # transformers 5 renamed from_pretrained's torch_dtype to dtype.
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        weights_dtype = {dtype_key: getattr(torch, DTYPES[dtype].torch_name)}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, **weights_dtype).eval()
        except (OSError, ValueError) as exc:
            raise ModelSourceError(f"cannot load the reference model from {folder}: {exc}", field="artifact",
                                   value=str(folder), hint="pass --artifact with the packaged folder") from None

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as the serving handler makes them."""
        return list(self.tokenizer(text)["input_ids"])

    def next_token_logits(self, prompt_ids: list[int], continuation: list[int]) -> Any:
        """Float32 logits ``[len(continuation) + 1, vocab]``: after the prompt, then after each continuation token."""
        import torch

        ids = torch.tensor([prompt_ids + continuation])
        with torch.no_grad():
            logits = self.model(ids).logits[0].float()
        return logits[len(prompt_ids) - 1:]


def verification_prompts(tokenizer: Any, room: int) -> list[tuple[str, str]]:
    """``(label, text)`` for the short, long and non-ASCII prompts; the long one fits in ``room`` tokens."""
    long_text, sentences = "", 0
    while True:
        candidate = _LONG_SENTENCE * (sentences + 1)
        if len(tokenizer(candidate)["input_ids"]) > min(_LONG_TOKENS, room):
            break
        long_text, sentences = candidate, sentences + 1
    prompts = [("short", _SHORT), ("non-ascii", _NON_ASCII)]
    if long_text:
        prompts.insert(1, (f"long ({sentences} sentences)", long_text.strip()))
    return prompts


def _score(label: str, reference: ReferenceModel, prompt_ids: list[int], endpoint_ids: list[int],
           tokens: int, margin: float) -> PromptVerdict:
    # The endpoint streams its EOS token too, so an early stop is scored like any other choice.
    expected = endpoint_ids[:tokens]
    vocab = reference.model.config.vocab_size
    outside = next((i for i, token in enumerate(expected) if not 0 <= token < vocab), None)
    if outside is not None:  # nothing after an id the model does not have can be scored
        expected = expected[:outside + 1]
    logits = reference.next_token_logits(prompt_ids, expected[:-1])
    exact = ties = 0
    divergence = choice = None
    for position, token in enumerate(expected):
        row = logits[position]
        top = int(row.argmax())
        if position == outside:  # an id outside the model's vocabulary agrees with nothing
            divergence, choice = position, reference.tokenizer.decode([top])
            break
        if token == top:
            exact += 1
            continue
        scale = max(1.0, float(row.abs().max()))
        if float(row[top] - row[token]) <= margin * scale:
            ties += 1
            continue
        divergence, choice = position, reference.tokenizer.decode([top])
        break
    return PromptVerdict(label=label, prompt_tokens=len(prompt_ids), endpoint_ids=tuple(endpoint_ids),
                         compared=len(expected), exact=exact, near_ties=ties, first_divergence=divergence,
                         endpoint_text=reference.tokenizer.decode(endpoint_ids, skip_special_tokens=True),
                         reference_choice=choice)


def _endpoint_ids(predictor: Any, text: str, tokens: int) -> list[int]:
    ids = []
    for line in predictor.stream_events(text, max_new_tokens=tokens, do_sample=False):
        token = line.get("token")
        if isinstance(token, dict) and isinstance(token.get("id"), int):
            ids.append(token["id"])
    if not ids:
        raise InvocationError("the endpoint streamed no tokens for a verification prompt",
                              hint="check it with inf2-deploy invoke NAME --stream")
    return ids


def _n_positions(folder: Path) -> int | None:
    from ..artifact.djl_properties import parse_properties

    path = folder / "serving.properties"
    if not path.is_file():
        return None
    value = parse_properties(path.read_text(encoding="utf-8")).get("option.n_positions")
    return int(value) if value and value.isdigit() else None


def _local_artifact(source: str, region: str | None, on_progress: VerifyProgress | None) -> Path:
    """A local folder for ``source``: the folder itself, or a copy of an s3:// prefix in the cache."""
    if not source.startswith("s3://"):
        folder = check_path(source, "artifact")
        if not folder.is_dir():
            raise ModelSourceError(f"artifact folder {source} does not exist", field="artifact", value=source)
        return folder
    from ..aws.s3 import download_prefix, split_s3_uri
    from ..aws.session import make_session
    from ..local.paths import artifact_cache_dir

    bucket, key = split_s3_uri(source)
    if key.endswith(".tar.gz"):
        raise ModelSourceError(f"{source} is a compressed archive; verify reads an uncompressed S3 prefix",
                               field="artifact", value=source, hint="pass --artifact with a local folder")
    folder = artifact_cache_dir() / "verify" / bucket / key.strip("/")
    progress = None if on_progress is None else (lambda done, total, _key: on_progress("download", done, total))
    download_prefix(make_session(region).client("s3"), bucket, key, folder, on_progress=progress)
    return folder


def verify(
    target: str | Any,
    *,
    artifact: str | os.PathLike[str] | None = None,
    region: str | None = None,
    reference_dtype: str = "fp32",
    tokens: int = DEFAULT_TOKENS,
    margin: float = DEFAULT_MARGIN,
    on_progress: VerifyProgress | None = None,
) -> VerifyReport:
    """Compare ``target``'s greedy tokens with the CPU reference on the same artifact.

    Args:
        target: an ``http(s)://`` URL, a local deployment name, a SageMaker endpoint name,
            or a predictor object (then ``artifact`` is required).
        artifact: the artifact folder or s3:// prefix; default the deployment's own
            (a local deployment's folder, or the endpoint's model data on S3).
        region: the AWS region of a SageMaker endpoint.
        reference_dtype: ``fp32`` (default) or ``bf16`` for the CPU reference.
        tokens: how many greedy tokens per prompt must agree.
        margin: near-tie allowance, a fraction of the row's largest |logit|.
        on_progress: told of the download, the load and each prompt.

    Raises:
        ConfigError: bad arguments, or no artifact known for a URL.
        ModelSourceError: the artifact cannot be read or loaded.
        InvocationError: the endpoint answered with an error.
        AwsError: describing the endpoint or reading S3 failed.
    """
    from .targets import resolve

    if tokens < 1:
        raise ConfigError("must be at least 1", field="tokens", value=tokens)
    if not 0 <= margin < 1:
        raise ConfigError("must be at least 0 and below 1", field="margin", value=margin)
    resolved = resolve(target, region=region) if isinstance(target, str) else None
    predictor = resolved.predictor() if resolved is not None else target
    if artifact is not None:
        source = os.fspath(artifact)
    else:
        source = resolved.describe().artifact if resolved is not None else None
    if source is None:
        raise ConfigError("no artifact is known for this target", field="artifact", value=target,
                          hint="pass --artifact with the folder the server was started from")
    folder = _local_artifact(source, region, on_progress)
    if on_progress is not None:
        on_progress("load", 0, 1)
    reference = ReferenceModel(folder, dtype=reference_dtype)
    n_positions = _n_positions(folder) or reference.model.config.n_positions
    prompts = verification_prompts(reference.tokenizer, n_positions - tokens - 1)
    verdicts = []
    for index, (label, text) in enumerate(prompts):
        if on_progress is not None:
            on_progress(label, index, len(prompts))
        endpoint_ids = _endpoint_ids(predictor, text, tokens)
        verdicts.append(_score(label, reference, reference.prompt_ids(text), endpoint_ids, tokens, margin))
    return VerifyReport(target=target, artifact=source, reference_dtype=reference_dtype, tokens=tokens,
                        margin=margin, prompts=tuple(verdicts))
