"""``asr-lightning sagemaker train|tune|deploy|autoscale|invoke`` against a moto server.

Each test runs the command in-process and asserts on the API payloads that reached the server
(moto's request recorder), not on what the code meant to send.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

pytest.importorskip("sagemaker.train", reason="needs the sagemaker extra (SDK v3)")
pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")

import boto3  # noqa: E402

from asr_lightning.cli import main  # noqa: E402
from tests.sagemaker.conftest import BUCKET, REGION, ROLE, Moto  # noqa: E402

AWS = ["--region", REGION, "--bucket", BUCKET, "--prefix", "runs"]
TRAIN = [
    "--role",
    ROLE,
    "--train",
    f"s3://{BUCKET}/an4/train",
    "--eval",
    f"s3://{BUCKET}/an4/eval",
    "--instance-type",
    "ml.g4dn.12xlarge",
    "--instance-count",
    "2",
    "-H",
    "learning_rate=0.0003",
    "-H",
    "trainer.max_epochs=30",
]


def _one(moto: Moto, target: str) -> dict:
    calls = moto.calls(target)
    assert len(calls) == 1, f"{target}: {len(calls)} calls"
    return calls[0]


def test_train_sends_spot_checkpoints_torchrun_metrics_and_channels(moto_server: Moto) -> None:
    moto_server.start_recording()
    args = [
        "sagemaker",
        "train",
        *AWS,
        *TRAIN,
        "--spot",
        "--max-run",
        "3600",
        "--checkpoint-s3-uri",
        f"s3://{BUCKET}/ckpt/job1",
        "--lm",
        f"s3://{BUCKET}/an4/lm",
    ]
    assert main(args) == 0
    job = _one(moto_server, "SageMaker.CreateTrainingJob")
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.12xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/ckpt/job1",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["HyperParameters"] == {
        "learning_rate": "0.0003",
        "trainer.max_epochs": "30",
        "config": "configs/quickstart.yaml",
    }
    metrics = {m["Name"]: m["Regex"] for m in job["AlgorithmSpecification"]["MetricDefinitions"]}
    assert metrics["eval_wer"] == "eval_wer=([0-9.]+)"
    assert "pytorch-training" in job["AlgorithmSpecification"]["TrainingImage"]
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
    }
    assert channels["train"] == f"s3://{BUCKET}/an4/train"
    assert channels["eval"] == f"s3://{BUCKET}/an4/eval"
    assert channels["lm"] == f"s3://{BUCKET}/an4/lm"
    # the source tree and ModelTrainer's torchrun driver travel as channels, uploaded to S3
    s3 = boto3.client("s3", region_name=REGION)
    code = channels["code"].removeprefix(f"s3://{BUCKET}/")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=code)["Contents"]}
    assert f"{code}/sagemaker_entry/train.py" in keys
    assert f"{code}/requirements.txt" in keys
    drivers = channels["sm_drivers"].removeprefix(f"s3://{BUCKET}/")
    distributed = s3.get_object(Bucket=BUCKET, Key=f"{drivers}/distributed.json")["Body"].read()
    assert "process_count_per_node" in json.loads(distributed)


def test_train_without_spot_has_no_max_wait(moto_server: Moto) -> None:
    moto_server.start_recording()
    assert main(["sagemaker", "train", *AWS, *TRAIN[:8]]) == 0
    job = _one(moto_server, "SageMaker.CreateTrainingJob")
    assert not job.get("EnableManagedSpotTraining")
    assert "MaxWaitTimeInSeconds" not in job["StoppingCondition"]
    assert job["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/runs/")


def test_tune_minimises_eval_wer_over_learning_rate_and_batch_size(moto_server: Moto) -> None:
    moto_server.start_recording()
    args = [
        "sagemaker",
        "tune",
        *AWS,
        *TRAIN,
        "--learning-rate-range",
        "1e-5",
        "1e-3",
        "--batch-size-range",
        "4",
        "16",
        "--max-jobs",
        "6",
        "--max-parallel-jobs",
        "3",
    ]
    assert main(args) == 0
    tuning = _one(moto_server, "SageMaker.CreateHyperParameterTuningJob")
    config = tuning["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "eval_wer",
    }
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 3
    ranges = config["ParameterRanges"]
    (lr,) = ranges["ContinuousParameterRanges"]
    assert (lr["Name"], float(lr["MinValue"]), float(lr["MaxValue"])) == (
        "learning_rate",
        1e-5,
        1e-3,
    )
    assert lr["ScalingType"] == "Logarithmic"
    (batch,) = ranges["IntegerParameterRanges"]
    assert (batch["Name"], batch["MinValue"], batch["MaxValue"]) == ("batch_size", "4", "16")
    definition = tuning["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static["trainer.max_epochs"] == "30" and "learning_rate" not in static
    metrics = {m["Name"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert "eval_wer" in metrics
    assert definition["ResourceConfig"]["InstanceType"] == "ml.g4dn.12xlarge"


def _model_dir(root: Path) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text("# handler\n")
    (root / "hf_model").mkdir()
    (root / "hf_model" / "config.json").write_text("{}")
    return root


def test_deploy_autoscale_and_invoke(moto_server: Moto, tmp_path: Path) -> None:
    moto_server.start_recording()
    model_dir = _model_dir(tmp_path / "model")
    args = [
        "sagemaker",
        "deploy",
        str(model_dir),
        *AWS,
        "--role",
        ROLE,
        "--endpoint-name",
        "asr-test",
        "--instance-type",
        "ml.g4dn.xlarge",
    ]
    assert main(args) == 0
    model = _one(moto_server, "SageMaker.CreateModel")
    container = model["PrimaryContainer"]
    assert model["ExecutionRoleArn"] == ROLE
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/runs/models/asr-test/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "pytorch-inference" in container["Image"]
    (variant,) = _one(moto_server, "SageMaker.CreateEndpointConfig")["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g4dn.xlarge" and variant["ModelName"] == "asr-test"
    endpoint = _one(moto_server, "SageMaker.CreateEndpoint")
    assert (endpoint["EndpointName"], endpoint["EndpointConfigName"]) == ("asr-test", "asr-test")
    s3 = boto3.client("s3", region_name=REGION)
    head = s3.head_object(Bucket=BUCKET, Key="runs/models/asr-test/model.tar.gz")
    assert head["ContentLength"] > 0

    args = [
        "sagemaker",
        "autoscale",
        *AWS,
        "--endpoint-name",
        "asr-test",
        "--min-capacity",
        "1",
        "--max-capacity",
        "3",
        "--target-invocations",
        "70",
    ]
    assert main(args) == 0
    target = _one(moto_server, "RegisterScalableTarget")
    assert target == {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/asr-test/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": 1,
        "MaxCapacity": 3,
    }
    policy = _one(moto_server, "PutScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 70.0
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }

    audio = tmp_path / "clip.wav"
    audio.write_bytes(b"RIFF0000WAVEfmt ")
    assert main(["sagemaker", "invoke", *AWS, str(audio), "--endpoint-name", "asr-test"]) == 0
    (request,) = [
        r for r in moto_server.requests() if "/endpoints/asr-test/invocations" in r["url"]
    ]
    assert request["headers"]["Content-Type"] == "audio/wav"
    body = request["body"]
    assert (base64.b64decode(body) if request["body_encoded"] else body.encode()) == (
        audio.read_bytes()
    )


def test_invoke_refuses_a_missing_file(moto_server: Moto, tmp_path: Path) -> None:
    args = ["sagemaker", "invoke", *AWS, str(tmp_path / "none.wav"), "--endpoint-name", "x"]
    assert main(args) == 2


@pytest.mark.parametrize("bad", ["learning_rate", "=3"])
def test_hyperparameter_must_be_key_value(bad: str) -> None:
    with pytest.raises(SystemExit):
        main(["sagemaker", "train", "--role", ROLE, "--train", "s3://b/t", "-H", bad])
