"""The registered model: the checkpoint wrapped as an MLflow pyfunc, logged and registered in one call.

Scoring loads it through ``mlflow.pyfunc`` by its module path (``shopformer.model.pyfunc.ShopformerPyfunc``);
versions registered before the stage layout name ``shopformer.registry.ShopformerPyfunc``, which the
registry module still resolves to this class.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import mlflow
import pandas as pd


class ShopformerPyfunc(mlflow.pyfunc.PythonModel):
    """Scores snapshot rows: propensity, churn (calibrated), price_elasticity."""

    def load_context(self, context: Any) -> None:
        from shopformer.model.network import load_checkpoint

        self.model, self.config, self.extra = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from shopformer.model.inference import predict_frame

        got = predict_frame(self.model, model_input, calibrators=self.extra.get("calibrators"))
        return pd.DataFrame({k: got[k] for k in ("propensity", "churn", "price_elasticity")})


def requirements() -> list[str]:
    """What an MLflow-built environment installs to serve the model: this project at the exact version
    that logged it. A bare ``shopformer`` would let an index resolve any package of that name (a public
    one would win a dependency-confusion race); scoring itself runs in the project's own locked env."""
    return [f"shopformer=={version('shopformer')}"]


def log_model(checkpoint: str, registered_name: str) -> str:
    """Log the checkpoint as a pyfunc in the active run and register it; returns the new version."""
    from shopformer import tables  # here: serving this module must not import pyspark

    tables.before_registry_write("register_model", f"model {registered_name}")
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ShopformerPyfunc(),
        artifacts={"checkpoint": checkpoint},
        registered_model_name=registered_name,
        pip_requirements=requirements(),
    )
    return str(info.registered_model_version)
