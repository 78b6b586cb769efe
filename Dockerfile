# One image for the backend and the workers. The frontend is built in its own stage.
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
WORKDIR /app
# A CUDA build of the pinned torch for GPU workers (pass TORCH_INDEX=.../cpu for CPU only).
RUN pip install --no-cache-dir torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md alembic.ini ./
COPY alembic/ alembic/
COPY backend/ backend/
COPY worker/ worker/
RUN pip install --no-cache-dir -e .
COPY --from=frontend /src/frontend/dist frontend/dist
ENV ATTRIVUE_DATA_DIR=/data ATTRIVUE_HOST=0.0.0.0
VOLUME /data
EXPOSE 8000
CMD ["attrivue", "serve", "--no-worker"]
