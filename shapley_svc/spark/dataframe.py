"""The driver's side: check the call against the context and the DataFrame's schema, ship the
saved context once, and add the attributions with ``mapInArrow``."""

import hashlib
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.refinement import minimum_budget
from shapley_svc.estimator.tables import label_kind
from shapley_svc.spark._worker import (
    BatchPlan,
    Refinement,
    ShippedContext,
    ShippedModel,
    explain_batches,
)

LAYOUTS = ("columns", "arrays")
# The saved directory's files, as ``ZeroShotExplainer.save`` writes them.
CONTEXT_FILES = ("manifest.json", "arrays.npz")
# The most model rows per explained row a refinement asks for, as the server's default
# --max-budget (``ContextLimits.max_budget``, which spark may not import; a test keeps the two
# equal): each model call takes at least one explained row's proposal, budget x d float64
# values (0.5 GB at d = 1,024).
MAX_BUDGET = 65_536
# How the saved context reaches the workers: "broadcast" (once per executor, then once per
# Python worker process) or "closure" (inside the pickled function: with every task).
SHIPPING = ("broadcast", "closure")


def _pyspark():
    try:
        import pyspark.sql.types as types
    except ImportError as error:
        raise ImportError(
            "shapley_svc.spark needs pyspark, pyarrow and pandas: pip install 'shapley-svc[spark]'"
        ) from error
    return types


