# realtime-relay: slim, non-root image. Media is UDP: publish the relay's ICE ports
# (or run with host networking), set RELAY_ICE_ADDRESSES to the address browsers reach.
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    RELAY_HOST=0.0.0.0 RELAY_PORT=8080 RELAY_WEB_ROOT=/app/web

WORKDIR /app
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY web ./web
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home /app relay \
    && mkdir -p /app/recordings && chown relay /app/recordings

USER relay
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["realtime-relay"]
CMD ["serve"]
