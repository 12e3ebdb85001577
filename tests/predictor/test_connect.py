"""``connect``: a URL, a local deployment name or a SageMaker endpoint name, tried in that order."""
from __future__ import annotations

import pytest
from inf2_deploy import connect
from inf2_deploy.client.predictor import LocalPredictor, Predictor
from inf2_deploy.errors import ConfigError


def test_url_gives_a_local_predictor():
    predictor = connect("http://127.0.0.1:9/")
    assert isinstance(predictor, LocalPredictor) and predictor.url == "http://127.0.0.1:9"


def test_unknown_name_is_a_sagemaker_endpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    predictor = connect("gptj-prod", region="us-west-2")
    assert isinstance(predictor, Predictor) and predictor.endpoint_name == "gptj-prod"


def test_invalid_name_names_the_field(monkeypatch, tmp_path):
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path))
    with pytest.raises(ConfigError):
        connect("not a name", region="us-west-2")
