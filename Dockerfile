# oauthq image: every binary (oauthq-intake, oauthq-worker, oauthq-webhooks,
# oauthqctl, oauthq-provider-sim) on Debian bookworm. Used by compose.yaml.
# Not buildable on the development machines (no Docker engine there); kept
# in step with the Makefile and the binaries' command lines by review.

FROM debian:bookworm-slim AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        build-essential pkg-config git ca-certificates \
        librdkafka-dev libcurl4-openssl-dev libcjson-dev libsqlite3-dev \
        libmicrohttpd-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" all

FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        librdkafka1 libcurl4 libcjson1 libsqlite3-0 libmicrohttpd12 libssl3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/oauthq --create-home oauthq
COPY --from=build /src/build/oauthq-* /src/build/oauthqctl /usr/local/bin/
USER oauthq
WORKDIR /var/lib/oauthq
ENV OAUTHQ_DATA_DIR=/var/lib/oauthq/data
CMD ["oauthqctl", "--help"]
