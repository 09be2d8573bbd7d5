# lorabox: one image for the API and the GPU worker (the command picks the role).
# TORCH_VERSION is the Makefile's (tests/deploy/test_image.py checks they agree): the base
# image's CUDA build of that torch satisfies pyproject's bound, so `pip install` keeps it.
ARG TORCH_VERSION=2.13.0
FROM pytorch/pytorch:${TORCH_VERSION}-cuda12.8-cudnn9-runtime
ARG TORCH_VERSION

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LORABOX_HOME=/data \
    LORABOX_MODELS_DIR=/models

# Exactly what the wheel needs: pyproject's packages (tests/deploy/test_image.py builds and
# runs a wheel from these COPY lines alone, and checks every package is among them).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY cli ./cli
COPY client ./client
COPY clients/python/lorabox_client ./clients/python/lorabox_client
COPY core ./core
COPY migrations ./migrations
COPY trainer ./trainer
COPY worker ./worker
RUN pip install . \
 && python -c "import sys, torch; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '${TORCH_VERSION}' and torch.version.cuda else f'torch {torch.__version__}: not the CUDA ${TORCH_VERSION} build')" \
 && rm -rf /src

WORKDIR /data
VOLUME ["/data", "/models"]
EXPOSE 8000
CMD ["lorabox", "api", "--host", "0.0.0.0", "--port", "8000"]
