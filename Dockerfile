# Dreamcord for NVIDIA GPUs.
#   docker build -t dreamcord .
#   docker run -d --gpus all --init --stop-timeout 60 --env-file .env -e DATA_DIR=/data \
#     -v dreamcord-data:/data -v hf-cache:/hf-cache dreamcord
# or, simpler: `docker compose up -d` (compose.yaml). Step by step: docs/setup.md.
#
# Base image: only the driver hooks and `cuda>=` check of the NVIDIA base image are needed; the
# torch wheel brings its own CUDA runtime, cuBLAS and cuDNN as pip packages, so a `runtime` or
# `cudnn-runtime` base would only add gigabytes of unused copies. torch 2.13.0 from PyPI is built
# for CUDA 13.0, which needs a host driver of version 580 or newer. For an older driver, build with
# a CUDA 12 base and a matching PyTorch index (when PyTorch publishes that build of the version):
#   docker build --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t dreamcord .
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
FROM ${CUDA_IMAGE}

# Keep TORCH_VERSION equal to the default in scripts/setup.sh (tests/test_dockerfile.py checks it).
ARG TORCH_VERSION=2.13.0
# Empty: PyPI. Otherwise a PyTorch wheel index such as https://download.pytorch.org/whl/cu128.
ARG TORCH_INDEX_URL=
# EXTRAS=cuda adds xformers (then set ATTENTION=xformers); PyTorch's own SDPA needs nothing extra.
ARG EXTRAS=
# The user the bot runs as; --build-arg APP_UID=$(id -u) lets it share bind-mounted host folders.
ARG APP_UID=10001

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python 3.12, in a virtual environment (the system Python is externally managed).
# The distribution's packages are not version-pinned: their security updates should come in.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# torch pinned first, as scripts/setup.sh does, and kept as a constraint for every later install,
# so no dependency can move it.
RUN PIP_INDEX_URL="${TORCH_INDEX_URL:-https://pypi.org/simple}" pip install "torch==${TORCH_VERSION}" \
    && echo "torch==${TORCH_VERSION}" > /opt/constraints.txt

# Dependencies before the source: this layer is rebuilt only when pyproject.toml changes. The list
# (with EXTRAS) is read from pyproject.toml; the CLIP vocabulary ships inside the pipeline package.
WORKDIR /app
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [e for e in sys.argv[1].split(',') if e]; print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" "$EXTRAS" > /tmp/requirements.txt \
    && pip install -c /opt/constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY data ./data
COPY pipeline ./pipeline
RUN pip install --no-deps -c /opt/constraints.txt . \
    && rm -rf build ./*.egg-info \
    && dreamcord --help > /dev/null

# A user of its own; the volume folders are created with its ownership, so named volumes start
# out writable. (The base image's `ubuntu` user is removed so that APP_UID=1000 is free.)
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && groupadd --gid "${APP_UID}" dreamcord \
    && useradd --uid "${APP_UID}" --gid "${APP_UID}" --create-home --shell /usr/sbin/nologin dreamcord \
    && mkdir -p /data /hf-cache \
    && chown "${APP_UID}:${APP_UID}" /data /hf-cache

# Runtime files (database, images, LoRAs) and the Hugging Face model cache live on volumes.
# Set HF_HUB_OFFLINE=1 at run time once the model is in the cache, or when MODEL is a local
# .safetensors file or diffusers folder: start-up then never waits on the network.
ENV DATA_DIR=/data \
    HF_HOME=/hf-cache
VOLUME ["/data", "/hf-cache"]

# A writable working folder: `dreamcord generate` writes ./out, which then lands on the volume.
WORKDIR /data
USER ${APP_UID}:${APP_UID}

# Token, data folder and GPU, without loading the model. It starts a CUDA context for a moment,
# hence the long interval.
HEALTHCHECK --interval=2m --timeout=60s --start-period=5m --retries=3 \
    CMD ["dreamcord", "doctor", "--quick"]

# Exec form: `docker stop` sends SIGTERM straight to the Python process (no shell in between),
# which finishes or requeues the running batch and exits. Give it time: stop_grace_period in
# compose.yaml, or `docker stop -t 60`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dreamcord"]
CMD ["run"]
