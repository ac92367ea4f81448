# Paddock images: one build, two binaries: hub-api (package paddock: the hub with its
# in-process worker) and hub-worker.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# llama.cpp (vendored by llama-cpp-sys-2) builds with cmake; its bindings need libclang.
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --bin hub-api --bin hub-worker
# OpenVINO's runtime libraries (CPU plugin, ONNX frontend, TBB) from the PyPI wheel, for
# the workers' fastest engine; only unzipped, nothing is pip-installed.
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip \
    && scripts/worker/fetch-openvino.sh /src/engines

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libgomp1 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hub-api /src/target/release/hub-worker /usr/local/bin/
COPY --from=build /src/engines/openvino-2026.4.1/openvino/libs /opt/openvino/
ENV PADDOCK_OPENVINO_LIB=/opt/openvino
RUN useradd --system --home /var/lib/paddock --create-home paddock
USER paddock
WORKDIR /var/lib/paddock
EXPOSE 8080
ENTRYPOINT ["hub-api"]
