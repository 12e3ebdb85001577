"""Artifacts that are safe to purge and addressed by content, against moto.

- A purge deletes every prefix the endpoint deployed (its models' and its artifact index's)
  except those another live model reads, and names those.
- Deployment settings the container does not read upload nothing; a serving.properties change
  uploads that file and the manifest, and copies the rest inside S3.
- A failed deploy removes the artifact it uploaded, unless another model reads it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from inf2_deploy.artifact.manifest import MANIFEST_NAME
from inf2_deploy.aws.artifact_store import ArtifactIndex, StoredContent, artifact_users, model_data_uris
from inf2_deploy.aws.deploy import deploy
from inf2_deploy.aws.teardown import delete_deployment
from inf2_deploy.cli import main
from inf2_deploy.errors import EndpointFailedError
from support.aws import ACCOUNT, IMAGE, REGION, ROLE

BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
ROOT = "inf2-deploy/tiny-gptj"
UPLOADS = ("PutObject", "UploadPart")
COPIES = ("CopyObject", "UploadPartCopy")


def _keys(s3, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _model_uri(session, model_name: str) -> str:
    described = session.client("sagemaker").describe_model(ModelName=model_name)
    return described["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"]


def _count_sent(s3) -> dict[str, int]:
    """Key -> bytes PutObject and UploadPart send through ``s3`` from now on (copies send none)."""
    sent: dict[str, int] = {}

    def note(params: dict, model, **kwargs: object) -> None:  # noqa: ANN001 - a botocore OperationModel
        if model.name in UPLOADS:
            body = params["Body"]  # bytes, a BytesIO of a small file, or s3transfer's chunk of a large one
            size = len(body) if hasattr(body, "__len__") else len(body.getvalue())
            sent[params["Key"]] = sent.get(params["Key"], 0) + size

    s3.meta.events.register("provide-client-params.s3", note)
    return sent


@pytest.fixture
def later(make_clock):
    """``later(minutes)``: a clock that many minutes after the first, so each deploy's names are new."""

    def make(minutes: float):
        clock = make_clock()
        clock.elapsed = 60.0 * minutes
        return clock

    return make


def test_two_endpoints_share_a_prefix_and_a_purge_of_one_keeps_what_the_other_reads(
        session, tiny_spec, later, tmp_path):
    a = deploy(tiny_spec, session=session, clock=later(0), output=tmp_path / "art")
    b = deploy(tiny_spec.replace(endpoint_name="tiny-b"), session=session, clock=later(1), output=tmp_path / "art")
    assert a.artifact_s3_uri == b.artifact_s3_uri and b.bytes_uploaded == 0
    s3 = session.client("s3")
    b_prefix = _model_uri(session, b.model_name).removeprefix(f"s3://{BUCKET}/")
    b_objects = _keys(s3, b_prefix)
    assert MANIFEST_NAME in {key.rsplit("/", 1)[-1] for key in b_objects}

    teardown = delete_deployment("tiny", purge_artifacts=True, session=session)

    assert _keys(s3, b_prefix) == b_objects  # every object prod-b's model reads is still there
    assert teardown.kept == (f"{b.artifact_s3_uri} (used by model {b.model_name})",)
    assert not any("S3 objects" in item for item in teardown)
    assert f"artifact index s3://{BUCKET}/{ROOT}/index/tiny.json" in teardown
    # Once tiny-b goes too, nothing reads the prefix any more.
    last = delete_deployment("tiny-b", purge_artifacts=True, session=session)
    assert last.kept == () and f"{len(b_objects)} S3 objects under {b.artifact_s3_uri}" in last
    assert _keys(s3) == []


def test_purge_of_an_endpoint_redeployed_four_times_leaves_nothing_of_it(session, tiny_spec, later, tmp_path):
    s3 = session.client("s3")
    prefixes = []
    for step, timeout in enumerate((600, 700, 800, 900, 1000)):  # each a new serving.properties: a new artifact
        deployed = deploy(tiny_spec.replace(model_loading_timeout=timeout), session=session, clock=later(step),
                          output=tmp_path / "art")
        prefixes.append(deployed.artifact_s3_uri)
    assert len(set(prefixes)) == 5
    index = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{ROOT}/index/tiny.json")["Body"].read())
    assert index == {"endpoint": "tiny", "artifacts": prefixes}
    assert len(session.client("sagemaker").list_models()["Models"]) == 1  # the updates retired the rest

    teardown = delete_deployment("tiny", purge_artifacts=True, session=session)

    assert _keys(s3) == []
    assert [item for item in teardown if "S3 objects" in item] == [
        f"{len(_manifest_names(tmp_path / 'art')) + 1} S3 objects under {uri}" for uri in prefixes]
    assert teardown.kept == ()


