# The API image is light (catalogue, API, CLI; no torch); build with --build-arg EXTRAS=worker for
# the GPU worker image (torch, TransformerLens).
FROM python:3.11-slim
ARG EXTRAS=""
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
COPY workers ./workers
COPY circat ./circat
COPY schema ./schema
RUN pip install --no-cache-dir -c constraints.txt ".${EXTRAS:+[$EXTRAS]}"
EXPOSE 8000
CMD ["circat", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
