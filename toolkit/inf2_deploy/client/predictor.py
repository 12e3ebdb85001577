"""Invoke a deployed model: a SageMaker endpoint (:class:`Predictor`) or a local server (:class:`LocalPredictor`).

Both speak the LMI/TGI schema: the request is ``{"inputs", "parameters", "stream"}``
and the answer ``{"generated_text", "details"?}``; a stream is JSON lines of
``{"token": {"id", "text"}}`` whose last line also carries ``generated_text``.
They share one interface::

    predictor.generate("Hello", max_new_tokens=20)          # -> str
    predictor.generate("Hello", details=True)               # -> the response dict
    predictor.generate_batch(["a", "b"])                    # -> [str, str]
    for text in predictor.stream("Hello"): ...              # token texts as they arrive
    for line in predictor.stream_events("Hello"): ...       # every parsed JSON line
    predictor.predict({"inputs": "Hello"})                  # the request dict in, the response dict out
    predictor.invoke(b"...", content_type="text/csv")      # bytes as is, as InvokeEndpoint sends them

and :meth:`Predictor.delete_endpoint` deletes the endpoint as ``inf2-deploy delete`` does.

Generation parameters are checked on the client, so a typo fails with a
:class:`~inf2_deploy.errors.ConfigError` before a paid call. Every error the
endpoint answers with, whatever the transport, is an
:class:`~inf2_deploy.errors.InvocationError` carrying the HTTP status.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from ..errors import ConfigError, CredentialsError, EndpointNotFoundError, InvocationError
from ..spec.validators import check_endpoint_name
from .invocation import CUSTOM_ATTRIBUTES_HEADER, JSON_LINES_TYPE, JSON_TYPE, InvokeResponse, PredictorBase, error_text

__all__ = ["DEFAULT_LOCAL_TIMEOUT", "LocalPredictor", "Predictor", "runtime_client"]

DEFAULT_LOCAL_TIMEOUT = 300.0
"""Seconds LocalPredictor waits for an answer (or for the next streamed bytes)."""


# --- SageMaker -----------------------------------------------------------------------------------------


def _aws_session(region: str | None, session: Any) -> Any:
    """Our :class:`~inf2_deploy.aws.session.Session` from what the caller gave."""
    from ..aws.session import Session, make_session

    if session is None:
        return make_session(region)
    if isinstance(session, Session):
        return session
    region = region or session.region_name  # a boto3.Session
    if not region:
        raise CredentialsError("no AWS region configured", field="region", hint="pass --region or set AWS_REGION")
    return Session(session, region)


def runtime_client(*, region: str | None = None, session: Any = None) -> Any:
    """The ``sagemaker-runtime`` client, from :mod:`inf2_deploy.aws.session` (adaptive retries).

    Args:
        region: the region; default: the session's, else the standard AWS resolution.
        session: an :class:`inf2_deploy.aws.session.Session` or a ``boto3.Session``; default: a new one.
            ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``) are honoured by botocore.

    Raises:
        CredentialsError: no region or no credentials could be found.
    """
    return _aws_session(region, session).client("sagemaker-runtime")


def _aws_error(exc: Exception, endpoint_name: str) -> Exception:
    """Our error for a botocore exception raised by an invocation (or while streaming)."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(f"no usable AWS credentials: {exc}",
                                hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if not isinstance(exc, ClientError):
        from ..aws.session import last_call

        return InvocationError(f"{last_call() or 'sagemaker-runtime'} {endpoint_name} failed: {type(exc).__name__}: "
                               f"{exc}", hint="the network failed after botocore's retries; try again")
    response = exc.response
    error = response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message") or str(exc)
    metadata = response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode")
    hint = None
    if code == "ModelError":
        # The container's own answer: its status and (LMI) {"error", "code"} body.
        status = response.get("OriginalStatusCode", status)
        message = error_text(response.get("OriginalMessage"))[0] or message
    elif code in ("ModelStreamError", "InternalStreamFailure"):
        message = f"{code}: {message}"
        status = status if status and status >= 400 else 500
    elif code == "ValidationError" and "not found" in message.lower():
        return EndpointNotFoundError(f"{endpoint_name}: {message}", code="NotFound", field="name",
                                     value=endpoint_name, hint="see `inf2-deploy list`",
                                     request_id=metadata.get("RequestId"))
    elif code == "ModelNotReadyException":
        hint = f"the model is still loading; inf2-deploy status {endpoint_name}"
    return InvocationError(f"{endpoint_name}: {message}", status=status, hint=hint,
                           request_id=metadata.get("RequestId"))


