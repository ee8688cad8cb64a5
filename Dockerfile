# The mesh in one container (supervisord inside, as with `make run`). Redis, Prometheus and Grafana come from
# docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN python -m venv .venv && .venv/bin/pip install --no-cache-dir -e .
ENV MESH_HOST=0.0.0.0 MESH_REDIS_URL=redis://redis:6379/0
# the dashboard; each service's /metrics (feed 7101 ... narrator 7106, strategy workers from 7110)
EXPOSE 7100-7106 7110-7119
CMD [".venv/bin/mesh", "up"]
