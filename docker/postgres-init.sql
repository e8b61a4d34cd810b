-- The MLflow database comes from POSTGRES_DB; Optuna and MLflow's auth store get their own.
CREATE DATABASE optuna OWNER hpoq;
CREATE DATABASE mlflow_auth OWNER hpoq;
