"""Stand-ins at the AWS boundary for the deploy tests: status scripts, call counting, an observer, a session."""
from __future__ import annotations

import itertools

from support.aws import ACCOUNT, REGION


def status_script_for(client, statuses: list[str], failure_reason: str | None = None) -> list[str]:
    """Make DescribeEndpoint answers walk through ``statuses`` (the last one repeats).

    moto's endpoints are InService at once; real ones spend 10-60 minutes in
    Creating. The parsed answer is rewritten after the call, so everything else
    about the endpoint comes from moto. Returns the list of statuses served.
    """
    served: list[str] = []
    source = itertools.chain(statuses, itertools.repeat(statuses[-1]))

    def rewrite(parsed: dict, **kwargs: object) -> None:
        if "EndpointStatus" in parsed:
            parsed["EndpointStatus"] = next(source)
            served.append(parsed["EndpointStatus"])
            if parsed["EndpointStatus"] == "Failed" and failure_reason:
                parsed["FailureReason"] = failure_reason

    client.meta.events.register("after-call.sagemaker.DescribeEndpoint", rewrite)
    return served


class CallCounter:
    """Counts API calls made by clients, by operation name (before they are sent)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, model, params, **kwargs: object) -> None:
        self.calls.append((model.name, params))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def params(self, name: str) -> list[dict]:
        return [params for call, params in self.calls if call == name]


def count_calls(*clients) -> CallCounter:
    counter = CallCounter()
    for client in clients:
        client.meta.events.register("provide-client-params", counter)
    return counter


class RecordingObserver:
    """A DeployObserver that keeps everything it is told, in order."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, int, str]] = []
        self.statuses: list[tuple[object, float]] = []
        self.lines: list[str] = []
        self.events: list[str] = []

    def on_progress(self, done: int, total: int, label: str) -> None:
        self.progress.append((done, total, label))

    def on_status(self, status, elapsed: float) -> None:  # noqa: ANN001 - a DeploymentStatus
        self.statuses.append((status, elapsed))

    def on_log(self, line) -> None:  # noqa: ANN001 - a LogLine
        self.lines.append(line.message)

    def on_event(self, message: str) -> None:
        self.events.append(message)


class ClientsSession:
    """What a Deployer uses of inf2_deploy's Session, handing out the clients given (e.g. under a Stubber)."""

    def __init__(self, region: str = REGION, account: str = ACCOUNT, **clients: object) -> None:
        self.region = region
        self.account = account
        self._clients = clients

    def client(self, service: str):  # noqa: ANN201 - a boto3 client
        return self._clients[service]

    def default_bucket(self) -> str:
        return f"sagemaker-{self.region}-{self.account}"
