"""The model's code for MLflow's "models from code": MLflow copies this file into the logged model and
runs it on load, instead of unpickling a Python object (no pickle in the model, nothing opaque to review).
Importable only where ``forecast`` and ``mlflow`` are installed.
"""

from mlflow.models import set_model

from forecast.export.mlflow_model import ForecastPyfunc

set_model(ForecastPyfunc())
