"""Model references: what the ``model`` a user names is, and reading a checkpoint's JSON files.

A reference is the alias ``tiny-gptj`` (built offline), the alias ``gpt-j-6b``
(EleutherAI/gpt-j-6b on the Hugging Face Hub), an ``s3://`` prefix, a local
checkpoint folder, or a Hub id ``owner/name``. Planning reads only its
config.json and packaging reads the whole checkpoint; both parse the reference
here, so they agree on what it names. The slug of a reference names what is
derived from it: endpoints, local deployments, S3 prefixes, cache folders.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelSourceError

__all__ = ["HUB_ALIASES", "TINY_ALIAS", "ModelKind", "ModelRef", "model_slug", "read_model_json"]

TINY_ALIAS = "tiny-gptj"
HUB_ALIASES = {"gpt-j-6b": "EleutherAI/gpt-j-6b"}

ModelKind = Literal["tiny", "s3", "local", "hub"]


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference.

    Attributes:
        text: the reference as given; errors and the manifest name the model by it.
        kind: ``tiny``, ``s3``, ``local`` (a folder) or ``hub``.
        location: the alias (tiny), the s3:// URL, the folder with ``~`` expanded, or the Hub repo id.
    """

    text: str
    kind: ModelKind
    location: str

    @property
    def path(self) -> Path:
        """The folder of a ``local`` reference."""
        return Path(self.location)

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        """What ``model`` names; aliases win over a folder of the same name.

        Only the local filesystem is looked at: nothing is downloaded.

        Raises:
            ModelSourceError: the OS will not let us look at the path, or ``model`` is
                neither an alias, an s3:// URL, a folder nor a Hub id ``owner/name``.
        """
        if model == TINY_ALIAS:
            return cls(model, "tiny", model)
        if model in HUB_ALIASES:
            return cls(model, "hub", HUB_ALIASES[model])
        if model.startswith("s3://"):
            return cls(model, "s3", model)
        path = Path(model).expanduser()
        try:
            is_folder, exists = path.is_dir(), path.exists()
        except OSError as exc:  # e.g. no permission to look inside a parent folder
            raise ModelSourceError(f"cannot look at {model}: {exc.strerror or exc}", field="model",
                                   value=model) from None
        if is_folder:
            return cls(model, "local", str(path))
        if exists or model.startswith((".", "/", "~")) or model.count("/") != 1:
            raise ModelSourceError(f"{model!r} is neither a checkpoint folder nor a Hugging Face id (owner/name)",
                                   field="model", value=model)
        return cls(model, "hub", model)


def read_model_json(path: Path, source_id: str) -> Any:
    """Parse ``path``, a JSON file (config.json, a shard index) of the checkpoint ``source_id`` names.

    Raises:
        ModelSourceError: the file is missing, unreadable or not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelSourceError(f"{source_id} has no {path.name}", field="model", value=source_id) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"cannot read {path.name} of {source_id}: {exc}", field="model",
                               value=source_id) from None


def model_slug(model: str, *, max_length: int = 48) -> str:
    """A short S3- and name-safe slug of a model reference: its last path part, lower case.

    ``EleutherAI/gpt-j-6b`` gives ``gpt-j-6b``, ``/data/My_Model/`` gives ``my-model``;
    a reference with no letter or digit gives ``model``.
    """
    last = model.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-")[:max_length].strip("-") or "model"
