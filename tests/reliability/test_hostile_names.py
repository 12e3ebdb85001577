"""Every user-given name or path gets a one-line error naming its field, whatever its length or bytes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from inf2_deploy.cli import main

LONG_NAME = "a" * 300  # one component over NAME_MAX (255): raised OSError [Errno 36] from Path.is_dir before
LONG_PATH = "/tmp/" + "/".join(["b" * 200] * 25)  # over PATH_MAX (4096)
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # how Python passes a non-UTF-8 argument: a lone surrogate


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, exit_code: int, field: str) -> str:
    err = capsys.readouterr().err
    assert code == exit_code, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{field}:" in err, err
    return err


@pytest.mark.parametrize("model", [LONG_NAME, f"/tmp/{LONG_NAME}/x", LONG_PATH, NOT_UTF8, f"owner/{LONG_NAME}"])
def test_plan_model_references(fake_aws_env: None, capsys: pytest.CaptureFixture[str], model: str) -> None:
    _one_line_error(capsys, main(["plan", "--model", model]), 2, "model")


@pytest.mark.parametrize("argv, field", [
    (["package", "--model", "tiny-gptj", "-o", f"/tmp/{LONG_NAME}"], "output"),
    (["package", "--model", "tiny-gptj", "-o", NOT_UTF8], "output"),
    (["package", "--model", "tiny-gptj", "-o", "/proc/inf2-deploy-artifact"], "output"),  # no one may write there
    (["plan", "--config", f"/tmp/{LONG_NAME}.yaml"], "config"),
    (["plan", "--config", NOT_UTF8 + ".yaml"], "config"),
    (["bench", "--url", "http://127.0.0.1:9", "--tokenizer", f"/tmp/{LONG_NAME}"], "tokenizer"),
    (["verify", "--url", "http://127.0.0.1:9", "--artifact", LONG_PATH], "artifact"),
    (["status", LONG_NAME], "name"),
    (["delete", NOT_UTF8], "name"),
    (["invoke", "x" * 64, "hello"], "name"),
])
def test_paths_and_names(fake_aws_env: None, capsys: pytest.CaptureFixture[str], argv: list[str], field: str) -> None:
    _one_line_error(capsys, main(argv), 2, field)


def test_a_folder_where_a_file_is_expected(fake_aws_env: None, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "spec.yaml"
    folder.mkdir()
    err = _one_line_error(capsys, main(["plan", "--config", str(folder)]), 2, "config")
    assert "Is a directory" in err


def test_a_config_file_that_is_not_text(fake_aws_env: None, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(b"model: \xff\xfe\x00")
    _one_line_error(capsys, main(["plan", "--config", str(binary)]), 2, "config")


def test_a_file_where_the_output_folder_is_expected(fake_aws_env: None, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "artifact"
    target.write_text("not a folder")
    _one_line_error(capsys, main(["package", "--model", "tiny-gptj", "-o", str(target)]), 2, "output")


def test_an_os_error_no_check_foresaw_is_one_line(fake_aws_env: None, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from inf2_deploy.cli import plan_cmd

    def denied(args):  # noqa: ANN001, ANN202
        raise PermissionError(13, "Permission denied", "/srv/models/gptj/config.json")

    monkeypatch.setattr(plan_cmd, "run", denied)
    assert main(["plan"]) == 1
    assert capsys.readouterr().err == "error: Permission denied: /srv/models/gptj/config.json\n"