class Predictor(PredictorBase):
    """Invoke a SageMaker endpoint running the LMI container.

    Args:
        endpoint_name: the SageMaker endpoint name.
        region: the AWS region; default: the session's, else the standard AWS resolution.
        session: an :class:`inf2_deploy.aws.session.Session` or a ``boto3.Session`` to create the client from.
        client: a ready ``sagemaker-runtime`` client (tests pass a stubbed one);
            ``region`` and ``session`` are then ignored.

    Raises:
        ConfigError: the endpoint name is not a valid SageMaker name.
        CredentialsError: no region or no credentials could be found.
    """

    def __init__(
        self,
        endpoint_name: str,
        region: str | None = None,
        session: Any = None,
        *,
        client: Any = None,
    ) -> None:
        self.endpoint_name = check_endpoint_name(endpoint_name, "endpoint_name")
        self._owns_client = client is None
        self._client = client if client is not None else runtime_client(region=region, session=session)
        self._session = session  # for delete_endpoint's SageMaker calls

    def __repr__(self) -> str:
        return f"Predictor({self.endpoint_name!r}, region={self._client.meta.region_name!r})"

    def _invoke(self, body: bytes, content_type: str, accept: str | None, custom_attributes: str | None,
                target_variant: str | None) -> InvokeResponse:
        from botocore.exceptions import BotoCoreError, ClientError

        optional = {"Accept": accept, "CustomAttributes": custom_attributes, "TargetVariant": target_variant}
        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType=content_type,
                **{key: value for key, value in optional.items() if value is not None})
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, self.endpoint_name) from None
        return InvokeResponse(data, response.get("ContentType"), response.get("CustomAttributes"),
                              response.get("InvokedProductionVariant"))

    def _post_stream(self, payload: bytes) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint_with_response_stream(
                EndpointName=self.endpoint_name, Body=payload, ContentType=JSON_TYPE, Accept=JSON_LINES_TYPE)
            events = response["Body"]
            try:
                # Errors inside the stream arrive either as modeled events or, from botocore's
                # event-stream parser, as an EventStreamError (a ClientError) while iterating.
                for event in events:
                    if "PayloadPart" in event:
                        yield event["PayloadPart"].get("Bytes", b"")
                    for kind in ("ModelStreamError", "InternalStreamFailure"):
                        if kind in event:
                            detail = event[kind]
                            raise InvocationError(
                                f"{self.endpoint_name}: {kind}: {detail.get('Message') or 'no message'}",
                                status=500, value=detail.get("ErrorCode"))
            finally:
                events.close()  # frees the connection when the caller stops early
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, self.endpoint_name) from None

    def delete_endpoint(self, *, purge_artifacts: bool = False, wait: bool = False) -> list[str]:
        """Delete the endpoint, its endpoint config and model(s): the teardown of ``inf2-deploy delete``.

        Args:
            purge_artifacts: also delete the artifact in S3 that no other live model uses.
            wait: when the endpoint is still Creating or Updating, wait for it to settle first.

        Returns:
            What was deleted, one item per resource.

        Raises:
            EndpointNotFoundError: no such endpoint and nothing left of one.
            AwsError: the endpoint is busy and ``wait`` is false, or a call failed.
        """
        from ..aws.teardown import delete_deployment

        session = _aws_session(self._client.meta.region_name, self._session)
        return list(delete_deployment(self.endpoint_name, purge_artifacts=purge_artifacts, wait=wait,
                                      session=session))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


# --- local HTTP -----------------------------------------------------------------------------------------


class LocalPredictor(PredictorBase):
    """Invoke an LMI-compatible HTTP server, such as ``inf2-deploy serve`` or ``deploy --local``.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``; requests go to ``{url}/invocations``.
        name: the local deployment's name (shown in errors); default: the URL.
        timeout: seconds to wait for an answer or for the next streamed bytes.
        client: an ``httpx.Client`` to send with (tests pass one with a mock transport).

    Raises:
        ConfigError: the URL is not an http(s) URL.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_LOCAL_TIMEOUT,
        client: httpx.Client | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("must be an http:// or https:// URL", field="url", value=url)
        self.url = url.rstrip("/")
        self.endpoint_name = name or self.url
        self._owns_client = client is None
        self._http = client if client is not None else httpx.Client(timeout=httpx.Timeout(timeout, connect=10))

    def __repr__(self) -> str:
        return f"LocalPredictor({self.url!r})"

    def _unreachable(self, exc: httpx.TransportError) -> InvocationError:
        return InvocationError(f"cannot reach {self.url}: {exc or type(exc).__name__}",
                               hint="is the server running? inf2-deploy list shows local deployments")

    def _http_error(self, response: httpx.Response) -> InvocationError:
        message, _code = error_text(response.content)
        return InvocationError(f"{self.endpoint_name}: {message or response.reason_phrase}",
                               status=response.status_code)

    def _invoke(self, body: bytes, content_type: str, accept: str | None, custom_attributes: str | None,
                target_variant: str | None) -> InvokeResponse:
        if target_variant is not None:
            raise ConfigError("applies to SageMaker endpoints only; a local server has one model",
                              field="target_variant", value=target_variant)
        optional = {"Accept": accept, CUSTOM_ATTRIBUTES_HEADER: custom_attributes}
        headers = {"Content-Type": content_type, **{key: value for key, value in optional.items() if value is not None}}
        try:
            response = self._http.post(f"{self.url}/invocations", content=body, headers=headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._http_error(response)
        return InvokeResponse(response.content, response.headers.get("content-type"),
                              response.headers.get(CUSTOM_ATTRIBUTES_HEADER))

    def _post_stream(self, payload: bytes) -> Iterator[bytes]:
        try:
            with self._http.stream("POST", f"{self.url}/invocations", content=payload,
                                   headers={"Content-Type": JSON_TYPE, "Accept": JSON_LINES_TYPE}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._http_error(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        if self._owns_client:
            self._http.close()
