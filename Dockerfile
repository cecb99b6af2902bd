# The light image: catalogue, API and CLI (no torch).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
COPY workers ./workers
COPY schema ./schema
RUN pip install --no-cache-dir -c constraints.txt .
EXPOSE 8000
CMD ["circat", "serve", "--host", "0.0.0.0", "--port", "8000"]
