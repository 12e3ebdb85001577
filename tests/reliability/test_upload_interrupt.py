"""Interrupted, corrupted and concurrent uploads of a multi-part artifact, against moto over HTTP.

The uploader runs in a child process that is SIGKILLed part-way (no cleanup
code runs, as after a crash or a lost spot instance). A rerun must send only
what is missing, verify every object against the manifest's sha256, and
re-send an object whose content was changed behind its back. The multipart
upload a kill leaves behind is kept while it is recent (a concurrent deploy may
own it) and aborted by the first upload after it is an hour old.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from inf2_deploy.artifact.manifest import UPLOAD_PART_SIZE, Artifact, digest_file, write_manifest
from inf2_deploy.aws.s3 import abort_stale_uploads
from inf2_deploy.aws.upload import transfer_config, upload_artifact

MIB = 1024 * 1024
BUCKET = "artifacts"
PREFIX = "inf2-deploy/tiny/interrupted"
BIG = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")
BIG_SIZE = 20 * MIB  # two parts of UPLOAD_PART_SIZE (16 MiB + 4 MiB)

# The child uploads one request at a time, so that a kill lands between whole objects
# and part-way through one, and prints every progress report for the parent to watch.
CHILD = """
import sys
import boto3
from inf2_deploy.artifact.manifest import Artifact
from inf2_deploy.aws.upload import transfer_config, upload_artifact
from inf2_deploy.observer import CallbackObserver

config = transfer_config()
config.max_request_concurrency = 1
s3 = boto3.client("s3", region_name="us-east-1")
artifact = Artifact.load(sys.argv[1])

def progress(done, total, label):
    print("progress", done, total, label, flush=True)

upload_artifact(s3, artifact, sys.argv[2], sys.argv[3], observer=CallbackObserver(progress=progress), config=config)
print("finished", flush=True)
"""

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def multipart_uploads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make moto report when each multipart upload started, as S3 does; moto's uploads by UploadId.

    moto 5.2.5 answers ListMultipartUploads with ``Initiated`` 2010-11-10T20:48:33Z
    for every upload, so each would look stale, also one a concurrent uploader
    is still sending. Tests backdate an upload by lowering its ``initiated``.
    """
    from moto.s3.models import FakeMultipart
    from moto.s3.responses import S3Response

    uploads: dict[str, Any] = {}
    original_init, original_list = FakeMultipart.__init__, S3Response.list_multipart_uploads

    def init(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001 - moto's signature
        original_init(self, *args, **kwargs)
        self.initiated = datetime.now(timezone.utc)
        uploads[self.id] = self

    def with_start_time(match: re.Match[str]) -> str:
        upload = uploads.get(re.search(r"<UploadId>(.*?)</UploadId>", match[0])[1])
        if upload is None:
            return match[0]
        return re.sub(r"<Initiated>.*?</Initiated>",
                      f"<Initiated>{upload.initiated:%Y-%m-%dT%H:%M:%S.000Z}</Initiated>", match[0])

    def list_multipart_uploads(self) -> tuple[int, dict, str]:  # noqa: ANN001 - moto's signature
        status, headers, body = original_list(self)
        return status, headers, re.sub(r"<Upload>.*?</Upload>", with_start_time, body, flags=re.DOTALL)

    monkeypatch.setattr(FakeMultipart, "__init__", init)
    monkeypatch.setattr(S3Response, "list_multipart_uploads", list_multipart_uploads)
    return uploads


@pytest.fixture(scope="module")
def big_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    folder = tmp_path_factory.mktemp("big-artifact")
    for index, name in enumerate(BIG):
        (folder / name).write_bytes(index.to_bytes(1, "big") + os.urandom(BIG_SIZE - 1))
    (folder / "config.json").write_text('{"model_type": "gptj"}')
    names = ("config.json", *BIG)
    files = [digest_file(folder / name).result(name) for name in names]
    return write_manifest(folder, files=files, plan={"tp": 1}, source={"kind": "test"})


@pytest.fixture
def s3(moto_server: str):  # noqa: ANN201
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def _upload_ids(s3) -> set[str]:  # noqa: ANN001
    return {upload["UploadId"] for upload in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])}


