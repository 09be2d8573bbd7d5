# lorabox: one image for the API and the GPU worker (the command picks the role).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LORABOX_HOME=/data \
    LORABOX_MODELS_DIR=/models

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY api ./api
COPY worker ./worker
COPY trainer ./trainer
COPY migrations ./migrations
COPY alembic.ini ./
# torch comes from the base image (CUDA build); pip keeps it because it satisfies the bound.
RUN pip install .

VOLUME ["/data", "/models"]
EXPOSE 8000
CMD ["lorabox", "api", "--host", "0.0.0.0", "--port", "8000"]
