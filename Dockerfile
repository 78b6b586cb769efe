# One image for the API and the workers; the frontend is built in its own stage.
#
# torch is installed first, pinned, from the index TORCH_INDEX names: the CPU build by default
# (the API and the CPU worker), a CUDA build for GPU workers, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t attrivue-gpu .
# docker-compose.yml builds both images. `pip install .` then finds torch==2.13.0 installed
# and keeps it (PyPI's Linux wheel would be a CUDA build with several GB of libraries).
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md alembic.ini ./
COPY alembic/ alembic/
COPY attrivue_client/ attrivue_client/
COPY attrivue_core/ attrivue_core/
COPY backend/ backend/
COPY worker/ worker/
RUN pip install -e . && python -c "import torch; assert torch.__version__.startswith('2.13.0')"
COPY --from=frontend /src/frontend/dist frontend/dist
# An unprivileged user; on an NFS data volume, give uid 1000 write access to the export.
RUN useradd --uid 1000 --create-home attrivue && mkdir -p /data && chown attrivue /data
USER attrivue
ENV ATTRIVUE_DATA_DIR=/data ATTRIVUE_HOST=0.0.0.0 ATTRIVUE_FRONTEND_DIR=/app/frontend/dist
VOLUME /data
EXPOSE 8000
CMD ["attrivue", "serve", "--no-worker"]
