"""``asr-lightning sagemaker train|tune|deploy|autoscale|invoke``: argparse over ``jobs`` and
``endpoints``. Instance types, role, bucket and region are arguments; nothing names an account.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asr_lightning.errors import ConfigError
from asr_lightning.sagemaker import endpoints, jobs

REPO_ROOT = Path(__file__).resolve().parents[2]


def _aws_args(parser: argparse.ArgumentParser, role: bool) -> None:
    parser.add_argument("--region", help="AWS region (default: the AWS configuration's)")
    parser.add_argument(
        "--role", required=role, help="IAM execution role ARN that SageMaker assumes"
    )
    parser.add_argument("--bucket", help="S3 bucket (default: SageMaker's default bucket)")
    parser.add_argument("--prefix", default="asr-lightning", help="S3 key prefix")


def _hyperparameter(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _train_args(parser: argparse.ArgumentParser) -> None:
    _aws_args(parser, role=True)
    parser.add_argument("--train", required=True, help="S3 URI of the train channel")
    parser.add_argument("--eval", help="S3 URI of the eval channel")
    parser.add_argument(
        "--lm", help="S3 URI of an LM channel (ARPA or KenLM file; -H lm_path=... picks one)"
    )
    parser.add_argument(
        "--config",
        default="configs/quickstart.yaml",
        help="LightningCLI YAML in the source tree (default %(default)s)",
    )
    parser.add_argument(
        "-H",
        "--hyperparameter",
        action="append",
        type=_hyperparameter,
        default=[],
        metavar="KEY=VALUE",
        help="learning_rate=1e-4, batch_size=16, trainer.max_epochs=30...",
    )
    parser.add_argument("--instance-type", default="ml.g5.xlarge")
    parser.add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="more than one trains with DDP through torchrun",
    )
    parser.add_argument("--processes-per-node", type=int, help="default: one per GPU")
    parser.add_argument("--volume-gb", type=int, default=100)
    parser.add_argument("--spot", action="store_true", help="managed spot training")
    parser.add_argument("--max-run", type=int, default=24 * 3600, help="seconds")
    parser.add_argument("--max-wait", type=int, help="seconds, spot only (default 2x max-run)")
    parser.add_argument("--checkpoint-s3-uri", help="default: one per job under the bucket")
    parser.add_argument("--image-uri", help="default: the SageMaker PyTorch training image")
    parser.add_argument("--job-name", default="asr-lightning", help="base job name")
    parser.add_argument("--wait", action="store_true", help="wait and stream the logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-lightning sagemaker",
        description="Train, tune, deploy, autoscale and invoke on Amazon SageMaker.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    _train_args(sub.add_parser("train", help="start a training job"))
    tune = sub.add_parser("tune", help="start a tuning job minimising eval_wer")
    _train_args(tune)
    tune.add_argument(
        "--learning-rate-range", type=float, nargs=2, default=(1e-5, 1e-3), metavar=("MIN", "MAX")
    )
    tune.add_argument(
        "--batch-size-range", type=int, nargs=2, default=(8, 32), metavar=("MIN", "MAX")
    )
    tune.add_argument("--max-jobs", type=int, default=8)
    tune.add_argument("--max-parallel-jobs", type=int, default=2)
    tune.add_argument(
        "--strategy", default="Bayesian", choices=["Bayesian", "Random", "Hyperband", "Grid"]
    )

    deploy = sub.add_parser("deploy", help="create a real-time endpoint from a model.tar.gz")
    _aws_args(deploy, role=True)
    deploy.add_argument("model_data", help="s3://.../model.tar.gz, or a local model dir/archive")
    deploy.add_argument("--endpoint-name", required=True)
    deploy.add_argument("--instance-type", default="ml.g5.xlarge")
    deploy.add_argument("--instance-count", type=int, default=1)
    deploy.add_argument("--image-uri", help="default: the SageMaker PyTorch inference image")
    deploy.add_argument("--wait", action="store_true", help="wait until InService")

    scale = sub.add_parser("autoscale", help="target-tracking autoscaling on invocations")
    _aws_args(scale, role=False)
    scale.add_argument("--endpoint-name", required=True)
    scale.add_argument("--variant", default=endpoints.VARIANT)
    scale.add_argument("--min-capacity", type=int, default=1)
    scale.add_argument("--max-capacity", type=int, default=4)
    scale.add_argument(
        "--target-invocations",
        type=float,
        default=100.0,
        help="invocations per instance per minute (default %(default)s)",
    )

    invoke = sub.add_parser("invoke", help="send an audio file to an endpoint")
    _aws_args(invoke, role=False)
    invoke.add_argument("file", type=Path)
    invoke.add_argument("--endpoint-name", required=True)
    invoke.add_argument("--content-type", help="default: from the file's suffix")
    invoke.add_argument("--accept", default="application/json")
    return parser


def _train_options(args: argparse.Namespace) -> jobs.TrainOptions:
    return jobs.TrainOptions(
        train=args.train,
        eval=args.eval,
        lm=args.lm,
        config=args.config,
        hyperparameters=dict(args.hyperparameter),
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        processes_per_node=args.processes_per_node,
        volume_gb=args.volume_gb,
        spot=args.spot,
        max_run_s=args.max_run,
        max_wait_s=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3_uri,
        image_uri=args.image_uri,
        job_name=args.job_name,
    )


def sagemaker_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    target = jobs.AwsTarget(
        role=getattr(args, "role", None),
        region=args.region,
        bucket=args.bucket,
        prefix=args.prefix,
    )
    if args.action == "train":
        name = jobs.start_training(_train_options(args), target, REPO_ROOT, wait=args.wait)
        print(f"training job: {name}")
    elif args.action == "tune":
        tuning = jobs.TuneOptions(
            learning_rate=tuple(args.learning_rate_range),
            batch_size=tuple(args.batch_size_range),
            max_jobs=args.max_jobs,
            max_parallel_jobs=args.max_parallel_jobs,
            strategy=args.strategy,
        )
        name = jobs.start_tuning(_train_options(args), tuning, target, REPO_ROOT, wait=args.wait)
        print(f"tuning job: {name}")
    elif args.action == "deploy":
        options = endpoints.DeployOptions(
            model_data=args.model_data,
            endpoint_name=args.endpoint_name,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            image_uri=args.image_uri,
        )
        print(f"endpoint: {endpoints.deploy(options, target, wait=args.wait)}")
    elif args.action == "autoscale":
        options = endpoints.AutoscaleOptions(
            endpoint_name=args.endpoint_name,
            variant=args.variant,
            min_capacity=args.min_capacity,
            max_capacity=args.max_capacity,
            target_invocations=args.target_invocations,
        )
        print(f"scaling policy: {endpoints.attach_autoscaling(options, target)}")
    else:
        if not args.file.is_file():
            raise ConfigError(f"{args.file} is not a file")
        body = endpoints.invoke(
            args.endpoint_name, args.file, target, args.content_type, args.accept
        )
        print(body.decode("utf-8", errors="replace"))
    return 0
