#!/bin/sh
# MLflow tracking server with basic auth: the auth config is written from the environment
# at start, so no credential lives in the image or the repository.
set -eu
umask 077
cat > /tmp/basic_auth.ini <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DB_URI}
admin_username = ${MLFLOW_ADMIN_USER}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
exec mlflow server --app-name basic-auth \
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI}" \
  --artifacts-destination /mlartifacts --serve-artifacts \
  --host 0.0.0.0 --port 5000
