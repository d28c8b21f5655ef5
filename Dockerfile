# authcached image for people with a registry: build on Debian 12, run on debian:12-slim with only the
# runtime libraries, as a non-root user. `make image` builds the same image offline (deploy/image/).
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential pkg-config liburing-dev libssl-dev libxxhash-dev libjemalloc-dev libjwt-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make build/authcached build/authcache

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        liburing2 libssl3 libxxhash0 libjemalloc2 libjwt0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd -g 65532 authcache && useradd -u 65532 -g 65532 -M -s /usr/sbin/nologin authcache
COPY --from=build /src/build/authcached /src/build/authcache /usr/bin/
USER 65532:65532
EXPOSE 9300 9301
ENTRYPOINT ["/usr/bin/authcached"]
