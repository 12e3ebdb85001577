"""Descriptions of the deployment spec fields, kept free of heavy imports.

The pydantic model in ``spec.py`` and the CLI flags both take their help from
here, so ``inf2-deploy --help`` needs no pydantic and the two cannot drift.
"""
from __future__ import annotations

from inf2_serving.contract import DTYPE_NAMES, ROLLING_BATCH_OFF, ROLLING_BATCH_ON

__all__ = ["FIELD_DESCRIPTIONS", "INSTANCE_TYPES", "DTYPES", "DEFAULT_LMI_VERSION", "ROLLING_BATCH_CHOICES",
           "SCALING_DESCRIPTIONS", "SCALING_METRICS"]

DEFAULT_LMI_VERSION = "0.29.0"
INSTANCE_TYPES = ("ml.inf2.xlarge", "ml.inf2.8xlarge", "ml.inf2.24xlarge", "ml.inf2.48xlarge")
DTYPES = DTYPE_NAMES
ROLLING_BATCH_CHOICES = (ROLLING_BATCH_ON, ROLLING_BATCH_OFF)
#: scaling.metric -> Application Auto Scaling's PredefinedMetricType
SCALING_METRICS = {
    "concurrency": "SageMakerVariantConcurrentRequestsPerModelHighResolution",
    "invocations": "SageMakerVariantInvocationsPerInstance",
}

SCALING_DESCRIPTIONS: dict[str, str] = {
    "min_instances": "Fewest instances autoscaling keeps (at least 1 for a real-time endpoint).",
    "max_instances": "Most instances autoscaling may start; above 1, requests go to the least busy instance.",
    "metric": (
        "What autoscaling tracks: concurrency (requests queued or streaming per instance, every 10 s) or "
        "invocations (requests per minute per instance)."
    ),
    "target": (
        "Target value of the metric per instance. Default for concurrency: 0.75 x batch_size; invocations "
        "needs it, or from_bench."
    ),
    "from_bench": (
        "A bench --out JSON file: the invocations target becomes 0.5 x the requests per minute per instance "
        "at the knee (the highest concurrency whose p50 TTFT is within 2x the lowest level's)."
    ),
    "scale_in_cooldown": "Seconds after a scale-in before another scale-in.",
    "scale_out_cooldown": "Seconds after a scale-out before another scale-out.",
}

FIELD_DESCRIPTIONS: dict[str, str] = {
    "model": (
        'What to deploy: the alias gpt-j-6b or tiny-gptj, a Hugging Face id (owner/name), a local '
        'checkpoint folder, or an s3:// prefix holding one (copied into the cache, like a Hub checkpoint, '
        'before it is converted).'
    ),
    "endpoint_name": (
        'SageMaker endpoint name: letters, digits and hyphens, at most 63 characters. Default: '
        'derived from the model.'
    ),
    "region": (
        'AWS region. Default: the standard AWS resolution (AWS_REGION, profile).'
    ),
    "instance_type": (
        'ml.inf2.xlarge, ml.inf2.8xlarge, ml.inf2.24xlarge or ml.inf2.48xlarge. Default: the '
        'cheapest that fits.'
    ),
    "instance_count": (
        'Instances behind the endpoint.'
    ),
    "tensor_parallel_degree": (
        'NeuronCores that share the model (tp). Must divide the attention heads. Default: the '
        'largest that fits the instance, so that the NeuronCores it pays for do the work.'
    ),
    "n_positions": (
        'Longest sequence (prompt + generated tokens) the compiled graphs accept. Default: the '
        "model's maximum, capped at 1024."
    ),
    "batch_size": (
        "Compiled batch size: the requests generated together. With the rolling batch, the slots a request "
        "joins at the next generation step; with rolling_batch disable, "
        "DJL's dynamic batch, which waits up to 100 ms to fill and runs to its longest request."
    ),
    "rolling_batch": (
        f"{ROLLING_BATCH_ON}: DJL's rolling batch, so a request starts at the next generation step while "
        f"others run (option.rolling_batch={ROLLING_BATCH_ON}, option.max_rolling_batch_size=max(batch_size, "
        "32): requests beyond the slots queue for one). "
        f"{ROLLING_BATCH_OFF}: DJL's dynamic batching (batch_size, max_batch_delay) and static batches."
    ),
    "dtype": (
        "Weight and compute type on the NeuronCores (LMI's option.dtype)."
    ),
    "role_arn": (
        'IAM role the endpoint runs as (arn:aws:iam::ACCOUNT:role/NAME). Required to deploy.'
    ),
    "bucket": (
        'S3 bucket for the artifact. Default: sagemaker-REGION-ACCOUNT, created if absent.'
    ),
    "prefix": (
        'S3 key prefix under which artifacts are stored.'
    ),
    "kms_key_id": (
        "KMS key for the uploads' server-side encryption, the endpoint's storage volume (the endpoint "
        "config's KmsKeyId, as the SageMaker SDK's kms_key) and captured data. Default: SSE-S3 (AES256) "
        "and SageMaker's own volume key."
    ),
    "lmi_version": (
        "LMI (djl-inference) neuronx image version, looked up in the SageMaker SDK's registry."
    ),
    "image_uri": (
        'Serving image URI; overrides the lmi_version lookup.'
    ),
    "model_loading_timeout": (
        'Seconds DJL allows the handler to load and compile the model.'
    ),
    "startup_health_check_timeout": (
        'ContainerStartupHealthCheckTimeoutInSeconds: Neuron compilation happens inside it.'
    ),
    "model_download_timeout": (
        'ModelDataDownloadTimeoutInSeconds for the weights.'
    ),
    "volume_size_gb": (
        'Endpoint storage volume in GB. Default: sized from the artifact.'
    ),
    "inference_ami_version": (
        'InferenceAmiVersion of the production variant, e.g. al2-ami-sagemaker-inference-neuron-2.'
    ),
    "compile_cache_url": (
        'NEURON_COMPILE_CACHE_URL for the container. Default: s3://BUCKET/PREFIX/neuron-cache/.'
    ),
    "neuron_cc_flags": (
        'Extra neuronx-cc flags (NEURON_CC_FLAGS).'
    ),
    "subnets": (
        'VPC subnet ids for the model (VpcConfig).'
    ),
    "security_group_ids": (
        'VPC security group ids for the model.'
    ),
    "enable_network_isolation": (
        'Run the container without network access.'
    ),
    "env": (
        'Extra environment variables for the container.'
    ),
    "tags": (
        'Extra tags on every resource created. A redeploy that changes them updates the endpoint and its '
        'config in place (AddTags/DeleteTags), nothing else.'
    ),
    "data_capture_uri": (
        "s3:// prefix where the endpoint captures requests and responses (DataCaptureConfig, JSON and "
        "JSON lines as text). Default: no capture."
    ),
    "capture_percent": (
        "Percent of requests captured (InitialSamplingPercentage), 1-100; needs data_capture_uri. "
        "Default: 20, as the SageMaker SDK's DataCaptureConfig."
    ),
    "price_per_hour": (
        'Instance price in USD per hour, overriding the reference price.'
    ),
    "scaling": (
        "Autoscaling after deploy: min_instances, max_instances, metric (concurrency or invocations), target, "
        "from_bench, scale_in_cooldown (900), scale_out_cooldown (300). Default: none, a fixed instance_count."
    ),
    **{f"scaling.{name}": text for name, text in SCALING_DESCRIPTIONS.items()},
}
