"""FlexOlmo's science in pure torch + transformers: no prefect, mlflow, dvc or great_expectations here."""