def explain_dataframe(
    df,
    context,
    feature_columns: Sequence[str],
    prediction_columns: str | Sequence[str] | None = None,
    *,
    model: Callable[[np.ndarray], object] | None = None,
    budget: int | None = None,
    random_state: int | None = None,
    layout: str = "columns",
    prefix: str = "shap_",
    batch_rows: int | None = None,
    shipping: str | None = None,
):
    """Explain every row of a Spark DataFrame with a fitted context: zero-shot (no model calls)
    or, with ``model`` and ``budget``, refined with a few of your model's calls per row.

    Lazy, like any transformation: the rows are explained when an action runs, by
    ``mapInArrow`` over Arrow batches in Spark's Python workers (the table's other columns
    pass through as Arrow gives them, never converted). The saved context (its
    ``manifest.json`` and ``arrays.npz`` as bytes) is broadcast: it reaches each executor once
    and each Python worker process once, which loads it once (cached by its checksum).

    Parameters
    ----------
    df : pyspark.sql.DataFrame holding the rows to explain (and any other columns).
    context : a fitted ``ZeroShotExplainer``, or the directory it was saved into.
    feature_columns : the d columns of ``df`` that are the context's features, in the context's
        order. Numeric (nulls and NaN are missing values); a column the context coded from
        labels may also be string or boolean.
    prediction_columns : None, or the model's logged outputs: one column name for a
        single-output context, K names for K outputs. Given, each row's attributions add up
        exactly to its prediction minus the base value; a row whose prediction is null or NaN
        is explained without it.
    model : None, or your model as a function, called in the workers on the (rows, d) float64
        array of rows that ``ZeroShotExplainer.propose`` returns for a slice of a batch
        (columns in the context's order, coded columns as their codes, NaN for a missing
        value) and returning the outputs on them, (rows,) or (rows, K) on the scale of the
        context's predictions. It is pickled by cloudpickle (a fitted scikit-learn model's
        ``predict`` or a function closing over one travels as it is) and shipped as the
        context is (``shipping``), then unpickled once per Python worker process.
    budget : with ``model``, the most rows it scores per explained row (``propose``' budget:
        at least 4 with ``prediction_columns``, 5 without, at most ``MAX_BUDGET``; a row whose
        prediction is null needs 5, and a budget of 4 fails the job at that row).
    random_state : seeds the proposals (default: the context's); a row draws the same rows in
        whichever batch or slice it comes.
    layout : ``"columns"``: one double column per attribution, ``prefix + name``, its
        uncertainty ``prefix + "uncertainty_" + name`` and ``prefix + "base_value"``; with K > 1
        outputs every name ends in ``_out{k}``. ``"arrays"``: ``prefix + "values"`` and
        ``prefix + "uncertainty"`` (array<double> of P; with K outputs array<array<double>>,
        P arrays of K) and ``prefix + "base_value"`` (double; array<double> of K).
    prefix : what the added columns' names start with.
    batch_rows : None to explain each Arrow batch at once (``spark.sql.execution.arrow.
        maxRecordsPerBatch`` rows, 10,000 by default), or at most this many rows at a time.
    shipping : ``"broadcast"`` or ``"closure"``, which pickles the bytes (the context's, and
        the model's) into the function, so they travel with every task (measured in
        ``benchmarks/bench_spark.py``). Default (None): the broadcast, but on Spark Connect,
        which has no broadcast variables, the closure.

    Returns
    -------
    pyspark.sql.DataFrame : ``df``'s columns followed by the added ones.

    Raises ``InvalidArgumentError`` naming the argument, before any job runs, when a column is
    missing, of a type the context cannot take, the counts differ from the context's, an added
    column's name is taken, or ``model``, ``budget`` or ``random_state`` cannot refine.
    """
    types = _pyspark()
    if not all(hasattr(df, name) for name in ("schema", "mapInArrow", "sparkSession")):
        raise InvalidArgumentError("df", f"must be a pyspark.sql.DataFrame; got {type(df)}")
    explainer, files = _context(context)
    if layout not in LAYOUTS:
        raise InvalidArgumentError("layout", f"must be one of {LAYOUTS}; got {layout!r}")
    shipping = _shipping(df.sparkSession, shipping)
    if not isinstance(prefix, str):
        raise InvalidArgumentError("prefix", f"must be a string; got {prefix!r}")
    if batch_rows is not None and (
        not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1
    ):
        raise InvalidArgumentError(
            "batch_rows", f"must be None or a positive int; got {batch_rows!r}"
        )
    _check_arrow_types(df.schema)
    fields = {field.name: field for field in df.schema.fields}
    features = _columns("feature_columns", feature_columns, fields)
    if len(features) != explainer.n_features_in_:
        raise InvalidArgumentError(
            "feature_columns",
            f"names {len(features)} columns; the context was fitted on "
            f"{explainer.n_features_in_} features ({explainer.feature_names_})",
        )
    # Spark resolves names without regard to case unless told otherwise: an added 'shap_a'
    # beside a column 'SHAP_a' made every later reference to either ambiguous, and a table's
    # 'income' is the context's 'Income'.
    case_sensitive = df.sparkSession.conf.get("spark.sql.caseSensitive", "false") == "true"

    def key(name: str) -> str:
        return name if case_sensitive else name.lower()

    fitted = [key(name) for name in explainer.feature_names_]
    for position, column in enumerate(features):
        # Columns named after the context's features must stand where those features stand
        # (other names are the caller's mapping): a reordered table was explained by position
        # (also when only the case differed: Income explained as Age, off by 377 where the
        # values' RMS was 0.91).
        if key(column) in fitted and fitted[position] != key(column):
            raise InvalidArgumentError(
                "feature_columns",
                f"names {column!r} at position {position}, where the context has "
                f"{explainer.feature_names_[position]!r}; the context's features are "
                f"{explainer.feature_names_} (same order)",
            )
    for column, name in zip(features, explainer.feature_names_, strict=True):
        labels = explainer.categories_.get(name)
        _check_type(types, "feature_columns", fields[column], labels)
    predictions = None
    if prediction_columns is not None:
        if isinstance(prediction_columns, str):
            prediction_columns = [prediction_columns]
        predictions = _columns("prediction_columns", prediction_columns, fields)
        if len(predictions) != explainer.n_outputs_:
            raise InvalidArgumentError(
                "prediction_columns",
                f"names {len(predictions)} columns; the context has {explainer.n_outputs_} "
                "outputs (one column per output)",
            )
        for column in predictions:
            _check_type(types, "prediction_columns", fields[column], None)
    _check_refinement(explainer, model, budget, random_state, predictions is not None)
    counts = Counter(field.name for field in df.schema.fields)
    for argument, named in (("feature_columns", features), ("prediction_columns", predictions)):
        repeated = sorted({column for column in named or () if counts[column] > 1})
        if repeated:
            raise InvalidArgumentError(
                argument, f"names {repeated}, which df has more than once: rename them"
            )
    # mapInArrow reads its input columns by name, and Spark parses a name with a dot as a
    # struct's field ('Sepal.Length' could not be resolved, whichever column had it), and
    # cannot tell two columns of one name apart: the job runs on positional names, and the
    # caller's names are put back on its result.
    names = [field.name for field in df.schema.fields]
    stem = "_shapley_input_"
    plan = _plan(explainer, features, predictions, layout, prefix, batch_rows, df.sparkSession)
    while any(name.startswith(stem) for name in plan.new_columns()):
        stem = "_" + stem
    aliases = [f"{stem}{i}" for i in range(len(names))]
    position: dict[str, int] = {}
    for index, name in enumerate(names):
        position.setdefault(name, index)  # the first of repeated names
    plan = replace(
        plan,
        feature_columns=tuple(aliases[position[column]] for column in features),
        prediction_columns=(
            None
            if predictions is None
            else tuple(aliases[position[column]] for column in predictions)
        ),
        caller_names=dict(zip(aliases, names, strict=True)),
    )
    added = [key(name) for name in plan.new_columns()]
    existing = {key(name): name for name in fields}
    taken = sorted(existing[name] for name in set(added) & set(existing))
    if len(set(added)) != len(added) or taken:
        raise InvalidArgumentError(
            "prefix",
            f"{prefix!r} gives added columns whose names are taken ({taken or 'by each other'}): "
            "choose another prefix or layout",
        )
    schema = types.StructType(
        [
            *(
                types.StructField(alias, field.dataType, field.nullable, field.metadata)
                for alias, field in zip(aliases, df.schema.fields, strict=True)
            ),
            *_added_fields(types, plan, explainer),
        ]
    )
    if model is not None:
        refinement = Refinement(
            _ship_model(df.sparkSession, model, shipping), int(budget), random_state
        )
        plan = replace(plan, refinement=refinement)
    shipped = _ship(df.sparkSession, explainer, files, shipping)

    def explain(batches):
        return explain_batches(batches, plan, shipped)

    result = df.toDF(*aliases).mapInArrow(explain, schema)
    return result.toDF(*names, *plan.new_columns())


