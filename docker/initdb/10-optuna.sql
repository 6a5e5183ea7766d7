-- Runs once, when the postgres volume is first initialised (POSTGRES_DB creates "mlflow").
-- MLflow and Optuna both keep an alembic_version table, so each gets its own database.
CREATE DATABASE optuna;
