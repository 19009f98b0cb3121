# The ML serving mesh image: every service (`ml-serving-mesh`, MESH_SERVICES chooses which),
# the retraining worker (`ml-serving-retraining-worker`) and the Pipeline's feature views.
#
#   docker build -t ml-serving-mesh:0.1.0 .                                  # the mesh (last stage)
#   docker build --target mlflow -t ml-serving-mlflow:3.17.2 .               # MLflow for k8s/mlflow
#   docker build --build-arg TRAINER_PACKAGES="torch==2.13.0 torch-model-archiver==0.12.0" ...
#                                          # workers that train the demo model (a CPU torch build)
#
# Dependencies are the pinned ones of constraints.txt; the dev extra (test tools, Envoy, TorchServe)
# is not installed. Runs as UID/GID 10001, the runAsUser of the manifests in k8s/.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject.toml's packages.find has four roots: server, clients, gen (the generated protobuf
# code: mnbara, inference, org) and tools; each is copied to the same place so all are found.
COPY pyproject.toml constraints.txt ./
COPY server/ server/
COPY clients/ clients/
COPY gen/ gen/
COPY tools/ tools/
ARG TRAINER_PACKAGES=""
RUN pip install -c constraints.txt . ${TRAINER_PACKAGES}

FROM ${PYTHON_IMAGE} AS mlflow
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
COPY constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt mlflow psycopg2-binary boto3 \
    && groupadd --gid 10001 mlflow && useradd --uid 10001 --gid 10001 --no-create-home mlflow
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1"]

FROM ${PYTHON_IMAGE} AS mesh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PIPELINE_FEATURE_VIEWS_DIR=/app/features
RUN groupadd --gid 10001 mesh && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mesh
COPY --from=builder /opt/venv /opt/venv
COPY features/ /app/features/
WORKDIR /app
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["ml-serving-mesh"]
