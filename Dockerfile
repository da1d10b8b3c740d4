# A bring-your-own SageMaker container (and a local service) around `asr-lightning serve`.
# UNTESTED: the development machine has no Docker engine; the same steps are tested without
# Docker (see README, "Serving"). SageMaker runs `docker run IMAGE serve`, unpacks model.tar.gz
# into /opt/ml/model and talks to port 8080 (GET /ping, POST /invocations).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/asr-lightning
COPY pyproject.toml README.md ./
COPY asr_lightning ./asr_lightning
# CPU wheels of torch; pin what you tested (for GPU images start from a CUDA/PyTorch base)
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.4,<3" \
    && pip install --no-cache-dir .

ENV ASR_LIGHTNING_SERVE_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["asr-lightning"]
CMD ["serve"]
