"""A run's serving export as an MLflow model: raw text and encoded image bytes in, label and class
probabilities out, through the same SavedModel `mmpipe predict` calls (cleaning included)."""

from __future__ import annotations

import mlflow.pyfunc

SERVING_ARTIFACT = "serving"


class ServingModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: `predict` takes a DataFrame with `text` (str) and `image` (bytes) columns."""

    def load_context(self, context) -> None:
        import tensorflow as tf

        self.serving = tf.saved_model.load(context.artifacts[SERVING_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from mmpipe.serving.predict import predict_raw

        texts = [str(text) for text in model_input["text"]] if "text" in model_input else None
        images = [bytes(image) for image in model_input["image"]] if "image" in model_input else None
        out = predict_raw(self.serving, texts, images)
        return pd.DataFrame({"label": [label.decode() for label in out["label"]],
                             "probability": out["probabilities"].max(axis=1).astype(float)})


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "text"), ColSpec("binary", "image")]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability")]))