def _manifest_names(folder: Path) -> list[str]:
    return [f["path"] for f in json.loads((folder / MANIFEST_NAME).read_text())["files"]]


def test_dry_run_lists_what_would_go_and_deletes_nothing(session, tiny_spec, later, tmp_path, count_calls):
    first = deploy(tiny_spec.replace(model_loading_timeout=600), session=session, clock=later(0),
                   output=tmp_path / "art")
    second = deploy(tiny_spec, session=session, clock=later(1), output=tmp_path / "art")
    s3, sagemaker = session.client("s3"), session.client("sagemaker")
    before = _keys(s3)
    calls = count_calls(s3, sagemaker)

    teardown = delete_deployment("tiny", purge_artifacts=True, dry_run=True, session=session)

    assert teardown.dry_run
    count = len(_manifest_names(tmp_path / "art")) + 1
    assert list(teardown) == [
        "endpoint tiny", f"endpoint config {second.endpoint_config_name}", f"model {second.model_name}",
        f"{count} S3 objects under {first.artifact_s3_uri}", f"{count} S3 objects under {second.artifact_s3_uri}",
        f"artifact index s3://{BUCKET}/{ROOT}/index/tiny.json"]
    assert _keys(s3) == before
    assert not {name for name in calls.names() if name.startswith(("Delete", "Put", "Update"))}
    assert sagemaker.describe_endpoint(EndpointName="tiny")["EndpointStatus"] == "InService"


def test_cli_dry_run_says_would_and_names_what_it_keeps(moto_server, capsys, tmp_path):
    deploy_args = ["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--region", REGION,
                   "--role", ROLE, "--image-uri", IMAGE]
    assert main([*deploy_args, "--endpoint-name", "one"]) == 0
    assert main([*deploy_args, "--endpoint-name", "two"]) == 0
    capsys.readouterr()

    assert main(["delete", "one", "--purge-artifacts", "--dry-run", "--region", REGION]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "would delete endpoint one"
    assert [line for line in printed if line.startswith("would keep s3://")] == [
        line for line in printed if "(used by model two-" in line]
    assert main(["delete", "one", "--purge-artifacts", "--region", REGION]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "deleted endpoint one"
    assert any(line.startswith("kept s3://") and "(used by model two-" in line for line in printed)
    assert main(["status", "two", "--region", REGION]) == 0  # untouched


def test_a_model_of_another_tool_keeps_the_prefix_it_reads(session, tiny_spec, tiny_artifact, clock):
    deployed = deploy(tiny_spec, artifact=tiny_artifact, session=session, clock=clock)
    sagemaker = session.client("sagemaker")
    parent = deployed.artifact_s3_uri.rsplit("/", 2)[0] + "/"
    # Someone's own model reads the parent folder through its second container's ModelDataUrl.
    sagemaker.create_model(ModelName="someone-else", ExecutionRoleArn=ROLE,
                           Containers=[{"Image": IMAGE}, {"Image": IMAGE, "ModelDataUrl": parent}])

    teardown = delete_deployment("tiny", purge_artifacts=True, session=session)

    assert teardown.kept == (f"{deployed.artifact_s3_uri} (used by model someone-else)",)
    assert _keys(session.client("s3"), deployed.artifact_s3_uri.removeprefix(f"s3://{BUCKET}/"))


def test_model_data_uris_reads_every_container_and_source():
    described = {
        "PrimaryContainer": {"ModelDataSource": {"S3DataSource": {"S3Uri": "s3://b/a/"}},
                             "AdditionalModelDataSources": [{"ChannelName": "draft",
                                                             "S3DataSource": {"S3Uri": "s3://b/d/"}}]},
        "Containers": [{"ModelDataUrl": "s3://b/c/model.tar.gz"}, {"Image": "x"}],
    }
    assert model_data_uris(described) == ["s3://b/a/", "s3://b/d/", "s3://b/c/model.tar.gz"]


def test_artifact_users_match_by_prefix_in_both_directions(session):
    sagemaker = session.client("sagemaker")
    for name, uri in (("inside", "s3://b/root/abc/"), ("parent", "s3://b/root"), ("sibling", "s3://b/root/abcd/"),
                      ("elsewhere", "s3://other/root/abc/")):
        sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": IMAGE, "ModelDataSource": {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix",
                                                                 "CompressionType": "None"}}})
    users = artifact_users(sagemaker, ["s3://b/root/abc/"], ignore=["parent"])
    assert users == {"s3://b/root/abc/": ["inside"]}


