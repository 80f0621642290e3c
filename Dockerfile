# One image for every Tenure service; the command chooses which one runs.
#   docker run tenure uvicorn --factory services.profile.app:create_app --host 0.0.0.0 --port 8101
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY tenure_cli ./tenure_cli
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 tenure
USER 10001
EXPOSE 8100 8101 8102 8103 8104
CMD ["tenure", "--help"]
