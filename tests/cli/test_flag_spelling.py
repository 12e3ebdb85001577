"""Flags as users spell them: no abbreviations, and a mistyped, SDK- or LMI-style flag gets the sub-command's
usage and a "did you mean"; optional positionals around options; every config problem on its own line."""
from __future__ import annotations

from pathlib import Path

import pytest
from inf2_deploy.cli import build_parser, main
from inf2_deploy.cli.arg_types import FLAG_ALIASES, CommandParser, suggest_flag


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(("argv", "message"), [
    (["deploy", "--instance_type", "ml.inf2.xlarge"], "--instance_type (did you mean --instance-type?)"),
    (["deploy", "--initial-instance-count", "2"], "--initial-instance-count (did you mean --instance-count?)"),
    (["deploy", "--role-arn", "arn:aws:iam::123456789012:role/R"], "--role-arn (did you mean --role?)"),
    (["deploy", "--role_arn=arn:aws:iam::123456789012:role/R"],
     "--role_arn=arn:aws:iam::123456789012:role/R (did you mean --role?)"),
    (["plan", "--tensor-parallel-degree", "2"], "--tensor-parallel-degree (did you mean --tp-degree?)"),
    (["plan", "--tensor_parallel_degree", "2"], "--tensor_parallel_degree (did you mean --tp-degree?)"),
    (["plan", "--tp", "2"], "--tp (did you mean --tp-degree?)"),
    (["plan", "--intance-type", "ml.inf2.xlarge"], "--intance-type (did you mean --instance-type?)"),
    (["invoke", "gptj", "Hi", "--max_new_tokens", "5"], "--max_new_tokens (did you mean --max-new-tokens?)"),
    (["plan", "--kms-key", "alias/k"], "--kms-key (a flag of deploy, export)"),
    (["plan", "--bucket", "b"], "--bucket (a flag of deploy, iam-policy, export)"),
    (["plan", "--colour", "blue"], "--colour"),
])
def test_an_unknown_flag_gets_the_commands_usage_and_a_suggestion(capsys: pytest.CaptureFixture[str],
                                                                  argv: list[str], message: str) -> None:
    lines = _usage_error(capsys, argv)
    assert lines[0].startswith(f"usage: inf2-deploy {argv[0]} ")
    assert lines[-1] == f"inf2-deploy {argv[0]}: error: unrecognized argument: {message}"


def test_every_unknown_flag_is_listed_and_their_values_are_not(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _usage_error(capsys, ["deploy", "--instance_type", "ml.inf2.xlarge", "--initial-instance-count", "1",
                                  "--model", "tiny-gptj", "stray"])
    assert lines[-1] == ("inf2-deploy deploy: error: unrecognized arguments: --instance_type (did you mean "
                         "--instance-type?), --initial-instance-count (did you mean --instance-count?), stray")


def test_a_word_after_a_flag_with_its_own_value_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _usage_error(capsys, ["plan", "--tp=2", "stray"])
    assert lines[-1] == "inf2-deploy plan: error: unrecognized arguments: --tp=2 (did you mean --tp-degree?), stray"


@pytest.mark.parametrize("argv", [["plan", "--instance-t", "ml.inf2.xlarge"], ["plan", "--tp-deg", "2"],
                                  ["invoke", "gptj", "Hi", "--max-new", "5"], ["--deb", "list"]])
def test_abbreviations_are_refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert "unrecognized argument" in _usage_error(capsys, argv)[-1]


def test_the_real_flags_still_parse() -> None:
    args = build_parser().parse_args(["plan", "--tp-degree", "2", "--instance-type=ml.inf2.8xlarge"])
    assert (args.tensor_parallel_degree, args.instance_type) == (2, "ml.inf2.8xlarge")


def test_every_alias_points_at_a_real_flag() -> None:
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    flags = {flag for command in commands.values() for flag in command.flags()}
    assert set(FLAG_ALIASES.values()) <= flags
    assert not set(FLAG_ALIASES) & flags  # an alias that is a real flag would shadow it


def test_a_suggestion_is_made_only_for_a_flag_the_command_has() -> None:
    assert suggest_flag("--role-arn", ["--region", "--model"]) is None
    assert suggest_flag("--role-arn", ["--role"]) == "--role"
    assert suggest_flag("--Instance_Type", ["--instance-type"]) == "--instance-type"
    assert suggest_flag("--model", ["--role"]) is None


@pytest.mark.parametrize(("argv", "name", "prompt"), [
    (["invoke", "gptj", "--stream", "Once upon"], "gptj", "Once upon"),
    (["invoke", "--max-new-tokens", "3", "gptj", "--stream", "Once upon"], "gptj", "Once upon"),
    (["invoke", "gptj", "Once upon", "--stream"], "gptj", "Once upon"),
    (["invoke", "--url", "http://127.0.0.1:9", "Once upon"], "Once upon", None),  # --url: the word is the prompt
    (["invoke", "gptj", "--body", "request.json"], "gptj", None),
])
def test_invoke_reads_positionals_wherever_the_options_are(argv: list[str], name: str, prompt: str | None) -> None:
    args = build_parser().parse_args(argv)
    assert (args.name, args.prompt) == (name, prompt)


def test_an_intermixed_parser_still_reports_unknown_flags(capsys: pytest.CaptureFixture[str]) -> None:
    parser = CommandParser(prog="demo", intermixed=True)
    parser.add_argument("first", nargs="?")
    parser.add_argument("second", nargs="?")
    parser.add_argument("--loud", action="store_true")
    assert vars(parser.parse_args(["a", "--loud", "b"])) == {"first": "a", "second": "b", "loud": True}
    with pytest.raises(SystemExit):
        parser.parse_args(["a", "--lod", "b"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "demo: error: unrecognized argument: --lod (did you mean --loud?)"


def test_a_config_error_lists_every_problem_one_per_line(fake_aws_env: None, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "spec.yaml"
    config.write_text("model: tiny-gptj\ninstance-type: ml.g5.xlarge\ntp: 0\nbatch_size: 0\ndtyp: fp16\n")
    assert main(["plan", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: instance_type: must be one of ml.inf2.xlarge")
    assert [line.split(":")[0] for line in lines[1:]] == ["  tensor_parallel_degree", "  batch_size", "  dtyp"]
    assert lines[-1] == "  dtyp: unknown setting; did you mean dtype? (got 'fp16')"