def _check_refinement(
    explainer: ZeroShotExplainer, model, budget, random_state, predictions_given: bool
) -> None:
    """Refuse a refinement that cannot run (or a seed without one), naming the argument."""
    if model is None and budget is None:
        if random_state is not None:
            raise InvalidArgumentError(
                "random_state", "seeds a refinement: it needs model and budget"
            )
        return
    if model is None or budget is None:
        missing, given = ("budget", "model") if budget is None else ("model", "budget")
        raise InvalidArgumentError(missing, f"is required with {given}")
    if not callable(model):
        raise InvalidArgumentError("model", f"must be callable; got {type(model).__name__}")
    lowest = minimum_budget(predictions_given)
    if not isinstance(budget, int | np.integer) or isinstance(budget, bool):
        raise InvalidArgumentError("budget", f"must be an int; got {budget!r}")
    if not lowest <= budget <= MAX_BUDGET:
        raise InvalidArgumentError(
            "budget",
            f"must be {lowest} to {MAX_BUDGET:,} model rows per explained row "
            f"({'with' if predictions_given else 'without'} prediction_columns); got {budget}",
        )
    # The estimator's own check of random_state, on one of its background rows at the least
    # budget (a proposal at the caller's could take a large share of the driver's memory).
    explainer.propose(
        explainer.background_rows_[:1],
        lowest,
        np.zeros((1, explainer.n_outputs_)) if predictions_given else None,
        random_state=random_state,
    )


