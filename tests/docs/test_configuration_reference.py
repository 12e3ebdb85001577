"""The configuration reference is generated from the code and must match it."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from inf2_deploy.artifact.properties import PROPERTY_REFERENCE
from inf2_deploy.cli import build_parser
from inf2_serving.config import ServingConfig
from inf2_serving.contract import PROPERTY_BY_FIELD

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"


def _reference_doc_module():
    """tools/reference_doc.py is a repository tool, not part of the installed package."""
    spec = importlib.util.spec_from_file_location("reference_doc", REPO / "tools" / "reference_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


configuration_reference = _reference_doc_module().configuration_reference


def test_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == configuration_reference(), (
        "docs/configuration.md is stale: run python tools/reference_doc.py --write docs/configuration.md"
    )


def test_every_cli_flag_is_documented():
    text = DOC.read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, command in commands.items():
        assert f"### `inf2-deploy {name}`" in text
        for action in command._actions:
            if action.dest == "help":
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in text, (name, flag)


def test_every_property_the_handler_reads_is_documented():
    documented = {key for key, *_ in PROPERTY_REFERENCE}
    fields = {field.name for field in dataclasses.fields(ServingConfig)} - {"model_dir", "weights_dir"}
    read = {PROPERTY_BY_FIELD[name].key for name in fields | {"model_id"}}
    assert read <= documented, read - documented
