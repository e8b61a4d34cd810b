# The image every hpoq service runs: producer CLI, workers, Flower and the MLflow server.
# Everything is pinned: the base image; torch at the version the `train` extra asks for, in
# its CUDA 13.0 build (the build PyPI ships for Linux; the host's NVIDIA driver must support
# CUDA 13.0); every other Python package at the version the test suite runs with
# (docker/constraints.txt, written by scripts/image_constraints.py).
FROM python:3.11.14-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY config ./config
COPY docker ./docker
RUN pip install --constraint docker/constraints.txt '.[train,monitor,server]'

# The code stays root-owned; what the services write (outputs with their data, model and
# checkpoint caches, the Hugging Face cache, MLflow's artifact store) belongs to the
# unprivileged user that runs them. Named volumes mounted there start with this ownership.
RUN useradd --create-home --uid 1000 hpoq \
    && mkdir -p /outputs/huggingface /mlartifacts \
    && chown -R hpoq:hpoq /outputs /mlartifacts
ENV HPOQ_OUTPUT_DIR=/outputs HF_HOME=/outputs/huggingface
USER hpoq
WORKDIR /home/hpoq
ENTRYPOINT ["hpoq"]
