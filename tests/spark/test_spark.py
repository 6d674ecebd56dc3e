"""``shapley_svc.spark.explain_dataframe`` on a real local Spark session (``local[2]``): Spark's
answers equal the in-process ``explain`` on the same rows, in both layouts, with missing values
and logged predictions; refusals happen on the driver before any job.

Needs pyspark and Java; CI installs both and sets ``SHAPLEY_SVC_REQUIRE_SPARK=1`` so that their
absence fails instead of skipping.
"""

import os
import re
import shutil
import sys
import warnings

import numpy as np
import pytest

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer

pytestmark = [
    pytest.mark.slow,  # a JVM and two Python workers start: about a minute on 2 busy cores
    # pyspark 4 warns on every conversion that it does not yet fully support pandas 3.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
REQUIRED = os.environ.get("SHAPLEY_SVC_REQUIRE_SPARK") == "1"


def _need(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (SHAPLEY_SVC_REQUIRE_SPARK=1)")
    pytest.skip(reason)


def _started(builder):
    """``builder.getOrCreate()``, tried twice where the JVM died before it started.

    pyspark starts the JVM with a ``preexec_fn``, so from a plain fork() of this test worker,
    whose earlier tests can leave gRPC threads running; a child forked from a process with
    threads may die before it execs. Once in a fresh-clone CI run (2026-12-06, a loaded machine)
    every test here failed with JAVA_GATEWAY_EXITED, with nothing on stderr but grpc's "Other
    threads are currently calling into gRPC, skipping fork() handlers"; alone they passed."""
    from pyspark.errors import PySparkRuntimeError

    try:
        return builder.getOrCreate()
    except PySparkRuntimeError as error:
        # getCondition since pyspark 4.0, which deprecates getErrorClass; the extra takes 3.5.
        condition = getattr(error, "getCondition", error.getErrorClass)()
        if condition != "JAVA_GATEWAY_EXITED":
            raise
    return builder.getOrCreate()


@pytest.fixture(scope="module")
def spark():
    if REQUIRED:
        try:
            import pyspark  # noqa: F401
        except ImportError:
            _need("pyspark is not installed")
    else:
        pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _need("Java is not installed (Spark runs on the JVM)")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # The workers run this interpreter, so they import this checkout's package (pyspark
        # reads PYSPARK_PYTHON when the context starts).
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        builder = (
            SparkSession.builder.master("local[2]")
            .appName("shapley-svc-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
        )
        session = _started(builder)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def table():
    """A context with missing values, and 240 query rows: NaN features, logged predictions."""
    rng = np.random.default_rng(20261130)
    X = rng.normal(size=(700, 4))
    X[rng.random(700) < 0.15, 1] = np.nan
    X[rng.random(700) < 0.15, 3] = np.nan
    y = np.tanh(X[:, 0]) + np.nan_to_num(X[:, 1], nan=0.7) * X[:, 2] + 0.3 * np.nan_to_num(X[:, 3])
    explainer = ZeroShotExplainer(random_state=1).fit(X[:400], y[:400])
    return X[400:640], y[400:640], explainer


@pytest.fixture(scope="module")
def multi():
    """A 3-class context with two feature groups."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(500, 4))
    scores = np.stack([X[:, 0] * X[:, 1], -X[:, 2], 0.5 * X[:, 3] + X[:, 0]], axis=1)
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    explainer = ZeroShotExplainer(random_state=2).fit(
        X[:300], probabilities[:300], groups={"ab": [0, 1], "c": [2], "d": [3]}
    )
    return X[300:360], probabilities[300:360], explainer


def _frame(spark, X, predictions=None, names=("f_a", "f_b", "f_c", "f_d")):
    import pandas as pd

    frame = pd.DataFrame(X, columns=list(names)).assign(row_id=np.arange(len(X)))
    if predictions is not None:
        predictions = np.asarray(predictions).reshape(len(X), -1)
        for k in range(predictions.shape[1]):
            frame[f"pred_{k}"] = predictions[:, k]
    # Four partitions: both workers see several batches.
    return spark.createDataFrame(frame).repartition(4)


def _collect(df):
    return df.toPandas().sort_values("row_id").reset_index(drop=True)


FEATURES = ["f_a", "f_b", "f_c", "f_d"]


def test_columns_equal_the_in_process_answers_with_missing_values_and_predictions(spark, table):
    X, y, explainer = table
    assert np.isnan(X).any()
    from shapley_svc.spark import explain_dataframe

    out = _collect(explain_dataframe(_frame(spark, X, y), explainer, FEATURES, "pred_0"))
    expected = explainer.explain(X, y)
    names = explainer.attribution_names_
    values = out[[f"shap_{name}" for name in names]].to_numpy()
    uncertainty = out[[f"shap_uncertainty_{name}" for name in names]].to_numpy()
    assert np.allclose(values, expected.values, rtol=0, atol=1e-12), np.abs(
        values - expected.values
    ).max()
    assert np.allclose(uncertainty, expected.uncertainty, rtol=0, atol=1e-12)
    assert np.array_equal(out["shap_base_value"].to_numpy(), expected.base_values)
    gap = values.sum(axis=1) - (y - out["shap_base_value"].to_numpy())
    assert np.abs(gap).max() <= 1e-9, f"efficiency gap {np.abs(gap).max():.2e}"
    # The input's columns come through as they were, NaN included.
    assert np.array_equal(out[FEATURES].to_numpy(), X, equal_nan=True)
    assert np.array_equal(out["pred_0"].to_numpy(), y)


def test_arrays_from_a_saved_context_shipped_in_the_closure_in_small_batches(
    spark, table, tmp_path
):
    X, _, explainer = table
    from shapley_svc.spark import explain_dataframe

    directory = explainer.save(tmp_path / "context")
    df = explain_dataframe(
        _frame(spark, X),
        str(directory),
        FEATURES,
        layout="arrays",
        prefix="attr_",
        batch_rows=17,
        shipping="closure",
    )
    assert [field.simpleString() for field in df.schema.fields[-3:]] == [
        "attr_values:array<double>",
        "attr_uncertainty:array<double>",
        "attr_base_value:double",
    ]
    out = _collect(df)
    expected = explainer.explain(X)
    values = np.stack(out["attr_values"].to_numpy())
    assert values.shape == expected.values.shape
    assert np.allclose(values, expected.values, rtol=0, atol=1e-12)
    assert np.allclose(np.stack(out["attr_uncertainty"]), expected.uncertainty, rtol=0, atol=1e-12)


def test_several_outputs_and_groups_in_both_layouts_with_a_missing_prediction(spark, multi):
    X, probabilities, explainer = multi
    from shapley_svc.spark import explain_dataframe

    logged = probabilities.copy()
    logged[5, 1] = np.nan  # a row logged without its prediction: explained without any
    df = _frame(spark, X, logged)
    predictions = ["pred_0", "pred_1", "pred_2"]
    given = np.ones(len(X), dtype=bool)
    given[5] = False
    expected = explainer.explain(X[given], probabilities[given])
    alone = explainer.explain(X[~given])

    out = _collect(explain_dataframe(df, explainer, FEATURES, predictions, layout="arrays"))
    values = np.stack([np.stack(row) for row in out["shap_values"]])  # (m, P, K)
    assert values.shape == (len(X), 3, 3)
    assert np.allclose(values[given], expected.values, rtol=0, atol=1e-12)
    assert np.allclose(values[~given], alone.values, rtol=0, atol=1e-12)
    base = np.stack(out["shap_base_value"])
    gap = values[given].sum(axis=1) - (probabilities[given] - base[given])
    assert np.abs(gap).max() <= 1e-9, np.abs(gap).max()

    columns = _collect(explain_dataframe(df, explainer, FEATURES, predictions))
    for k in range(3):
        names = [f"shap_{group}_out{k}" for group in ("ab", "c", "d")]
        assert np.allclose(columns[names].to_numpy(), values[:, :, k], rtol=0, atol=1e-12)
        assert np.array_equal(columns[f"shap_base_value_out{k}"].to_numpy(), base[:, k])


def test_refined_with_the_callers_model_equal_the_in_process_refinement(spark, table):
    X, y, explainer = table
    from shapley_svc.spark import explain_dataframe

    def model(rows):  # the table's function: Spark pickles it into the job by value
        return (
            np.tanh(rows[:, 0])
            + np.nan_to_num(rows[:, 1], nan=0.7) * rows[:, 2]
            + 0.3 * np.nan_to_num(rows[:, 3])
        )

    logged = y.copy()
    logged[[5, 50]] = np.nan  # two rows whose prediction was not logged
    df = _frame(spark, X, logged)
    out = _collect(
        explain_dataframe(df, explainer, FEATURES, "pred_0", model=model, budget=16, random_state=5)
    )
    names = explainer.attribution_names_
    values = out[[f"shap_{name}" for name in names]].to_numpy()
    uncertainty = out[[f"shap_uncertainty_{name}" for name in names]].to_numpy()
    given = ~np.isnan(logged)
    for rows, predictions in ((given, y[given]), (~given, None)):
        proposal = explainer.propose(X[rows], 16, predictions, random_state=5)
        expected = explainer.refine(proposal, model(proposal.rows))
        assert np.allclose(values[rows], expected.values, rtol=0, atol=1e-12)
        assert np.allclose(uncertainty[rows], expected.uncertainty, rtol=0, atol=1e-12)
    # Refined, not the zero-shot answer; efficient against the logged predictions.
    assert np.abs(values[given] - explainer.explain(X[given], y[given]).values).max() > 1e-6
    gap = values.sum(axis=1) - (y - out["shap_base_value"].to_numpy())
    assert np.abs(gap[given]).max() <= 1e-9, np.abs(gap[given]).max()


def test_each_python_worker_loads_the_context_and_the_model_once(spark, table):
    import json
    import os as worker_os

    import pandas as pd

    from shapley_svc.spark import explain_dataframe

    X, _, explainer = table
    df = _frame(spark, X)
    scale = 2.0

    def model(rows):  # a closure: pickled by value, shipped with the context
        return scale * np.tanh(rows[:, 0])

    for _ in range(2):  # two calls, two broadcasts of the same bytes, 4 tasks each
        refined = explain_dataframe(df, explainer, FEATURES, model=model, budget=8)
        refined.write.format("noop").mode("overwrite").save()

    def probe(batches):  # pickled by value: runs in the workers, reports their loads
        from shapley_svc.spark import _worker

        for _ in batches:
            pass
        loads = json.dumps([_worker.loads_so_far(), _worker.model_loads_so_far()])
        yield pd.DataFrame({"pid": [worker_os.getpid()], "loads": [loads]})

    reports = df.mapInPandas(probe, "pid long, loads string").toPandas()
    loads = {row.pid: json.loads(row.loads) for row in reports.itertuples()}
    for kind in (0, 1):  # the contexts, the models
        counts = [count for both in loads.values() for count in both[kind].values()]
        assert counts and max(counts) == 1, loads


def test_a_string_column_for_a_context_coded_from_labels(spark):
    import pandas as pd

    from shapley_svc.spark import explain_dataframe

    rng = np.random.default_rng(3)
    colour = rng.choice(["red", "green", "blue"], size=300).astype(object)
    x = rng.normal(size=300)
    y = x + np.select([colour == "red", colour == "green"], [1.0, -1.0], 0.2)
    explainer = ZeroShotExplainer().fit(pd.DataFrame({"x": x, "colour": colour}), y)
    colour[:3] = [None, "purple", "red"]  # missing, unseen, seen
    query = pd.DataFrame({"amount": x, "paint": colour, "row_id": np.arange(300)})
    df = spark.createDataFrame(query).repartition(2)
    assert df.schema["paint"].dataType.simpleString() == "string"
    out = _collect(explain_dataframe(df, explainer, ["amount", "paint"], layout="arrays"))
    expected = explainer.explain(pd.DataFrame({"x": x, "colour": colour}))
    assert np.allclose(np.stack(out["shap_values"]), expected.values, rtol=0, atol=1e-12)

    # Codes where the context took labels would all be unseen labels: refused, naming it.
    coded = spark.createDataFrame(query.assign(paint=np.arange(300) % 3))
    with pytest.raises(InvalidArgumentError, match="must be string") as caught:
        explain_dataframe(coded, explainer, ["amount", "paint"])
    assert caught.value.argument == "feature_columns"

    # Refined: the model sees the coded columns as their codes (NaN missing, -1 unseen).
    def model(rows):
        return rows[:, 0] + 0.5 * np.nan_to_num(rows[:, 1], nan=3.0)

    refined = _collect(explain_dataframe(df, explainer, ["amount", "paint"], model=model, budget=6))
    proposal = explainer.propose(pd.DataFrame({"x": x, "colour": colour}), 6)
    expected = explainer.refine(proposal, model(proposal.rows))
    names = [f"shap_{name}" for name in explainer.attribution_names_]
    assert np.allclose(refined[names].to_numpy(), expected.values, rtol=0, atol=1e-12)


def _unpicklable_model():
    import threading

    lock = threading.Lock()  # no pickler takes a lock

    def model(rows):
        with lock:
            return rows[:, 0]

    return model


def test_refusals_name_the_argument_before_any_job(spark, table, tmp_path):
    import pyspark.sql.functions as F

    from shapley_svc.spark import explain_dataframe

    X, _, explainer = table
    df = _frame(spark, X[:20], np.arange(20.0)).withColumn("label", F.lit("a"))
    cases = [
        (dict(feature_columns=["f_a", "f_b", "f_c", "nope"]), "feature_columns", "nope"),
        (dict(feature_columns=FEATURES[:3]), "feature_columns", "fitted on 4 features"),
        (dict(feature_columns=["f_a", "f_b", "f_c", "label"]), "feature_columns", "string"),
        (dict(feature_columns="f_a"), "feature_columns", "sequence"),
        (dict(prediction_columns=["pred_0", "row_id"]), "prediction_columns", "1 outputs"),
        (dict(prediction_columns="label"), "prediction_columns", "string"),
        (dict(df=df.withColumn("shap_base_value", F.lit(0.0))), "prefix", "taken"),
        # Spark resolves names without regard to case: 'SHAP_BASE_VALUE' is taken too.
        (dict(df=df.withColumn("SHAP_BASE_VALUE", F.lit(0.0))), "prefix", "taken"),
        # The context's own names in another order (it was explained by position).
        (
            dict(
                df=_frame(spark, X[:20], np.arange(20.0), names=("x0", "x1", "x2", "x3")),
                feature_columns=["x1", "x0", "x2", "x3"],
            ),
            "feature_columns",
            "names 'x1' at position 0, where the context has 'x0'",
        ),
        (dict(layout="rows"), "layout", "rows"),
        (dict(shipping="by post"), "shipping", "by post"),
        (dict(prefix=None), "prefix", "string"),
        (dict(batch_rows=0), "batch_rows", "positive"),
        (dict(context=str(tmp_path / "absent")), "context", "does not exist"),
        (dict(context=ZeroShotExplainer()), "context", "not fitted"),
        (dict(model=np.sum), "budget", "required with model"),
        (dict(budget=8), "model", "required with budget"),
        (dict(model="predict", budget=8), "model", "callable"),
        (dict(model=np.sum, budget=4), "budget", "5 to 65,536"),
        (dict(model=np.sum, budget=65_537), "budget", "5 to 65,536"),
        (dict(model=np.sum, budget=8.0), "budget", "int"),
        (dict(model=np.sum, budget=8, random_state=-1), "random_state", "[0, 2**32)"),
        (dict(model=np.sum, budget=8, random_state=True), "random_state", "[0, 2**32)"),
        (dict(random_state=3), "random_state", "needs model and budget"),
        (dict(model=_unpicklable_model(), budget=8), "model", "cannot be pickled"),
        # No Arrow type: the job failed on its first batch naming the column's internal alias.
        (
            dict(df=df.withColumn("term", F.expr("INTERVAL '1-2' YEAR TO MONTH"))),
            "df",
            "column 'term' of type interval year to month",
        ),
        (
            dict(
                df=df.withColumn("pair", F.struct(F.col("f_a").alias("x"), F.col("f_b").alias("x")))
            ),
            "df",
            "column 'pair' of type struct<x:double,x:double>",
        ),
    ]
    spark.sparkContext.setJobGroup("refusals", "calls that must be refused")
    try:
        for change, argument, words in cases:
            call = dict(df=df, context=explainer, feature_columns=FEATURES) | change
            with pytest.raises(InvalidArgumentError) as caught:
                explain_dataframe(**call)
            assert caught.value.argument == argument, (change, str(caught.value))
            assert words in caught.value.problem, (change, str(caught.value))
        assert spark.sparkContext.statusTracker().getJobIdsForGroup("refusals") == []
    finally:
        spark.sparkContext.setJobGroup(None, None)
    with pytest.raises(InvalidArgumentError) as caught:
        explain_dataframe(X, explainer, FEATURES)
    assert caught.value.argument == "df"


def test_the_tables_other_columns_come_back_as_they_were(spark, table):
    """Every column went through pandas in mapInPandas: a long id past 2**53 in a batch with a
    null came back rounded, NaN came back null, a timestamp in the repeated daylight-saving
    hour moved an hour, and a vector column failed the job (QA, 2026-12-06)."""
    import pyspark.sql.functions as F
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import types as T

    from shapley_svc.spark import explain_dataframe

    X, y, explainer = table
    ids = [None if i == 0 else 2**60 + i for i in range(8)]
    rows = [
        (
            i,
            ids[i],
            *map(float, X[i]),
            float("nan") if i == 1 else float(y[i]),
            1730611800 + 1800 * i,
        )
        for i in range(8)
    ]
    schema = T.StructType(
        [
            T.StructField("row_id", T.IntegerType()),
            T.StructField("account", T.LongType()),
            *(T.StructField(name, T.DoubleType()) for name in FEATURES),
            T.StructField("pred_0", T.DoubleType()),
            T.StructField("epoch", T.LongType()),
        ]
    )
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        df = (
            spark.createDataFrame(rows, schema)
            .withColumn("at", F.timestamp_seconds("epoch"))  # 01:30 EDT, then the EST hour
            .withColumn(
                "score_nan", F.when(F.col("row_id") == 2, F.lit(float("nan"))).otherwise(1.0)
            )
            .coalesce(1)
        )
        vectors = spark.createDataFrame(
            [(i, Vectors.dense([float(i), 0.5])) for i in range(8)], ["row_id", "embedding"]
        )
        df = df.join(vectors, "row_id").coalesce(1)
        kept = [name for name in df.columns]
        before = df.select(*kept, F.unix_timestamp("at").alias("at_s")).orderBy("row_id").collect()
        out = explain_dataframe(df, explainer, FEATURES, "pred_0")
        after = out.select(*kept, F.unix_timestamp("at").alias("at_s")).orderBy("row_id").collect()
        assert out.columns[: len(kept)] == kept
        assert out.filter(F.isnan("score_nan")).count() == 1  # NaN, not null
        assert out.filter(F.isnan("pred_0")).count() == 1
        for was, came in zip(before, after, strict=True):
            assert was.account == came.account and was.at_s == came.at_s
            assert was.embedding == came.embedding
            assert str(was.score_nan) == str(came.score_nan)  # nan == nan, as text
    finally:
        spark.conf.unset("spark.sql.session.timeZone")


_CONNECT_RUN = """
import sys
import numpy as np
from pyspark.sql import SparkSession
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.spark import explain_dataframe

spark = SparkSession.builder.remote("local[2]").config("spark.ui.enabled", "false").getOrCreate()
assert type(spark).__module__.startswith("pyspark.sql.connect"), type(spark)
rng = np.random.default_rng(1)
X = rng.normal(size=(200, 3))
y = X[:, 0] * X[:, 1] + X[:, 2]
explainer = ZeroShotExplainer(random_state=0).fit(X, y, feature_names=["a", "b", "c"])
rows = [(i, *map(float, X[i]), float(y[i])) for i in range(20)]
df = spark.createDataFrame(rows, "rid long, a double, b double, c double, p double")
expected = explainer.explain(X[:20], y[:20]).values
out = explain_dataframe(df, explainer, ["a", "b", "c"], "p").orderBy("rid").toPandas()
values = out[["shap_a", "shap_b", "shap_c"]].to_numpy()
print("gap", float(np.abs(values - expected).max()))
try:
    explain_dataframe(df, explainer, ["a", "b", "c"], "p", shipping="broadcast")
except Exception as error:
    print("refused", type(error).__name__, getattr(error, "argument", None))
spark.stop()
"""


def test_spark_connect_explains_with_the_default_shipping(spark):
    """Spark Connect has no broadcast variables: the default shipping failed every call there
    with JVM_ATTRIBUTE_NOT_SUPPORTED (review QA, 2026-12-06). Its own process: a Connect
    session beside the classic one of this module's fixture would share its JVM."""
    import subprocess

    pytest.importorskip("zstandard")  # the Connect client's (in the test extra)
    run = subprocess.run(
        [sys.executable, "-c", _CONNECT_RUN],
        env=os.environ | {"PYSPARK_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.split("\n")
    gap = next(float(line.split()[1]) for line in lines if line.startswith("gap "))
    assert gap <= 1e-12, gap
    assert "refused InvalidArgumentError shipping" in lines, run.stdout


def test_real_table_names_dots_case_and_number_labels(spark):
    """Three things real tables bring: names with dots ('Sepal.Length': mapInPandas could not
    resolve any such column, feature or not), a table whose names differ from the context's in
    case only (given in another order, Income was explained as Age), and a column coded from
    number labels given as strings (accepted on the driver, then every task failed)."""
    import pandas as pd

    from shapley_svc.spark import explain_dataframe

    rng = np.random.default_rng(11)
    n = 300
    frame = pd.DataFrame(
        {
            "Sepal.Length": rng.normal(size=n),
            "Income": rng.normal(size=n),
            "level": pd.Categorical(rng.choice([1, 2, 3], size=n)),
        }
    )
    y = frame["Sepal.Length"] + frame["Income"] ** 2 + frame["level"].astype(float)
    explainer = ZeroShotExplainer(random_state=0).fit(frame, y.to_numpy())
    query = frame.iloc[:40].assign(**{"level": frame["level"].iloc[:40].astype(int)})
    query["event.id"] = np.arange(40)
    df = spark.createDataFrame(query).repartition(2)
    out = explain_dataframe(df, explainer, ["Sepal.Length", "Income", "level"])
    assert out.columns[:4] == ["Sepal.Length", "Income", "level", "event.id"]
    got = out.toPandas().sort_values("event.id").reset_index(drop=True)
    assert got["event.id"].tolist() == list(range(40))
    expected = explainer.explain(frame.iloc[:40])
    names = [f"shap_{name}" for name in explainer.attribution_names_]
    assert np.allclose(got[names].to_numpy(), expected.values, rtol=0, atol=1e-12)

    lower = df.toDF("sepal.length", "income", "level", "event.id")
    with pytest.raises(InvalidArgumentError, match="'income' at position 0") as caught:
        explain_dataframe(lower, explainer, ["income", "sepal.length", "level"])
    assert caught.value.argument == "feature_columns"
    # Two columns of one name (Spark allows them) pass through; as a feature, refused.
    twice = df.toDF("Sepal.Length", "Income", "level", "key").crossJoin(spark.range(1).toDF("key"))
    out = explain_dataframe(twice, explainer, ["Sepal.Length", "Income", "level"])
    assert out.columns[:5] == ["Sepal.Length", "Income", "level", "key", "key"]
    assert out.count() == 40
    renamed = twice.toDF("Sepal.Length", "Income", "level", "Income", "key")
    with pytest.raises(InvalidArgumentError, match=r"\['Income'\], which df has more than once"):
        explain_dataframe(renamed, explainer, ["Sepal.Length", "Income", "level"])
    as_text = spark.createDataFrame(query.assign(level=query["level"].astype(str)))
    with pytest.raises(InvalidArgumentError, match=r"'level' of type string.*number labels"):
        explain_dataframe(as_text, explainer, ["Sepal.Length", "Income", "level"])
    # A value the estimator refuses fails the job naming the caller's column (the job runs on
    # positional names) and showing the row, which a row number within a batch could not find.
    broken = spark.createDataFrame(query.assign(Income=query["Income"].where(query.index != 17)))
    broken = broken.fillna(float("inf"), subset=["Income"])
    from pyspark.errors import PythonException

    first, level = float(query.at[17, "Sepal.Length"]), int(query.at[17, "level"])
    shown = f"Sepal.Length={first!r}, Income=inf, level={level!r}"
    with pytest.raises(
        PythonException, match=re.escape(f"Income holds inf in the row with {shown}")
    ):
        explain_dataframe(broken, explainer, ["Sepal.Length", "Income", "level"]).collect()