def _context(context) -> tuple[ZeroShotExplainer, dict[str, bytes]]:
    """The explainer (for the schema and the checks) and its saved files' bytes."""
    if isinstance(context, ZeroShotExplainer):
        if not hasattr(context, "context_"):
            raise InvalidArgumentError("context", "is not fitted: call fit (or load) first")
        with tempfile.TemporaryDirectory(prefix="shapley-svc-context-") as directory:
            context.save(directory)
            files = {name: (Path(directory) / name).read_bytes() for name in CONTEXT_FILES}
        return context, files
    if not isinstance(context, str | Path):
        raise InvalidArgumentError(
            "context",
            f"must be a fitted ZeroShotExplainer or the directory one was saved into; "
            f"got {type(context)}",
        )
    try:
        explainer = ZeroShotExplainer.load(context)
    except InvalidArgumentError as error:
        raise InvalidArgumentError("context", error.problem) from None
    # Loading checked the arrays against the manifest; the bytes shipped are the bytes checked
    # unless the directory changes in between, and then the workers' load refuses them.
    files = {name: (Path(context) / name).read_bytes() for name in CONTEXT_FILES}
    return explainer, files


def _check_arrow_types(schema) -> None:
    """Refuse, naming it, a column Spark cannot put in an Arrow batch (a year-month or calendar
    interval, a struct with a repeated field name): every column travels through the workers,
    and the job failed on the first batch naming its internal alias of the column or no column
    (QA, 2026-12-06)."""
    import inspect

    from pyspark.errors import PySparkException
    from pyspark.sql.pandas.types import to_arrow_type

    # pyspark 4 needs a time zone for timestamps (any: only the type's existence is asked),
    # and tells a struct with repeated field names, which fails the job, only when asked; 3.5
    # takes neither.
    accepted = inspect.signature(to_arrow_type).parameters
    asked = {"timezone": "UTC", "error_on_duplicated_field_names_in_struct": True}
    options = {name: value for name, value in asked.items() if name in accepted}
    for field in schema.fields:
        try:
            to_arrow_type(field.dataType, **options)
        except (TypeError, NotImplementedError, PySparkException):
            raise InvalidArgumentError(
                "df",
                f"has column {field.name!r} of type {field.dataType.simpleString()}, which Spark "
                "cannot pass to Python workers in Arrow batches: drop it or cast it (e.g. to "
                "string) before explaining, and join it back by a key",
            ) from None


def _columns(argument: str, columns, fields: dict) -> list[str]:
    if isinstance(columns, str | bytes) or not isinstance(columns, Iterable):
        raise InvalidArgumentError(
            argument, f"must be a sequence of column names; got {type(columns).__name__}"
        )
    columns = list(columns)
    if not all(isinstance(column, str) for column in columns):
        raise InvalidArgumentError(argument, f"must hold column names (strings); got {columns}")
    if len(set(columns)) != len(columns):
        raise InvalidArgumentError(argument, f"names a column twice: {columns}")
    missing = [column for column in columns if column not in fields]
    if missing:
        raise InvalidArgumentError(
            argument, f"names columns df lacks: {missing}; df has {list(fields)}"
        )
    return columns


def _check_type(types, argument: str, field, labels: list | None) -> None:
    """Refuse a column of a type its feature cannot take: numbers, or for a column the context
    coded from labels (``labels``), the labels' type (numbers in a column of string labels
    were all unseen categories)."""
    numeric = isinstance(field.dataType, types.NumericType) and not isinstance(
        field.dataType, types.DecimalType
    )
    kind = None if labels is None else label_kind(labels)
    if labels and kind is None and all(_is_number(label) for label in labels):
        # Number labels: a string or boolean column passed here, then failed every task.
        if numeric:
            return
        kind = "number"
    labelled_types = {
        None: types.StringType | types.BooleanType,
        "string": types.StringType,
        "bool": types.BooleanType,
        "number": (),
    }
    if labels is not None and isinstance(field.dataType, labelled_types[kind]):
        return
    if numeric and kind is None:
        return
    accepted = "numeric (cast decimals to double)"
    if kind == "number":
        accepted += " (the context coded it from number labels)"
    elif kind is not None:
        accepted = f"{kind} (the context coded it from {kind} labels)"
    elif labels is not None:
        accepted += ", string or boolean (a column the context coded from labels)"
    raise InvalidArgumentError(
        argument,
        f"names column {field.name!r} of type {field.dataType.simpleString()}; it must be "
        f"{accepted}",
    )