def _count_calls(client) -> list[tuple[str, dict]]:  # noqa: ANN001
    calls: list[tuple[str, dict]] = []
    client.meta.events.register("before-parameter-build.s3", lambda model, params, **_: calls.append(
        (model.name, params)))
    return calls


def _stored_sha256(s3, key: str) -> str | None:  # noqa: ANN001
    try:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return hashlib.sha256(body).hexdigest()


def _assert_complete(s3, artifact: Artifact) -> None:  # noqa: ANN001
    """Every object's bytes hash to the manifest's sha256, and the manifest itself is there."""
    for item in artifact.files:
        assert _stored_sha256(s3, f"{PREFIX}/{item.path}") == item.sha256, item.path
    manifest = artifact.manifest_path.read_bytes()
    assert _stored_sha256(s3, f"{PREFIX}/manifest.json") == hashlib.sha256(manifest).hexdigest()


def _kill_part_way(artifact: Artifact, kill_after_bytes: int) -> list[str]:
    """Run the uploader in a child and SIGKILL it once it reports ``kill_after_bytes``; its output lines."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(artifact.directory), BUCKET, PREFIX],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.strip())
            parts = line.split()
            if parts[0] == "progress" and parts[3:] != ["already", "in", "S3"] and int(parts[1]) >= kill_after_bytes:
                child.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "the uploader never reached the kill point"
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr.read() if child.stderr else "")
    assert lines and lines[-1] != "finished"
    return lines


def test_sigkill_mid_upload_then_rerun_sends_only_what_is_missing(  # noqa: ANN001
        s3, big_artifact: Artifact, multipart_uploads: dict[str, Any]) -> None:
    small = big_artifact.files[0].size
    # Part-way through the second big file: the first is whole, the rest is not.
    _kill_part_way(big_artifact, small + BIG_SIZE + UPLOAD_PART_SIZE // 2)

    before = {item.path: _stored_sha256(s3, f"{PREFIX}/{item.path}") == item.sha256 for item in big_artifact.files}
    assert _stored_sha256(s3, f"{PREFIX}/manifest.json") is None  # the manifest goes last
    assert any(before.values()) and not all(before.values()), before
    # A killed multipart upload leaves its parts behind (billed until aborted or expired).
    leftover = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])

    calls = _count_calls(s3)
    result = upload_artifact(s3, big_artifact, BUCKET, PREFIX)
    missing = [path for path, ok in before.items() if not ok]
    assert list(result.uploaded) == [*missing, "manifest.json"]
    assert sorted(result.skipped) == sorted(path for path, ok in before.items() if ok)
    sizes = {item.path: item.size for item in big_artifact.files}
    assert result.bytes_uploaded == sum(sizes[p] for p in missing) + big_artifact.manifest_path.stat().st_size
    # Exactly the bytes of the missing objects went over the wire, part by part.
    sent = [(name, params) for name, params in calls if name in ("PutObject", "UploadPart")]
    expected_parts = sum(-(-sizes[p] // UPLOAD_PART_SIZE) if sizes[p] >= UPLOAD_PART_SIZE else 1 for p in missing)
    assert len(sent) == expected_parts + 1  # + manifest.json
    keys = {params["Key"].removeprefix(PREFIX + "/") for _, params in sent}
    assert keys == {*missing, "manifest.json"}
    _assert_complete(s3, big_artifact)
    print(f"killed with {len(leftover)} multipart upload(s) in progress; rerun sent {len(missing)} of "
          f"{len(big_artifact.files)} files in {len(sent)} requests")

    # The killed upload is minutes old, so the rerun kept it (a concurrent deploy may be sending it)...
    killed = {upload["UploadId"] for upload in leftover}
    assert killed and _upload_ids(s3) == killed
    # ...and the first upload after it is an hour old aborts it.
    for upload_id in killed:
        multipart_uploads[upload_id].initiated -= timedelta(hours=1)
    assert upload_artifact(s3, big_artifact, BUCKET, PREFIX).uploaded == ()
    assert _upload_ids(s3) == set()


def test_upload_aborts_stale_multipart_uploads_under_its_own_prefix_only(  # noqa: ANN001
        s3, big_artifact: Artifact, multipart_uploads: dict[str, Any]) -> None:
    def start(key: str, age: timedelta) -> str:
        upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=os.urandom(MIB))
        multipart_uploads[upload_id].initiated -= age
        return upload_id

    shard = f"{PREFIX}/{BIG[0]}"
    stale = start(shard, timedelta(hours=1, minutes=1))
    fresh = start(shard, timedelta(minutes=59))
    elsewhere = start(f"inf2-deploy/tiny/other/{BIG[0]}", timedelta(days=2))
    sibling = start(f"{PREFIX}-2/{BIG[0]}", timedelta(days=2))  # PREFIX is a string prefix of it, not its folder

    calls = _count_calls(s3)
    upload_artifact(s3, big_artifact, BUCKET, PREFIX)
    assert [params["UploadId"] for name, params in calls if name == "AbortMultipartUpload"] == [stale]
    assert _upload_ids(s3) == {fresh, elsewhere, sibling}
    _assert_complete(s3, big_artifact)
    # An hour later the fresh one is stale too; the other prefixes are still not ours to touch.
    assert abort_stale_uploads(s3, BUCKET, PREFIX, now=datetime.now(timezone.utc) + timedelta(hours=1)) == 1
    assert _upload_ids(s3) == {elsewhere, sibling}


def test_same_size_corruption_in_s3_is_resent_not_trusted(s3, big_artifact: Artifact) -> None:  # noqa: ANN001
    upload_artifact(s3, big_artifact, BUCKET, PREFIX)
    victim = big_artifact.files[2]  # a 20 MiB multipart object
    key = f"{PREFIX}/{victim.path}"
    original = s3.head_object(Bucket=BUCKET, Key=key)
    # Same size, different bytes; once as another tool writes it, once keeping our metadata.
    for metadata in ({}, original["Metadata"]):
        s3.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(victim.size), Metadata=metadata,
                      ServerSideEncryption="AES256")
        assert _stored_sha256(s3, key) != victim.sha256
        calls = _count_calls(s3)
        result = upload_artifact(s3, big_artifact, BUCKET, PREFIX)
        assert result.uploaded == (victim.path, "manifest.json")
        assert {params["Key"] for name, params in calls if name in ("PutObject", "CreateMultipartUpload")} == {
            key, f"{PREFIX}/manifest.json"}
        _assert_complete(s3, big_artifact)


def test_two_concurrent_uploads_of_one_artifact_leave_correct_objects(s3, big_artifact: Artifact) -> None:  # noqa: ANN001
    results, errors = [], []

    def upload() -> None:
        client = boto3.client("s3", region_name="us-east-1")
        try:
            results.append(upload_artifact(client, big_artifact, BUCKET, PREFIX, config=transfer_config()))
        except Exception as exc:  # collected and reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 2
    _assert_complete(s3, big_artifact)
    # A third run finds everything in place.
    assert upload_artifact(s3, big_artifact, BUCKET, PREFIX).uploaded == ()


def test_two_concurrent_uploader_processes_leave_correct_objects(s3, big_artifact: Artifact) -> None:  # noqa: ANN001
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(big_artifact.directory), BUCKET, PREFIX],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        assert out.splitlines()[-1] == "finished"
    _assert_complete(s3, big_artifact)
    assert Artifact.load(big_artifact.directory).verify() == big_artifact
