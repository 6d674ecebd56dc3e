"""Spark: explain a whole table with a saved context (``pip install 'shapley-svc[spark]'``).

``explain_dataframe(df, context, feature_columns, prediction_columns)`` adds the attributions,
their uncertainty and the base value to a Spark DataFrame with ``mapInArrow``. The context's
saved bytes are broadcast once and loaded once per Python worker. Zero-shot, no model is
shipped or called; given ``model=`` and ``budget=``, the caller's model is pickled, shipped
like the context and called on each slice's proposed rows to refine them. pyspark is imported
only here (``dataframe.py``, when called); ``_worker.py`` is what the workers run and needs
pyarrow and pandas alone.
"""

from shapley_svc.spark.dataframe import LAYOUTS, explain_dataframe

__all__ = ["LAYOUTS", "explain_dataframe"]
