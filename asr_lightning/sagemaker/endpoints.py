"""Real-time endpoints: deploy a ``model.tar.gz``, autoscale it, invoke it with an audio file.

Deployment uses the SDK v3 ``Session`` (``create_model``, ``create_endpoint_config``,
``create_endpoint``) with the PyTorch inference container, which runs
``code/inference.py`` from the model archive. The v3 SDK has no autoscaling API, so
:func:`attach_autoscaling` calls the ``application-autoscaling`` service through boto3;
:func:`invoke` calls ``sagemaker-runtime`` through boto3.
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr_lightning.artifacts import CODE_SUBDIR
from asr_lightning.errors import ConfigError
from asr_lightning.sagemaker.jobs import AwsTarget, pytorch_image, sagemaker_session
from asr_lightning.sagemaker.model_dir import HANDLER

log = logging.getLogger(__name__)

INFERENCE_FRAMEWORK_VERSION = "2.6.0"
VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"
#: Content type sent for an audio file, by suffix.
CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".webm": "audio/webm",
    ".m4a": "audio/mp4",
    ".json": "application/json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class DeployOptions:
    """A real-time endpoint serving one model archive."""

    model_data: str
    """``s3://.../model.tar.gz``, or a local model dir / ``.tar.gz`` to upload first."""
    endpoint_name: str
    """Endpoint name (also names the model and the endpoint config)."""
    instance_type: str = "ml.g5.xlarge"
    """Inference instance type."""
    instance_count: int = 1
    """Instances at start (autoscaling may change it)."""
    image_uri: str | None = None
    """Inference image; default the SageMaker PyTorch inference container for the region."""


@dataclass(frozen=True)
class AutoscaleOptions:
    """Target tracking on invocations per instance."""

    endpoint_name: str
    """The endpoint to scale."""
    min_capacity: int = 1
    """Fewest instances."""
    max_capacity: int = 4
    """Most instances."""
    target_invocations: float = 100.0
    """Invocations per instance per minute to hold."""
    variant: str = VARIANT
    """Production variant to scale."""
    scale_in_cooldown_s: int = 300
    """Seconds after a scale-in before the next."""
    scale_out_cooldown_s: int = 60
    """Seconds after a scale-out before the next."""


def content_type_for(path: str | Path) -> str:
    return CONTENT_TYPES.get(Path(path).suffix.lower(), DEFAULT_CONTENT_TYPE)


def upload_model(model_data: str, target: AwsTarget, session: Any, name: str) -> str:
    """The S3 URI of the model archive, uploading a local dir or archive first."""
    if model_data.startswith("s3://"):
        return model_data
    path = Path(model_data)
    if not path.exists():
        raise ConfigError(f"model data {model_data!r} is neither an s3:// URI nor a local path")
    bucket = target.bucket or session.default_bucket()
    key = f"{target.prefix}/models/{name}/model.tar.gz"
    s3 = session.boto_session.client("s3")
    if path.is_file():
        s3.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"
    if not (path / CODE_SUBDIR / HANDLER).is_file():
        log.warning(
            "%s has no %s/%s: the container will not know how to serve it",
            path,
            CODE_SUBDIR,
            HANDLER,
        )
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for child in sorted(path.iterdir()):
                tar.add(child, arcname=child.name)
        s3.upload_file(str(archive), bucket, key)
    return f"s3://{bucket}/{key}"


def inference_image(options: DeployOptions, region: str) -> str:
    return pytorch_image(
        options.image_uri, options.instance_type, region, INFERENCE_FRAMEWORK_VERSION, "inference"
    )


def deploy(options: DeployOptions, target: AwsTarget, wait: bool = False) -> str:
    """Creates the model, endpoint config and endpoint; returns the endpoint name."""
    session = sagemaker_session(target)
    region = session.boto_region_name
    name = options.endpoint_name
    model_url = upload_model(options.model_data, target, session, name)
    # v3 Session calls rather than sagemaker.core.resources' create(), which re-reads each
    # resource and rejects the empty VpcConfig / DataCaptureConfig that moto returns
    session.create_model(
        name=name,
        role=target.role,
        primary_container={
            "Image": inference_image(options, region),
            "ModelDataUrl": model_url,
            "Environment": {
                # the PyTorch inference toolkit runs code/inference.py of the archive
                "SAGEMAKER_PROGRAM": HANDLER,
                "SAGEMAKER_SUBMIT_DIRECTORY": f"/opt/ml/model/{CODE_SUBDIR}",
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                "SAGEMAKER_REGION": region,
            },
        },
    )
    session.create_endpoint_config(
        name=name,
        production_variants=[
            {
                "VariantName": VARIANT,
                "ModelName": name,
                "InitialInstanceCount": options.instance_count,
                "InstanceType": options.instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    session.create_endpoint(endpoint_name=name, config_name=name, wait=wait)
    log.info("endpoint %s created from %s", name, model_url)
    return name


def attach_autoscaling(options: AutoscaleOptions, target: AwsTarget) -> str:
    """Registers the variant as a scalable target with a target-tracking policy; returns the
    policy ARN."""
    if not 1 <= options.min_capacity <= options.max_capacity:
        raise ConfigError(
            f"need 1 <= min_capacity <= max_capacity, got {options.min_capacity} and "
            f"{options.max_capacity}"
        )
    session = sagemaker_session(target)
    client = session.boto_session.client("application-autoscaling")
    resource_id = f"endpoint/{options.endpoint_name}/variant/{options.variant}"
    client.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=options.min_capacity,
        MaxCapacity=options.max_capacity,
    )
    response = client.put_scaling_policy(
        PolicyName=f"{options.endpoint_name}-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": options.target_invocations,
            "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
            "ScaleInCooldown": options.scale_in_cooldown_s,
            "ScaleOutCooldown": options.scale_out_cooldown_s,
        },
    )
    return response["PolicyARN"]


def invoke(
    endpoint_name: str,
    audio: str | Path,
    target: AwsTarget,
    content_type: str | None = None,
    accept: str = "application/json",
) -> bytes:
    """Sends a file to the endpoint; returns the response body."""
    path = Path(audio)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file")
    session = sagemaker_session(target)
    runtime = session.boto_session.client("sagemaker-runtime")
    response = runtime.invoke_endpoint(
        EndpointName=endpoint_name,
        Body=path.read_bytes(),
        ContentType=content_type or content_type_for(path),
        Accept=accept,
    )
    return response["Body"].read()