def test_an_index_never_points_a_purge_outside_its_prefix_root(session):
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    index = ArtifactIndex(s3, BUCKET, ROOT, "tiny")
    assert index.record(f"s3://{BUCKET}/{ROOT}/abc/", sse={"ServerSideEncryption": "AES256"})
    assert not index.record(f"s3://{BUCKET}/{ROOT}/abc", sse={"ServerSideEncryption": "AES256"})
    with pytest.raises(ValueError):
        index.record(f"s3://{BUCKET}/elsewhere/abc/", sse={})
    s3.put_object(Bucket=BUCKET, Key=index.key, Body=json.dumps({"artifacts": [
        f"s3://{BUCKET}/{ROOT}/abc/", f"s3://{BUCKET}/", f"s3://{BUCKET}/{ROOT}/", f"s3://{BUCKET}/{ROOT}/index/",
        f"s3://{BUCKET}/{ROOT}/a/b/", f"s3://other/{ROOT}/abc/", f"s3://{BUCKET}/{ROOT}/../x/", 7]}))
    assert index.read() == [f"s3://{BUCKET}/{ROOT}/abc/"]
    s3.put_object(Bucket=BUCKET, Key=index.key, Body=b"not json")
    assert index.read() == []


def test_instance_count_or_tags_alone_upload_nothing_and_keep_the_artifact(
        session, tiny_spec, later, tmp_path, count_calls, status_script):
    first = deploy(tiny_spec, session=session, clock=later(0), output=tmp_path / "art")
    s3, sagemaker = session.client("s3"), session.client("sagemaker")
    calls, sent = count_calls(s3, sagemaker), _count_sent(s3)
    status_script(sagemaker, ["InService", "Updating", "InService"])
    scaled = deploy(tiny_spec.replace(instance_count=2), session=session, clock=later(1), output=tmp_path / "art")

    assert scaled.changed and scaled.bytes_uploaded == 0 and sent == {}
    assert not {name for name in calls.names() if name in COPIES}
    assert scaled.artifact_s3_uri == first.artifact_s3_uri == _model_uri(session, scaled.model_name)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=scaled.endpoint_config_name)
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2

    calls.calls.clear()
    tagged = deploy(tiny_spec.replace(instance_count=2, tags={"team": "search"}), session=session, clock=later(2),
                    output=tmp_path / "art")
    assert tagged.bytes_uploaded == 0 and sent == {}
    assert not {"CreateModel", "CreateEndpointConfig", "UpdateEndpoint"} & set(calls.names())
    endpoint_arn = sagemaker.describe_endpoint(EndpointName="tiny")["EndpointArn"]
    assert {"Key": "team", "Value": "search"} in sagemaker.list_tags(ResourceArn=endpoint_arn)["Tags"]


def test_a_serving_properties_change_uploads_that_file_and_the_manifest_and_copies_the_rest(
        session, tiny_spec, later, tmp_path, count_calls):
    first = deploy(tiny_spec, session=session, clock=later(0), output=tmp_path / "art")
    s3 = session.client("s3")
    calls, sent = count_calls(s3), _count_sent(s3)

    changed = deploy(tiny_spec.replace(batch_size=2), session=session, clock=later(1), output=tmp_path / "art")

    new_prefix = changed.artifact_s3_uri.removeprefix(f"s3://{BUCKET}/")
    assert new_prefix != first.artifact_s3_uri.removeprefix(f"s3://{BUCKET}/")
    folder = tmp_path / "art"
    assert sent == {
        f"{new_prefix}serving.properties": (folder / "serving.properties").stat().st_size,
        f"{new_prefix}{MANIFEST_NAME}": (folder / MANIFEST_NAME).stat().st_size,
        f"{ROOT}/index/tiny.json": sent[f"{ROOT}/index/tiny.json"],  # the record of the new prefix
    }
    assert changed.bytes_uploaded == sum(sent.values()) - sent[f"{ROOT}/index/tiny.json"]
    copied = {params["Key"].removeprefix(new_prefix) for name, params in calls.calls if name in COPIES}
    assert copied == set(_manifest_names(folder)) - {"serving.properties"}
    # Copied objects are what an upload would have made: same ETag, size and sha256 metadata.
    for item in json.loads((folder / MANIFEST_NAME).read_text())["files"]:
        head = s3.head_object(Bucket=BUCKET, Key=new_prefix + item["path"])
        assert (head["ETag"].strip('"'), head["ContentLength"], head["Metadata"]) == (
            item["s3_etag"], item["size"], {"sha256": item["sha256"]}), item["path"]


def test_stored_content_prefers_another_key_and_skips_incomplete_artifacts(session, tiny_artifact):
    from inf2_deploy.aws.upload import upload_artifact

    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    upload_artifact(s3, tiny_artifact, BUCKET, f"{ROOT}/done")
    s3.put_object(Bucket=BUCKET, Key=f"{ROOT}/partial/config.json", Body=b"{}")
    item = tiny_artifact.files[0]
    sources = StoredContent(s3, BUCKET, ROOT)
    assert sources.find(item.sha256, item.size, destination=f"{ROOT}/new/{item.path}") == f"{ROOT}/done/{item.path}"
    assert sources.find(item.sha256, item.size, destination=f"{ROOT}/done/{item.path}") == f"{ROOT}/done/{item.path}"
    assert sources.find("0" * 64, item.size, destination="x") is None


