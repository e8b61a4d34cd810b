# The image every hpoq service runs: producer CLI, workers, Flower and the MLflow server.
# CUDA-capable torch for GPU hosts; mirrors the README's install (torch first).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.5"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY config ./config
COPY docker ./docker
RUN pip install -e '.[train,monitor]' "mlflow[auth]"

RUN useradd --create-home --uid 1000 hpoq && mkdir -p /outputs /mlartifacts \
    && chown hpoq /outputs /mlartifacts
USER hpoq
ENTRYPOINT ["hpoq"]