def _is_number(label) -> bool:
    return isinstance(label, int | float | np.number) and not isinstance(label, bool | np.bool_)


def _plan(explainer, features, predictions, layout, prefix, batch_rows, session) -> BatchPlan:
    k = explainer.n_outputs_
    if layout == "arrays":
        values = ((f"{prefix}values",),)
        uncertainty = ((f"{prefix}uncertainty",),)
        base = (f"{prefix}base_value",)
    else:
        suffixes = [""] if explainer.single_output_ else [f"_out{j}" for j in range(k)]
        names = explainer.attribution_names_
        values = tuple(tuple(f"{prefix}{name}{end}" for name in names) for end in suffixes)
        uncertainty = tuple(
            tuple(f"{prefix}uncertainty_{name}{end}" for name in names) for end in suffixes
        )
        base = tuple(f"{prefix}base_value{end}" for end in suffixes)
    # Each task gets spark.task.cpus cores: the kernels and BLAS use that many threads, so
    # that concurrent tasks do not oversubscribe the executor's cores.
    threads = int(session.conf.get("spark.task.cpus", "1") or 1)
    return BatchPlan(
        tuple(features),
        None if predictions is None else tuple(predictions),
        layout,
        values,
        uncertainty,
        base,
        batch_rows,
        max(1, threads),
    )


def _added_fields(types, plan: BatchPlan, explainer) -> list:
    double = types.DoubleType()
    if plan.layout == "columns":
        return [types.StructField(name, double, False) for name in plan.new_columns()]
    vector = types.ArrayType(double, False)
    if explainer.single_output_:
        shapes = (vector, vector, double)
    else:
        matrix = types.ArrayType(vector, False)
        shapes = (matrix, matrix, vector)
    return [
        types.StructField(name, shape, False)
        for name, shape in zip(plan.new_columns(), shapes, strict=True)
    ]


def _shipping(session, shipping: str | None) -> str:
    """How the bytes travel: as asked, or by default a broadcast where the session has one.
    Spark Connect has no broadcast variables (``sparkContext`` raised JVM_ATTRIBUTE_NOT_SUPPORTED
    there, so the default failed every call: review QA, 2026-12-06): its default is the
    closure, and a broadcast asked for there is refused naming ``shipping``."""
    if shipping is not None and shipping not in SHIPPING:
        raise InvalidArgumentError("shipping", f"must be one of {SHIPPING}; got {shipping!r}")
    connect = type(session).__module__.startswith("pyspark.sql.connect")
    if shipping == "broadcast" and connect:
        raise InvalidArgumentError(
            "shipping",
            "'broadcast' needs a SparkContext, which a Spark Connect session has not: pass "
            "'closure' (or leave shipping unset)",
        )
    return shipping or ("closure" if connect else "broadcast")


def _ship_model(session, model, shipping: str) -> ShippedModel:
    """The model pickled by cloudpickle (a closure or a lambda travels by value), shipped as the
    context is: broadcast, so that a large model reaches each executor once, or in the
    function. A model that cannot be pickled is refused here, naming ``model``."""
    from pyspark import cloudpickle

    try:
        data = cloudpickle.dumps(model)
    except Exception as error:  # whatever pickling raises, the caller needs the reason
        raise InvalidArgumentError(
            "model", f"cannot be pickled to the workers: {type(error).__name__}: {error}"
        ) from None
    checksum = hashlib.sha256(data).hexdigest()
    payload = data if shipping == "closure" else session.sparkContext.broadcast(data)
    return ShippedModel(checksum, payload)


def _ship(session, explainer, files: dict[str, bytes], shipping: str) -> ShippedContext:
    checksum = hashlib.sha256(files["manifest.json"]).hexdigest()
    payload = files if shipping == "closure" else session.sparkContext.broadcast(files)
    return ShippedContext(checksum, explainer.artifact, payload)
