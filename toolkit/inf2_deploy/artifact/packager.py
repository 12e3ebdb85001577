"""Package a checkpoint into the folder the container sees at /opt/ml/model.

The artifact folder holds::

    model.safetensors | model-0000N-of-0000M.safetensors + model.safetensors.index.json
    config.json                 torch_dtype set to the plan's dtype
    generation_config.json      when the source has one
    vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
    serving.properties          rendered from the plan
    model.py                    DJL's entry point, from the installed inf2_serving
    inf2_serving/               the serving package model.py imports
    manifest.json               sizes, sha256 and S3 ETags of all of the above

The folder is built in a temporary sibling and moved into place at the end, so
a failure never leaves a half-written artifact. Only what the container reads
decides the artifact: the source, the conversion settings, serving.properties
and the serving code. Deployment settings (instance type and count, price,
endpoint timeouts, tags) are not in it, so changing them rebuilds nothing. An
artifact whose weights came from the same checkpoint and conversion keeps them
when only the small files change (a new tp or batch size rewrites
serving.properties, not 12 GB of shards): they are hard-linked into the new
folder, not converted again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from inf2_serving.contract import ENTRY_POINT

from ..atomic import atomic_dir
from ..errors import ConfigError, ModelSourceError
from ..spec.catalog import ModelFacts, gptj_tensor_shapes
from ..spec.deployment_spec import DeploymentSpec
from ..spec.planner import Plan, check_plan
from ..spec.validators import check_path
from ..version import __version__
from .convert import DEFAULT_MAX_SHARD_BYTES, SAFE_INDEX_NAME, TORCH_DTYPE_NAMES, convert_weights
from .image_cache import cached_image_resolver
from .manifest import (
    MANIFEST_NAME,
    UPLOAD_PART_SIZE,
    Artifact,
    ArtifactFile,
    FileDigest,
    write_manifest,
)
from .properties import render_properties
from .sources import Checkpoint, ProgressCallback, default_cache_dir, resolve_checkpoint

__all__ = ["package", "PackageObserver", "build_key", "serving_code_files", "tokenizer_files"]

SERVING_ENTRY = ENTRY_POINT
SERVING_PACKAGE = "inf2_serving"
_EOS_TEXT = "<|endoftext|>"
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class PackageObserver(Protocol):
    """Learns the build key first, then each artifact file once it is complete."""

    def begin(self, build_key: str) -> None:
        """Called once, before any file is written (and also when the existing artifact is kept)."""

    def file_written(self, file: ArtifactFile, path: Path) -> None:
        """Called when ``file`` (a path relative to the artifact) is complete at ``path`` (in staging)."""

    def commit(self) -> None:
        """Called once every file and manifest.json are written, before the folder moves into place:
        the paths given to ``file_written`` stay valid until this returns."""


def build_key(inputs: dict[str, Any], serving: dict[str, str]) -> str:
    """sha256 hex of everything an artifact is built from: source, container settings, conversion,
    part size, tool version and serving code digests.

    The output is a pure function of these, so the key names the artifact before
    a byte of it exists (the fingerprint, a hash of the files, exists only after).
    """
    text = json.dumps({**inputs, "serving": serving}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def serving_code_files() -> dict[str, bytes]:
    """The serving code shipped in the artifact: ``model.py`` plus ``inf2_serving/*.py``.

    Raises:
        ModelSourceError: the installed inf2_serving package has no model.py.
    """
    import inf2_serving

    root = Path(inf2_serving.__file__).parent
    entry = root / SERVING_ENTRY
    if not entry.is_file():
        raise ModelSourceError(f"the installed {SERVING_PACKAGE} package at {root} has no {SERVING_ENTRY}",
                               field="model", value=str(root), hint="reinstall inf2-deploy")
    files = {SERVING_ENTRY: entry.read_bytes()}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts or relative == Path(SERVING_ENTRY):
            continue
        files[f"{SERVING_PACKAGE}/{relative.as_posix()}"] = path.read_bytes()
    return files


def _bpe_from_tokenizer_json(path: Path, source_id: str) -> dict[str, bytes]:
    """vocab.json, merges.txt (and added_tokens.json) from a byte-level BPE tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on parse errors
        raise ModelSourceError(f"cannot read tokenizer.json of {source_id}: {exc}", field="model",
                               value=source_id) from None
    if not isinstance(tokenizer.model, models.BPE) or not isinstance(tokenizer.pre_tokenizer,
                                                                     pre_tokenizers.ByteLevel):
        raise ModelSourceError(
            f"tokenizer.json of {source_id} is not a byte-level BPE (GPT-2) tokenizer, so it cannot be "
            "written as vocab.json + merges.txt", field="model", value=source_id,
            hint="add vocab.json and merges.txt to the checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.model.save(tmp)
        files = {name: (Path(tmp) / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    added = {token.content: index for index, token in tokenizer.get_added_tokens_decoder().items()
             if token.content not in vocab}
    if added:
        files["added_tokens.json"] = _json_bytes(added)
    return files


def tokenizer_files(checkpoint: Checkpoint) -> dict[str, bytes]:
    """The tokenizer in the form transformers 4.4x and 5.x both load: GPT2Tokenizer, no tokenizer.json.

    Raises:
        ModelSourceError: the checkpoint has no usable tokenizer.
    """
    source_id = checkpoint.source["id"]
    vocab, merges = checkpoint.optional_file("vocab.json"), checkpoint.optional_file("merges.txt")
    tokenizer_json = checkpoint.optional_file("tokenizer.json")
    if vocab and merges:
        files = {"vocab.json": vocab.read_bytes(), "merges.txt": merges.read_bytes()}
    elif tokenizer_json:
        files = _bpe_from_tokenizer_json(tokenizer_json, source_id)
    else:
        raise ModelSourceError(
            f"checkpoint {source_id} has no tokenizer: vocab.json and merges.txt (or tokenizer.json) are "
            f"missing from {checkpoint.directory}", field="model", value=source_id)
    added = checkpoint.optional_file("added_tokens.json")
    if added:
        files["added_tokens.json"] = added.read_bytes()

    config: dict[str, Any] = {}
    config_path = checkpoint.optional_file("tokenizer_config.json")
    if config_path:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelSourceError(f"cannot read tokenizer_config.json of {source_id}: {exc}", field="model",
                                   value=source_id) from None
    # transformers 5 writes "TokenizersBackend", which 4.x cannot load, and a
    # tokenizer_file would point at the tokenizer.json we deliberately leave out.
    config["tokenizer_class"] = "GPT2Tokenizer"
    config.pop("tokenizer_file", None)
    files["tokenizer_config.json"] = _json_bytes(config)

    special = checkpoint.optional_file("special_tokens_map.json")
    if special:
        files["special_tokens_map.json"] = special.read_bytes()
    else:
        derived = {key: config[key] for key in _SPECIAL_KEYS if isinstance(config.get(key), str)}
        files["special_tokens_map.json"] = _json_bytes(derived or {key: _EOS_TEXT for key in _SPECIAL_KEYS[:3]})
    return files


def _model_config(checkpoint: Checkpoint, dtype: str) -> bytes:
    config = dict(checkpoint.config)
    config["torch_dtype"] = TORCH_DTYPE_NAMES[dtype]
    if "dtype" in config:  # transformers 5 saves the same setting under this name
        config["dtype"] = TORCH_DTYPE_NAMES[dtype]
    return _json_bytes(config)


def _small_files(checkpoint: Checkpoint, plan: Plan) -> dict[str, bytes]:
    files = {"config.json": _model_config(checkpoint, plan.spec.dtype)}
    generation = checkpoint.optional_file("generation_config.json")
    if generation:
        files["generation_config.json"] = generation.read_bytes()
    files.update(tokenizer_files(checkpoint))
    files["serving.properties"] = render_properties(plan.serving_properties).encode("utf-8")
    files.update(serving_code_files())
    return files


def _write_small(folder: Path, files: dict[str, bytes], part_size: int,
                 observer: PackageObserver | None) -> list[ArtifactFile]:
    written = []
    for relative, data in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(FileDigest.of_bytes(data, part_size).result(relative))
        if observer is not None:
            observer.file_written(written[-1], path)
    return written


def _digests(files: dict[str, bytes], part_size: int) -> dict[str, str]:
    return {relative: FileDigest.of_bytes(data, part_size).sha256 for relative, data in files.items()}


def _existing_artifact(output: Path) -> Artifact | None:
    """The artifact at ``output``, None when there is none yet.

    Raises:
        ConfigError: ``output`` is a file, or a non-empty folder that is not an artifact.
    """
    if not output.exists():
        return None
    if not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a folder", field="output", value=str(output))
    if not (output / MANIFEST_NAME).exists():
        if any(output.iterdir()):
            raise ConfigError(f"output {output} is a non-empty folder without {MANIFEST_NAME}; "
                              "refusing to replace it", field="output", value=str(output),
                              hint="choose a new or empty folder")
        return None
    try:
        return Artifact.load(output)
    except ModelSourceError:
        return None  # a broken artifact of ours: rebuild it


def _unchanged(artifact: Artifact, expected: dict[str, Any], serving: dict[str, str]) -> bool:
    """Whether ``artifact`` was built from the same inputs and its files are intact (by size)."""
    recorded = {"source": artifact.source, "plan": artifact.plan, "conversion": artifact.conversion,
                "part_size": artifact.part_size, "tool_version": artifact.tool_version}
    if recorded != expected:
        return False
    by_path = {f.path: f for f in artifact.files}
    if any(by_path.get(path) is None or by_path[path].sha256 != sha for path, sha in serving.items()):
        return False
    present = {p.relative_to(artifact.directory).as_posix() for p in artifact.directory.rglob("*") if p.is_file()}
    if present != set(by_path) | {MANIFEST_NAME}:
        return False
    return all((artifact.directory / f.path).stat().st_size == f.size for f in artifact.files)


def _check_writable(target: Path) -> None:
    """Fail now, naming ``output``, if the artifact's folder cannot be created: not after converting.

    A real write is tried: ``os.access`` says yes to root even where the filesystem says no.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent))
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror or exc}", field="output",
                          value=str(target)) from None


def _checked_plan(spec_or_plan: DeploymentSpec | Plan, cache: Path) -> Plan:
    """The plan to package; raises PlanError when it has errors."""
    if isinstance(spec_or_plan, DeploymentSpec):
        return check_plan(spec_or_plan, image_resolver=cached_image_resolver(cache))
    return spec_or_plan.raise_for_errors()


def _build_inputs(checkpoint: Checkpoint, plan: Plan, max_shard_bytes: int) -> dict[str, Any]:
    """Everything but the serving code an artifact is built from, as its manifest records it.

    Of the plan only serving.properties counts: it is the one file the plan writes besides
    config.json's dtype (part of ``conversion``). The rest of the plan (instance, count,
    price, alternatives) belongs to the endpoint and must not make a new artifact.
    """
    conversion = {"dtype": plan.spec.dtype, "max_shard_bytes": max_shard_bytes}
    settings = {"serving_properties": plan.serving_properties}
    # A JSON round trip makes it comparable with what Artifact.load reads back.
    return json.loads(json.dumps({"source": checkpoint.source, "plan": settings, "conversion": conversion,
                                  "part_size": UPLOAD_PART_SIZE, "tool_version": __version__}))


def _is_weight_file(path: str) -> bool:
    return path.endswith(".safetensors") or path == SAFE_INDEX_NAME


def _reusable_weights(existing: Artifact, inputs: dict[str, Any]) -> list[ArtifactFile]:
    """``existing``'s weight files when the converter would write the same ones: same checkpoint,
    conversion, part size and tool version, every weight file present at its recorded size; else none."""
    same = (existing.source, existing.conversion, existing.part_size, existing.tool_version) == (
        inputs["source"], inputs["conversion"], inputs["part_size"], inputs["tool_version"])
    weights = [f for f in existing.files if _is_weight_file(f.path)]
    intact = all((existing.directory / f.path).is_file()
                 and (existing.directory / f.path).stat().st_size == f.size for f in weights)
    return weights if same and intact else []


def _link_weights(source: Path, staging: Path, weights: list[ArtifactFile],
                  observer: PackageObserver | None) -> list[ArtifactFile]:
    """Hard-link the reused weight files into ``staging`` (a sibling, so the same filesystem)."""
    for item in weights:
        target = staging / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / item.path, target)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source / item.path, target)
        if observer is not None:
            observer.file_written(item, target)
    return weights


def _build(staging: Path, checkpoint: Checkpoint, plan: Plan, inputs: dict[str, Any], *,
           progress: ProgressCallback | None, observer: PackageObserver | None,
           reuse: Artifact | None = None) -> None:
    """Write every file of the artifact, and its manifest.json recording ``inputs``, into ``staging``;
    the weights are linked from ``reuse`` when it has the same ones (see ``_reusable_weights``)."""
    conversion = inputs["conversion"]
    # The small files first, so that an observer can upload them while the weights convert.
    files = _write_small(staging, _small_files(checkpoint, plan), UPLOAD_PART_SIZE, observer)
    if reuse is not None and (weights := _reusable_weights(reuse, inputs)):
        files += _link_weights(reuse.directory, staging, weights, observer)
    else:
        files += convert_weights(checkpoint, staging, dtype=plan.spec.dtype,
                                 expected_shapes=gptj_tensor_shapes(checkpoint.config),
                                 max_shard_bytes=conversion["max_shard_bytes"], part_size=UPLOAD_PART_SIZE,
                                 progress=progress, on_file=observer.file_written if observer else None)
    write_manifest(staging, files=files, plan=inputs["plan"], source=inputs["source"],
                   part_size=inputs["part_size"], conversion=conversion)
    staging.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
    if observer is not None:
        observer.commit()


def package(
    spec_or_plan: DeploymentSpec | Plan,
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    observer: PackageObserver | None = None,
) -> Artifact:
    """Build the artifact folder for a deployment.

    Args:
        spec_or_plan: the deployment; a spec is planned first and must pass.
        output: the artifact folder to create or update.
        force: rebuild even when the existing artifact is up to date.
        progress: ``(done_bytes, total_bytes, label)`` callback; labels are
            ``download`` (Hub sources) and ``weights``.
        cache_dir: where ``tiny-gptj`` is built and image lookups are remembered;
            default ``~/.cache/inf2-deploy``.
        max_shard_bytes: data bytes per safetensors shard.
        observer: learns the build key, then sees each file as it is written
            (``pipeline`` uploads them meanwhile); nothing is written when the
            existing artifact is kept.

    Returns:
        The artifact, as recorded in its manifest.json.

    Raises:
        PlanError: the plan has errors (the same ones ``inf2-deploy plan`` shows).
        ConfigError: ``output`` is an unrelated non-empty folder, or a setting is invalid.
        ModelSourceError: the checkpoint is missing, incomplete, corrupt or does not
            match its config.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    plan = _checked_plan(spec_or_plan, cache)
    if max_shard_bytes <= 0:
        raise ConfigError(f"max_shard_bytes must be positive, got {max_shard_bytes}", field="max_shard_bytes",
                          value=max_shard_bytes)
    target = check_path(output, "output").absolute()
    existing = _existing_artifact(target)
    _check_writable(target)
    checkpoint = resolve_checkpoint(plan.spec.model, cache_dir=cache, progress=progress)
    # The checkpoint's own config decides the tensor shapes (the plan may have used a built-in copy).
    ModelFacts.from_config(checkpoint.config, source=checkpoint.source["id"])
    inputs = _build_inputs(checkpoint, plan, max_shard_bytes)
    serving_digests = _digests(serving_code_files(), UPLOAD_PART_SIZE)
    if observer is not None:
        observer.begin(build_key(inputs, serving_digests))
    if existing is not None and not force and _unchanged(existing, inputs, serving_digests):
        return existing
    with atomic_dir(target) as staging:
        _build(staging, checkpoint, plan, inputs, progress=progress, observer=observer,
               reuse=None if force else existing)
    return Artifact.load(target)
