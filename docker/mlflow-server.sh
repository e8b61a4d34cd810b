#!/bin/sh
# MLflow tracking server with basic auth, serving the artifact store, as the compose
# `mlflow` service runs it. The auth config is written from the environment at start, so
# no credential lives in the image or the repository.
#
# Environment (docker-compose.yml sets it):
#   MLFLOW_BACKEND_STORE_URI, MLFLOW_AUTH_DB_URI   runs, and users and permissions
#   MLFLOW_ADMIN_USER, MLFLOW_ADMIN_PASSWORD       the admin the auth store starts with
#   MLFLOW_FLASK_SERVER_SECRET_KEY                 signs the auth app's CSRF tokens
#   MLFLOW_PUBLIC_HOSTS   host[:port] names producers and browsers use (Host header), comma-
#                         separated; workers use mlflow:5000, always allowed
#   MLFLOW_ARTIFACTS_DESTINATION (/mlartifacts), MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000)
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
: "${MLFLOW_AUTH_DB_URI:?set MLFLOW_AUTH_DB_URI}"
: "${MLFLOW_ADMIN_USER:?set MLFLOW_ADMIN_USER}"
: "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY: the auth app signs its CSRF tokens with it}"
: "${MLFLOW_PUBLIC_HOSTS:?set MLFLOW_PUBLIC_HOSTS: the host:port names clients use to reach MLflow}"

# MLflow answers 403 to a Host header it does not know (DNS rebinding protection), and
# refuses state-changing browser requests from origins it does not know.
allowed_hosts="mlflow:5000,localhost:5000,127.0.0.1:5000,${MLFLOW_PUBLIC_HOSTS}"
allowed_origins=$(printf '%s' "${MLFLOW_PUBLIC_HOSTS}" | sed 's#[^,][^,]*#http://&,https://&#g')

umask 077
auth_config=$(mktemp)
cat > "${auth_config}" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DB_URI}
admin_username = ${MLFLOW_ADMIN_USER}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="${auth_config}"
exec mlflow server --app-name basic-auth \
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI}" \
  --serve-artifacts --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}" \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --allowed-hosts "${allowed_hosts}" \
  --cors-allowed-origins "${allowed_origins}"