def test_a_failed_copy_is_uploaded_instead(session, tiny_artifact, count_calls):
    from inf2_deploy.aws.upload import upload_artifact

    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    upload_artifact(s3, tiny_artifact, BUCKET, f"{ROOT}/old")
    for key in _keys(s3, f"{ROOT}/old/"):  # the objects went, the manifest still claims them
        if not key.endswith(MANIFEST_NAME):
            s3.delete_object(Bucket=BUCKET, Key=key)
    calls = count_calls(s3)
    result = upload_artifact(s3, tiny_artifact, BUCKET, f"{ROOT}/new", sources=StoredContent(s3, BUCKET, ROOT))
    assert result.copied == () and result.bytes_copied == 0
    assert set(result.uploaded) == {f.path for f in tiny_artifact.files} | {MANIFEST_NAME}
    # Tried first: s3transfer looks the source up before copying, and finds it gone.
    assert {params["Key"] for name, params in calls.calls if name == "HeadObject"} >= {
        f"{ROOT}/old/{f.path}" for f in tiny_artifact.files}


def test_a_new_kms_key_re_encrypts_in_place_without_uploading(session, tiny_spec, later, tmp_path):
    first = deploy(tiny_spec, session=session, clock=later(0), output=tmp_path / "art")
    key = session.client("kms").create_key()["KeyMetadata"]["Arn"]
    s3 = session.client("s3")
    sent = _count_sent(s3)
    encrypted = deploy(tiny_spec.replace(kms_key_id=key), session=session, clock=later(1), output=tmp_path / "art")
    prefix = first.artifact_s3_uri.removeprefix(f"s3://{BUCKET}/")
    assert encrypted.artifact_s3_uri == first.artifact_s3_uri
    assert set(sent) == {prefix + MANIFEST_NAME}  # the weights were copied onto themselves
    for obj in _keys(s3, prefix):
        head = s3.head_object(Bucket=BUCKET, Key=obj)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)


def test_a_failed_update_removes_the_artifact_it_uploaded_and_keeps_the_old_one(
        session, tiny_spec, later, tmp_path, status_script):
    first = deploy(tiny_spec, session=session, clock=later(0), output=tmp_path / "art")
    sagemaker = session.client("sagemaker")
    status_script(sagemaker, ["InService", "Updating", "Failed"], failure_reason="ping health check failed")
    with pytest.raises(EndpointFailedError) as failed:
        deploy(tiny_spec.replace(batch_size=2), session=session, clock=later(1), output=tmp_path / "art")
    s3 = session.client("s3")
    prefixes = {key.split("/")[2] for key in _keys(s3, f"{ROOT}/") if "/index/" not in key}
    assert prefixes == {first.artifact_s3_uri.rstrip("/").rsplit("/", 1)[-1]}
    assert "S3 objects under s3://" in str(failed.value).split("rolled back:")[-1]
    assert _model_uri(session, first.model_name) == first.artifact_s3_uri


def test_a_failed_deploy_keeps_its_artifact_when_another_endpoint_reads_it(
        session, tiny_spec, later, tmp_path, status_script):
    other = deploy(tiny_spec.replace(endpoint_name="other"), session=session, clock=later(0),
                   output=tmp_path / "art")
    s3 = session.client("s3")
    before = _keys(s3, other.artifact_s3_uri.removeprefix(f"s3://{BUCKET}/"))
    s3.delete_object(Bucket=BUCKET, Key=before[-1])  # a half-finished prefix: this deploy sends the rest
    status_script(session.client("sagemaker"), ["Failed"], failure_reason="boom")
    with pytest.raises(EndpointFailedError):
        deploy(tiny_spec, session=session, clock=later(1), output=tmp_path / "art")
    assert _keys(s3, other.artifact_s3_uri.removeprefix(f"s3://{BUCKET}/")) == before


def test_a_local_dry_run_names_the_server_and_leaves_it_running(tmp_path):
    from inf2_deploy.client.targets import resolve
    from inf2_deploy.local.records import LocalDeployment, LocalStore

    store = LocalStore(tmp_path / "records", alive=lambda pid: pid == 101)
    store.save(LocalDeployment(name="tiny-local", url="http://127.0.0.1:8765", pid=101, artifact_dir="/a",
                               log_file=str(store.log_path("tiny-local")), started_at="2026-01-01T00:00:00+00:00"))
    target = resolve("tiny-local", store=store)
    assert target.delete(dry_run=True) == ["local deployment tiny-local (http://127.0.0.1:8765, pid 101)"]
    assert store.get("tiny-local") is not None
