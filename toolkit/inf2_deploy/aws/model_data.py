"""Deploying an artifact that is already in S3 (``deploy --model-data s3://bucket/prefix/``), checked first.

Nothing is packaged or uploaded; the model reads the prefix as it is. Before
any SageMaker resource is created, the prefix must hold an artifact this
toolkit would deploy:

1. ``manifest.json`` exists and parses (:meth:`Artifact.load`, as for a local folder);
2. every file it lists exists under the prefix with the size it records;
3. its ``serving.properties``, which is what the container reads, was written for
   the same tensor parallel degree, n_positions, dtype and batch size as the plan.

The URI's shape is checked before any AWS call (:func:`check_model_data_uri`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from inf2_serving.contract import PROPERTY_BY_FIELD

from ..artifact.djl_properties import PropertiesError, parse_properties
from ..artifact.manifest import MANIFEST_NAME, Artifact
from ..errors import ConfigError, ModelSourceError
from ..spec.planner import Plan
from ..spec.validators import BUCKET_NAME
from .session import aws_errors, is_not_found

__all__ = ["FITTED_FIELDS", "check_model_data_uri", "read_model_data"]

#: the plan settings an artifact is built for: a different value in its serving.properties is another artifact
FITTED_FIELDS = ("tensor_parallel_degree", "n_positions", "dtype", "batch_size")
SERVING_PROPERTIES = "serving.properties"
# Problems listed in one error before "and N more".
SHOWN_PROBLEMS = 5
_REUPLOAD = "upload a folder that `inf2-deploy package` wrote, whole, or deploy from the model instead"


def check_model_data_uri(uri: object) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> ``("bucket", "prefix/")``, before any AWS call.

    Raises:
        ConfigError: not an s3:// URI with a valid bucket name and a key prefix (field ``model_data``).
    """
    text = uri if isinstance(uri, str) else ""
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not text.startswith("s3://") or not BUCKET_NAME.match(bucket) or not prefix or ".." in prefix.split("/"):
        raise ConfigError("must be the s3://BUCKET/PREFIX/ of a packaged artifact (the folder holding "
                          f"{MANIFEST_NAME})", field="model_data", value=uri)
    return bucket, prefix + "/"


def read_model_data(s3: Any, uri: str, plan: Plan) -> Artifact:
    """The artifact at ``uri``, once its manifest, its objects and its serving.properties check out.

    Args:
        s3: a boto3 S3 client.
        uri: ``s3://bucket/prefix/`` holding an artifact and its manifest.json.
        plan: the deployment's checked plan; the artifact must be built for it.

    Returns:
        The artifact as its manifest records it (its ``directory`` is meaningless: the files are in S3).

    Raises:
        ConfigError: ``uri`` is malformed, or the artifact was built for other settings (field ``model_data``).
        ModelSourceError: no manifest.json, a malformed one, or files missing or of another size.
        AwsError: an S3 call failed.
    """
    bucket, prefix = check_model_data_uri(uri)
    shown = f"s3://{bucket}/{prefix}"
    artifact = _load_manifest(_get(s3, bucket, prefix + MANIFEST_NAME, shown), shown)
    if SERVING_PROPERTIES not in {item.path for item in artifact.files}:
        raise ModelSourceError(f"the {MANIFEST_NAME} under {shown} lists no {SERVING_PROPERTIES}",
                               field="model_data", value=shown, hint=_REUPLOAD)
    _check_objects(s3, artifact, bucket, prefix, shown)
    _check_fit(_get(s3, bucket, prefix + SERVING_PROPERTIES, shown), plan, shown)
    return artifact


def _get(s3: Any, bucket: str, key: str, shown: str) -> bytes:
    with aws_errors(f"s3:GetObject s3://{bucket}/{key}"):
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if not is_not_found(exc):
                raise
    raise ModelSourceError(f"there is no {key.rsplit('/', 1)[-1]} under {shown}", field="model_data", value=shown,
                           hint="point --model-data at the prefix a deploy or `inf2-deploy package` produced")


def _load_manifest(body: bytes, shown: str) -> Artifact:
    """Parse the manifest with the same checks as a local one (``Artifact.load`` reads a folder)."""
    with tempfile.TemporaryDirectory(prefix="inf2-deploy-model-data-") as folder:
        local = Path(folder) / MANIFEST_NAME
        local.write_bytes(body)
        try:
            return Artifact.load(folder)
        except ModelSourceError as exc:
            message = exc.message.replace(str(local), shown + MANIFEST_NAME)
            raise ModelSourceError(message, field="model_data", value=shown, hint=_REUPLOAD) from None


def _check_objects(s3: Any, artifact: Artifact, bucket: str, prefix: str, shown: str) -> None:
    """Every file the manifest lists is an object of the recorded size under the prefix."""
    with aws_errors(f"s3:ListObjectsV2 {shown}"):
        sizes = {obj["Key"][len(prefix):]: obj["Size"]
                 for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                 for obj in page.get("Contents", [])}
    problems = [f"{item.path} missing" if item.path not in sizes else
                f"{item.path} is {sizes[item.path]} bytes, the manifest says {item.size}"
                for item in artifact.files if sizes.get(item.path) != item.size]
    if problems:
        more = f" and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise ModelSourceError(
            f"{shown} does not match its {MANIFEST_NAME}: {'; '.join(problems[:SHOWN_PROBLEMS])}{more}",
            field="model_data", value=shown, hint=_REUPLOAD)


def _check_fit(text: bytes, plan: Plan, shown: str) -> None:
    """The artifact's serving.properties was written for the plan's tp, n_positions, dtype and batch size."""
    try:
        built = parse_properties(text.decode("utf-8"))
    except (UnicodeDecodeError, PropertiesError) as exc:
        raise ModelSourceError(f"{shown}{SERVING_PROPERTIES} cannot be read: {exc}", field="model_data",
                               value=shown) from None
    wanted = plan.serving_properties
    differ = [(field, built.get(PROPERTY_BY_FIELD[field].key), wanted.get(PROPERTY_BY_FIELD[field].key))
              for field in FITTED_FIELDS
              if built.get(PROPERTY_BY_FIELD[field].key) != wanted.get(PROPERTY_BY_FIELD[field].key)]
    if differ:
        theirs = ", ".join(f"{field} {value}" for field, value, _ in differ)
        ours = ", ".join(f"{field} {value}" for field, _, value in differ)
        raise ConfigError(f"the artifact at {shown} was built for {theirs}; this deployment plans {ours}",
                          field="model_data", value=shown,
                          hint="set the same values (e.g. --tp-degree, --n-positions, --dtype, --batch-size) "
                               "or package an artifact for this plan")
