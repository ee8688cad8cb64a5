# The mesh in one container (supervisord inside, as with `make run`). Redis comes from docker-compose.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN python -m venv .venv && .venv/bin/pip install --no-cache-dir -e .
ENV MESH_HOST=0.0.0.0 MESH_REDIS_URL=redis://redis:6379/0
EXPOSE 7100
CMD [".venv/bin/mesh", "up"]
