"""AWS sessions and clients, and the translation of AWS errors into ours.

Clients use adaptive retries (client-side rate limiting plus up to 10 retries)
because deploys poll DescribeEndpoint and CloudWatch Logs for up to an hour and
share account-wide API rate limits with everything else in the account.
Credentials, region and endpoint URLs follow the standard AWS resolution;
botocore itself honours ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``
(botocore >= 1.31), which is how tests point the toolkit at a local moto server.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from ..errors import AwsError, CredentialsError
from ..version import __version__

__all__ = ["CLIENT_CONFIG", "Session", "make_session", "aws_errors", "error_code", "is_not_found", "last_call",
           "translate_botocore_error"]

CLIENT_CONFIG = Config(
    # botocore counts max_attempts as retries after the first call: 11 calls in all.
    retries={"mode": "adaptive", "max_attempts": 10},
    user_agent_extra=f"inf2-deploy/{__version__}",
)
_NETWORK_HINT = ("the network failed after botocore's retries; run the command again (deploy and upload resume "
                 "where they stopped), or check the network, the region and AWS_ENDPOINT_URL")
# The most recent AWS operation any of our clients started, as "service:Operation". A
# BotoCoreError (a timeout, a reset connection) does not say which call it interrupted,
# so the one-line error takes it from here.
_last_call: list[str] = []


def _remember_call(model: Any, **kwargs: Any) -> None:
    _last_call[:] = [f"{model.service_model.service_name}:{model.name}"]


# A connection cut right after the status line reaches botocore as a complete answer with
# no headers and no body: an empty "success" (a KeyError later) or an error with no code.
# Every real AWS answer has headers, so such an answer is retried like a reset connection,
# and reported as one once these retries are spent.
_CUT_ANSWER_RETRIES = 2


def _cut(http_response: Any) -> bool:
    # raw is the answer read off the wire; a canned answer (botocore's Stubber) has none.
    return http_response is not None and http_response.raw is not None and not http_response.headers


def _retry_cut_answer(response: Any, attempts: int, **kwargs: Any) -> float | None:
    if response is not None and _cut(response[0]) and attempts <= _CUT_ANSWER_RETRIES:
        return 0.1 * attempts
    return None


def _reject_cut_answer(http_response: Any, model: Any, **kwargs: Any) -> None:
    if _cut(http_response):
        action = f"{model.service_model.service_name}:{model.name}"
        raise AwsError(f"{action} failed: the answer ended after its status line (the connection was cut)",
                       code="IncompleteAnswer", hint=_NETWORK_HINT)


def last_call() -> str | None:
    """``service:Operation`` of the latest call our clients made, if any."""
    return _last_call[0] if _last_call else None


_CREDENTIALS_HINT = (
    "configure credentials with `aws configure`, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


class Session:
    """A boto3 session bound to one region, handing out cached clients.

    Args:
        boto_session: the underlying ``boto3.Session``; its credentials are used as given.
        region: the region every client talks to.
    """

    def __init__(self, boto_session: boto3.Session, region: str) -> None:
        self.boto_session = boto_session
        self.region = region
        self._clients: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Session(region={self.region!r})"

    def client(self, service: str) -> Any:
        """The (cached) boto3 client for ``service`` with adaptive retries."""
        if service not in self._clients:
            client = self.boto_session.client(service, region_name=self.region, config=CLIENT_CONFIG)
            client.meta.events.register("before-call", _remember_call)
            client.meta.events.register("needs-retry", _retry_cut_answer)
            client.meta.events.register("after-call", _reject_cut_answer)
            self._clients[service] = client
        return self._clients[service]

    @functools.cached_property
    def account_id(self) -> str:
        """The 12-digit account id of the caller, from STS."""
        with aws_errors("sts:GetCallerIdentity"):
            return self.client("sts").get_caller_identity()["Account"]

    def default_bucket(self) -> str:
        """``sagemaker-<region>-<account>``, the SageMaker SDK's default bucket name."""
        return f"sagemaker-{self.region}-{self.account_id}"


def make_session(region: str | None = None, *, profile: str | None = None) -> Session:
    """A session from the standard credential and region resolution.

    Args:
        region: overrides the configured region.
        profile: a named profile from the AWS config files.

    Raises:
        CredentialsError: no region or no credentials could be found (one line, with the fix).
    """
    try:
        boto_session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as exc:
        raise CredentialsError(str(exc), field="profile", value=profile, hint=_CREDENTIALS_HINT) from None
    if not boto_session.region_name:
        raise CredentialsError(
            "no AWS region configured", field="region", hint="pass --region or set AWS_REGION"
        )
    if boto_session.get_credentials() is None:
        raise CredentialsError("no AWS credentials found", hint=_CREDENTIALS_HINT)
    return Session(boto_session, boto_session.region_name)


def _request_id(exc: ClientError) -> str | None:
    metadata = exc.response.get("ResponseMetadata", {})
    return metadata.get("RequestId") or metadata.get("HTTPHeaders", {}).get("x-amz-request-id")


def error_code(exc: ClientError) -> str:
    """The AWS error code of ``exc``, e.g. ``ValidationException`` or ``404``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_not_found(exc: ClientError) -> bool:
    """True when ``exc`` says the resource does not exist.

    SageMaker answers a missing endpoint, config or model with a
    ``ValidationException`` whose message starts "Could not find"; S3 and
    CloudWatch Logs use proper codes.
    """
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return (
        code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "ResourceNotFoundException")
        or (code == "ValidationException" and message.startswith("Could not find"))
    )


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn botocore's exceptions raised inside the block into ``AwsError``/``CredentialsError``.

    Args:
        action: what was being done, e.g. ``sagemaker:CreateModel``; starts the message.
    """
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        error_class = CredentialsError if code in ("ExpiredToken", "InvalidClientTokenId") else AwsError
        raise error_class(
            f"{action} failed: {code}: {message}", code=code, request_id=_request_id(exc)
        ) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise CredentialsError(f"{action} failed: {exc}", hint=_CREDENTIALS_HINT) from exc
    except NoRegionError as exc:
        raise CredentialsError(f"{action} failed: {exc}", field="region", hint="set AWS_REGION") from exc
    except EndpointConnectionError as exc:
        raise AwsError(f"{action} failed: {exc}", hint="check the network, the region and AWS_ENDPOINT_URL") from exc
    except BotoCoreError as exc:
        raise AwsError(f"{action} failed: {type(exc).__name__}: {exc}", hint=_NETWORK_HINT) from exc


def translate_botocore_error(exc: BaseException) -> AwsError | None:
    """Our one-line error for a botocore exception that escaped every ``aws_errors`` block, else None.

    The message names the service and operation (from the exception, or from the
    latest call our clients made) and a hint; the original is chained as ``__cause__``.
    """
    if isinstance(exc, ClientError):
        action = f"{(last_call() or 'aws:').split(':')[0]}:{exc.operation_name}"
    elif isinstance(exc, BotoCoreError):
        action = last_call() or "an AWS call"
    else:
        return None
    try:
        with aws_errors(action):
            raise exc
    except AwsError as translated:
        return translated
