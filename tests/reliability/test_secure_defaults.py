"""Secure defaults, one test each: encryption, private buckets, no leaked secrets, loopback
binding, no remote code, artifact paths confined to their folder."""
from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from inf2_deploy.artifact.manifest import Artifact, digest_file, write_manifest
from inf2_deploy.cli import main
from inf2_deploy.errors import ModelSourceError
from support.aws import ACCOUNT, REGION, ROLE
from support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"


def _secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


@pytest.mark.slow
def test_deploy_encrypts_keeps_bucket_private_and_leaks_no_secret(
        moto_server: str, fake_aws_env: dict[str, str], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    deploy = ["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--endpoint-name", "tiny",
              "--region", REGION, "--role", ROLE]
    # --pass-hf-token: the token goes to the container's environment, and nowhere else.
    assert main([*deploy, "--pass-hf-token"]) == 0
    for argv in (["status", "tiny", "--region", REGION], ["status", "tiny", "--region", REGION, "--json"],
                 ["list", "--region", REGION], ["logs", "tiny", "--region", REGION],
                 ["plan", "--model", "tiny-gptj", "--region", REGION, "--json"]):
        assert main(argv) == 0
    assert main([*deploy[:-1], "not-a-role"]) == 2  # an error path prints too
    captured = capsys.readouterr()
    assert _secrets_in(captured.out + captured.err, fake_aws_env) == []
    assert _secrets_in(caplog.text, fake_aws_env) == []

    # Every file the toolkit wrote: the packaged artifact, its manifest and serving.properties.
    written = [path for path in Path(os.environ["INF2_DEPLOY_HOME"]).rglob("*") if path.is_file()]
    assert any(p.name == "serving.properties" for p in written) and any(p.name == "manifest.json" for p in written)
    for path in written:
        assert _secrets_in(path.read_bytes().decode("latin-1"), fake_aws_env) == [], path

    s3 = boto3.client("s3", region_name=REGION)
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    objects = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert len(objects) >= 5
    for obj in objects:
        head = s3.head_object(Bucket=BUCKET, Key=obj["Key"])
        assert head["ServerSideEncryption"] == "AES256", obj["Key"]
        body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode("latin-1")
        assert _secrets_in(body + json.dumps(head["Metadata"]), fake_aws_env) == [], obj["Key"]

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    endpoint = sagemaker.describe_endpoint(EndpointName="tiny")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Environment"].pop("HF_TOKEN") == fake_aws_env["HF_TOKEN"]
    tags = [sagemaker.list_tags(ResourceArn=arn)["Tags"] for arn in
            (endpoint["EndpointArn"], config["EndpointConfigArn"], model["ModelArn"])]
    assert _secrets_in(json.dumps([endpoint, config, model, tags], default=str), fake_aws_env) == []


def test_named_bucket_is_never_created(fake_aws_env: dict[str, str]) -> None:
    from inf2_deploy.aws.s3 import ensure_bucket
    from inf2_deploy.errors import ConfigError
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        with pytest.raises(ConfigError) as missing:
            ensure_bucket(s3, "someone-elses-name", REGION, create=False)
        assert missing.value.field == "bucket"
        assert s3.list_buckets()["Buckets"] == []


def test_every_server_entry_point_defaults_to_loopback() -> None:
    from inf2_deploy.cli import build_parser
    from inf2_deploy.local import server
    from inf2_deploy.local.deploy import serve_local
    from inf2_deploy.local.supervisor import LocalSupervisor
    assert inspect.signature(server.serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(LocalSupervisor.start).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_local).parameters["host"].default == "127.0.0.1"
    serve_args = build_parser().parse_args(["serve", "some-artifact"])
    assert serve_args.host == "127.0.0.1"


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a socket in LISTEN state on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as stream:
            for line in stream.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.rsplit(":", 1)
                if state == "0A" and int(port_hex, 16) == port:
                    found.append(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_local_server_process_listens_on_127_0_0_1_only(cpu_artifact: Path) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "inf2_deploy.local.server", str(cpu_artifact),
                                "--backend", "cpu", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _listening_addresses(port):
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        # 0100007F is 127.0.0.1 in /proc's little-endian hex; 00000000 would be every interface.
        assert _listening_addresses(port) == ["0100007F"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_no_trust_remote_code_in_our_code() -> None:
    offenders = []
    for folder in ("toolkit", "serving"):
        for path in (REPO / folder).rglob("*.py"):
            if "trust_remote_code" in path.read_text(encoding="utf-8"):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_cpu_backend_never_runs_checkpoint_code(cpu_artifact: Path, tmp_path: Path) -> None:
    """A checkpoint whose config maps the Auto classes to its own Python file is served by
    transformers' built-in GPT-J; the file is never imported."""
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving.handler import ModelHandler, ReadinessState

    folder = tmp_path / "custom-code"
    shutil.copytree(cpu_artifact, folder)
    marker = tmp_path / "custom-code-ran"
    (folder / "evil_model.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import GPTJConfig, GPTJForCausalLM\n"
        "class EvilConfig(GPTJConfig):\n    pass\n"
        "class EvilModel(GPTJForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil_model.EvilConfig", "AutoModelForCausalLM": "evil_model.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))

    handler = ModelHandler()
    handler.initialize(load_artifact_properties(folder, backend="cpu"))
    assert handler.state is ReadinessState.READY
    assert type(handler.engine.backend.model).__name__ == "GPTJForCausalLM"
    assert not marker.exists()


def _artifact_with_entry(folder: Path, path: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    artifact = write_manifest(folder, files=[digest_file(folder / "config.json").result("config.json")],
                              plan={}, source={"kind": "test"})
    data = json.loads(artifact.manifest_path.read_text())
    data["files"][0]["path"] = path
    artifact.manifest_path.write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("path", ["../outside.json", "/etc/passwd", "a/../../outside.json", "", "manifest.json"])
def test_manifest_paths_outside_the_folder_are_refused(tmp_path: Path, path: str) -> None:
    folder = _artifact_with_entry(tmp_path / "artifact", path)
    with pytest.raises(ModelSourceError) as refused:
        Artifact.load(folder)
    assert refused.value.field == "artifact"


def test_symlink_out_of_the_artifact_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "credentials"
    outside.write_text("[default]\naws_secret_access_key = x\n")
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside)
    artifact = write_manifest(folder, files=[digest_file(folder / "config.json").result("config.json")],
                              plan={}, source={"kind": "test"})
    with pytest.raises(ModelSourceError, match="outside the artifact folder"):
        Artifact.load(folder)
    with pytest.raises(ModelSourceError, match="outside the artifact folder"):
        artifact.verify()


def test_symlink_inside_the_artifact_is_fine(tmp_path: Path) -> None:
    folder = tmp_path / "artifact"
    (folder / "real").mkdir(parents=True)
    (folder / "real" / "config.json").write_text("{}")
    (folder / "config.json").symlink_to(folder / "real" / "config.json")
    files = [digest_file(folder / name).result(name) for name in ("config.json", "real/config.json")]
    write_manifest(folder, files=files, plan={}, source={"kind": "test"})
    assert Artifact.load(folder).verify().files == tuple(files)
