"""MLflow "model from code" entry of `flexo-moe`: the served model is this code plus safetensors, never a pickle."""

import mlflow
from tasks.registry.serving import FlexoMoEPyfunc

mlflow.models.set_model(FlexoMoEPyfunc())
