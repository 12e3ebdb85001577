"""The configuration reference is generated from the code and must match it."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from inf2_deploy.cli import build_parser
from inf2_deploy.properties import PROPERTY_REFERENCE
from inf2_deploy.reference_doc import configuration_reference
from inf2_serving.config import ServingConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == configuration_reference(), (
        "docs/configuration.md is stale: run python -m inf2_deploy.reference_doc --write docs/configuration.md"
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
    documented = {key.removeprefix("option.") for key, _, _ in PROPERTY_REFERENCE}
    read = {field.name for field in dataclasses.fields(ServingConfig)} - {"model_dir", "weights_dir"}
    assert read <= documented, read - documented
