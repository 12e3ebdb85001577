"""Shared fixtures for the serving tests: one CPU artifact and handler per session, local servers on a real
socket, the stand-ins, and a recorder of model steps. The tiny-gptj checkpoint is tests/conftest.py's."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import standin_packages
from support.artifacts import write_artifact
from support.servers import uvicorn_thread


@pytest.fixture(scope="session")
def sharp_gptj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-gptj with weight matrices of std 0.16: logits sharp enough that a wrong attention mask shows."""
    from inf2_deploy.artifact.tiny import build_tiny_gptj

    return build_tiny_gptj(tmp_path_factory.mktemp("models") / "sharp-gptj", init_std=0.16)


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory, tiny_gptj: Path) -> Path:
    return write_artifact(
        tmp_path_factory.mktemp("artifacts") / "tiny-gptj-cpu", tiny_gptj,
        backend="cpu", n_positions="128", dtype="fp32", model_level={"batch_size": "4", "max_batch_delay": "200"},
    )


@pytest.fixture(scope="session")
def cpu_handler(artifact: Path):
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving.handler import ModelHandler

    handler = ModelHandler()
    handler.initialize(load_artifact_properties(artifact))
    return handler


@pytest.fixture(scope="session")
def reference(tiny_gptj: Path) -> Callable[[str, int], str]:
    """Greedy continuation straight from transformers, unbatched: the ground truth."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gptj)
    model = AutoModelForCausalLM.from_pretrained(tiny_gptj).eval()

    def generate(prompt: str, max_new_tokens: int) -> str:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


@pytest.fixture
def standins() -> Iterator[Path]:
    """Put the djl_python and Neuron stand-ins (support.standins) on sys.path for one test; yields their folder."""
    with standin_packages.on_path() as folder:
        yield folder


@contextlib.contextmanager
def running_server(artifact: Path, handler, max_batch_delay_ms: float = 500) -> Iterator[str]:
    """The local server for ``artifact`` over ``handler`` on a real socket, in a thread; yields its URL."""
    from inf2_deploy.local.server import create_app

    with uvicorn_thread(create_app(artifact, backend=None, handler=handler,
                                   max_batch_delay_ms=max_batch_delay_ms)) as url:
        yield url


@pytest.fixture
def serve():
    """``serve(properties_folder, weights, handler, **options)``: a context manager yielding the URL of the
    local server over ``handler``, with an artifact folder written for ``weights`` and ``options``."""
    @contextlib.contextmanager
    def start(folder: Path, weights: Path, handler, **options: str) -> Iterator[str]:
        with running_server(write_artifact(folder, weights, **options), handler) as url:
            yield url

    return start


@pytest.fixture(scope="module")
def live_server(artifact, cpu_handler):
    """The local server on a real socket over the session's handler; batches wait up to 500 ms to fill."""
    with running_server(artifact, cpu_handler) as url:
        yield url


@pytest.fixture(scope="module")
def long_server(tmp_path_factory: pytest.TempPathFactory, tiny_gptj: Path):
    """A server with its own handler for 200-token streams (n_positions 256); yields (URL, handler)."""
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving.handler import ModelHandler

    artifact = write_artifact(
        tmp_path_factory.mktemp("artifacts") / "tiny-gptj-long", tiny_gptj,
        backend="cpu", n_positions="256", dtype="fp32", model_level={"batch_size": "4", "max_batch_delay": "300"},
    )
    handler = ModelHandler()
    handler.initialize(load_artifact_properties(artifact))
    with running_server(artifact, handler, max_batch_delay_ms=300) as url:
        yield url, handler


@dataclass
class StepLog:
    """Each ``backend.generate`` call's steps: when each ended and the per-row done flags after it."""

    runs: list[list[tuple[float, list[bool]]]] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        """Model steps per generate call."""
        return [len(run) for run in self.runs]


@pytest.fixture
def record_steps(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StepLog]:
    """``record_steps(backend, delay=0.0)`` counts the steps of each generation of ``backend``.

    Each step is seen where the engine's observer sees it (the backend's stopping rule), so a
    generation that stops early shows fewer steps. ``delay`` seconds are slept per step to
    make a tiny model as slow as a real one, so that a client can act mid-generation.
    """
    def install(backend, delay: float = 0.0) -> StepLog:
        log = StepLog()
        original = backend.generate

        def generate(input_ids, attention_mask, params, max_new_tokens, observer):
            steps: list[tuple[float, list[bool]]] = []
            log.runs.append(steps)
            real_on_step = observer.on_step

            def on_step(tokens):
                time.sleep(delay)
                done = real_on_step(tokens)
                steps.append((time.monotonic(), list(done)))
                return done

            observer.on_step = on_step  # the backend calls the instance attribute
            return original(input_ids, attention_mask, params, max_new_tokens, observer)

        monkeypatch.setattr(backend, "generate", generate)
        return log

    return install


@pytest.fixture
def fail_mid_generation(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``fail_mid_generation(backend)``: each generation of ``backend`` runs two real steps, which reach
    the clients, then raises RuntimeError("device lost"), as a device lost mid-batch would."""
    def install(backend) -> None:
        original = backend.generate

        def fails_after_two_steps(input_ids, attention_mask, params, max_new_tokens, observer):
            original(input_ids, attention_mask, params, 2, observer)
            raise RuntimeError("device lost")

        monkeypatch.setattr(backend, "generate", fails_after_two_steps)

    return install
