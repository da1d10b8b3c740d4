"""A moto server on 127.0.0.1 standing in for AWS, and its request recorder."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGION = "us-east-1"
BUCKET = "asr-lightning-test"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
#: SageMaker SDK defaults file opting out of telemetry (the SDK has no variable for it).
SDK_CONFIG = (
    "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
)


@dataclass
class Moto:
    """The running server: its URL, and what reached it since :meth:`start_recording`."""

    url: str

    def start_recording(self) -> None:
        import requests

        requests.post(f"{self.url}/moto-api/recorder/reset-recording", timeout=10)
        requests.post(f"{self.url}/moto-api/recorder/start-recording", timeout=10)

    def requests(self) -> list[dict]:
        import requests

        text = requests.get(f"{self.url}/moto-api/recorder/download-recording", timeout=10).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def calls(self, target: str) -> list[dict]:
        """JSON bodies of the recorded calls to ``target`` (e.g. ``SageMaker.CreateModel``)."""
        found = []
        for entry in self.requests():
            if entry["headers"].get("X-Amz-Target", "").endswith(target):
                body = entry["body"]
                if entry.get("body_encoded"):
                    body = base64.b64decode(body).decode("utf-8")
                found.append(json.loads(body))
        return found


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server with dummy credentials; the environment points every AWS client at it."""
    folder = tmp_path_factory.mktemp("moto")
    sdk_config = folder / "sagemaker-config.yaml"
    sdk_config.write_text(SDK_CONFIG)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(sdk_config),
        "MOTO_RECORDER_FILEPATH": str(folder / "recording.jsonl"),
    }
    saved = {key: os.environ.get(key) for key in [*env, "AWS_ENDPOINT_URL"]}
    os.environ.update(env)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = url
    import boto3

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    try:
        yield Moto(url)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
