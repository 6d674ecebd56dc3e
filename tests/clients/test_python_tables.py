"""The Python client's DataFrame coding, without a server: codes, labels, missing values, the
mapping reused for queries, refused dtypes, and what a create_context request carries."""

import datetime
import decimal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from shapley_client import InvalidArgumentError, ShapleyClient
from shapley_client._proto import shapley_pb2 as pb
from shapley_client.client import Context, _categorical_indices, _query_rows
from shapley_client.tables import (
    UNSEEN_CODE,
    code_frame,
    coded_columns,
    display_rows,
    is_data_frame,
)

NAN = np.nan


def _frame():
    return pd.DataFrame(
        {
            "income": [1.5, NAN, 3.0, 2.0],
            "region": pd.Categorical(
                ["west", "east", None, "west"], categories=["west", "east", "north"]
            ),
            "city": ["rome", None, "oslo", "lima"],
            "employed": [True, False, True, True],
            "age": np.array([30, 40, 50, 60], dtype=np.int64),
        }
    )


def test_each_kind_of_column_gets_its_codes_and_labels():
    coded = code_frame(_frame())
    assert coded.names == ["income", "region", "city", "employed", "age"]
    # category: its own order (unused "north" keeps code 2); object: sorted present labels;
    # bool: False < True. Numeric columns are not coded.
    assert coded.categories == {
        1: ["west", "east", "north"],
        2: ["lima", "oslo", "rome"],
        3: [False, True],
    }
    expected = np.array(
        [
            [1.5, 0.0, 2.0, 1.0, 30.0],
            [NAN, 1.0, NAN, 0.0, 40.0],
            [3.0, NAN, 1.0, 1.0, 50.0],
            [2.0, 0.0, 0.0, 1.0, 60.0],
        ]
    )
    assert coded.rows.dtype == np.float64
    np.testing.assert_array_equal(coded.rows, expected)  # NaN where a value is missing
    assert coded.display[1].tolist()[1:] == ["east", None, False, 40.0]
    assert coded.display[2, 1] is None and np.isnan(coded.display[1, 0])
    assert [type(value) for value in coded.display[:, 4]] == [int] * 4  # 40, not 40.0


def test_display_keeps_a_frames_own_numbers():
    frame = pd.DataFrame(
        {
            "year": pd.array([2007, None, 2009], dtype="Int64"),
            "share": np.array([0.1, 0.2, 0.3], dtype=np.float32),
            "region": ["a", "b", "a"],
        }
    )
    coded = code_frame(frame)
    assert coded.display[0, 0] == 2007 and type(coded.display[0, 0]) is int
    assert np.isnan(coded.display[1, 0]) and np.isnan(coded.rows[1, 0])
    assert coded.display[:, 1].tolist() == [np.float32(0.1), np.float32(0.2), np.float32(0.3)]


def test_codes_are_deterministic_whatever_the_row_order():
    frame = _frame()
    shuffled = frame.iloc[[3, 1, 0, 2]].reset_index(drop=True)
    assert code_frame(frame).categories == code_frame(shuffled).categories
    np.testing.assert_array_equal(code_frame(shuffled).rows, code_frame(frame).rows[[3, 1, 0, 2]])
    mixed = pd.DataFrame({"m": [3, "b", None, 1, "a"]})  # mixed types: ordered all the same
    assert code_frame(mixed).categories == {0: [1, 3, "a", "b"]}
    assert code_frame(mixed.iloc[::-1]).categories == {0: [1, 3, "a", "b"]}


def test_pandas_missing_markers_are_missing_in_every_kind_of_column():
    frame = pd.DataFrame(
        {
            "text": pd.array(["b", pd.NA, "a"], dtype="string"),
            "flag": pd.array([True, pd.NA, False], dtype="boolean"),
            "count": pd.array([1, pd.NA, 3], dtype="Int64"),
            "plain": pd.Series(["x", pd.NA, "y"], dtype=object),
        }
    )
    coded = code_frame(frame)
    assert coded.categories == {0: ["a", "b"], 1: [False, True], 3: ["x", "y"]}
    np.testing.assert_array_equal(
        coded.rows, [[1.0, 1.0, 1.0, 0.0], [NAN, NAN, NAN, NAN], [0.0, 0.0, 3.0, 1.0]]
    )


def test_a_query_is_coded_with_the_contexts_labels_and_an_unseen_label_is_no_error():
    context = code_frame(_frame())
    query = pd.DataFrame(
        {
            "income": [NAN, 2.5],
            # Another category order, and a label the context never showed.
            "region": pd.Categorical(["east", "south"], categories=["south", "east"]),
            "city": ["paris", "oslo"],
            "employed": [False, True],
            "age": [41.0, NAN],
        }
    )
    coded = code_frame(query, context.categories)
    assert coded.categories == context.categories
    np.testing.assert_array_equal(
        coded.rows, [[NAN, 1.0, UNSEEN_CODE, 0.0, 41.0], [2.5, UNSEEN_CODE, 1.0, 1.0, NAN]]
    )
    assert UNSEEN_CODE not in range(3)  # no label's code
    # The display keeps what the query said, the unseen labels included.
    assert coded.display[0].tolist()[1:4] == ["east", "paris", False]
    assert coded.display[1, 1] == "south"


def test_unsupported_dtypes_are_refused_naming_the_column():
    for values in (
        pd.to_datetime(["2026-01-01", "2026-02-01"]),
        pd.to_timedelta([1, 2], unit="s"),
        np.array([1 + 2j, 3j]),
    ):
        frame = pd.DataFrame({"ok": [1.0, 2.0], "when": values})
        with pytest.raises(TypeError, match=r"rows: column 'when' has dtype \w+.*cannot be sent"):
            code_frame(frame)


def test_a_column_the_context_got_as_numbers_cannot_take_labels():
    context = code_frame(_frame())
    query = _frame().assign(age=["young", "old", "old", "young"])
    with pytest.raises(ValueError, match=r"column 'age' has dtype \w+; the context was created"):
        code_frame(query, context.categories)


def test_numbers_in_a_column_the_context_coded_from_text_labels_are_refused():
    context = code_frame(_frame())
    # Against bool labels, numbers are refused too, as the estimator refuses them: 0/1/2 sent
    # 2 as an unseen category (QA 2026-12-05).
    with pytest.raises(InvalidArgumentError, match=r"'employed' has dtype int64.*bool") as caught:
        code_frame(_frame().assign(employed=[0, 1, 2, 0]), context.categories)
    assert caught.value.field == "rows"
    codes = _frame().assign(city=[0, 1, 2, 0])  # codes where the context had city names
    with pytest.raises(
        InvalidArgumentError, match=r"'city' has dtype int64; .*\(\['lima', 'oslo', 'rome'\]\)"
    ):
        code_frame(codes, context.categories)
    # Against numeric labels, numbers are labels.
    sizes = pd.DataFrame({"size": pd.Categorical([10, 20, 10])})
    coded = code_frame(sizes.assign(size=[20, 30, 10]), code_frame(sizes).categories)
    np.testing.assert_array_equal(coded.rows[:, 0], [1.0, UNSEEN_CODE, 0.0])


def test_values_of_another_kind_than_the_labels_are_refused_naming_the_column():
    context = code_frame(_frame())
    # Bools read back as text, and text labels as a category of their codes, were unseen
    # categories in every row with no error (QA 2026-12-05).
    for column, values, message in (
        ("employed", ["True", "False", "True", "True"], r"holds str values \('True'\).*bool"),
        ("city", pd.Categorical([2, 0, 1, 2]), r"holds int values \(\d\).*string labels"),
        ("region", pd.Series([0, "west", None, 1], dtype=object), r"holds int values.*string"),
    ):
        with pytest.raises(InvalidArgumentError, match=f"'{column}' {message}") as caught:
            code_frame(_frame().assign(**{column: values}), context.categories)
        assert caught.value.field == "rows"
    # What worked still works: an unseen label of the right kind, another category order, the
    # string dtype for object labels, numbers for number labels given as floats.
    query = _frame().assign(
        city=pd.array(["oslo", "paris", None, "lima"], dtype="string"),
        region=pd.Categorical(
            ["north", "east", None, "west"], categories=["north", "east", "west"]
        ),
    )
    coded = code_frame(query, context.categories)
    np.testing.assert_array_equal(coded.rows[:, 1], [2.0, 1.0, NAN, 0.0])
    np.testing.assert_array_equal(coded.rows[:, 2], [1.0, UNSEEN_CODE, NAN, 0.0])
    # A labelled column with every value missing (an empty column read from a file: float64
    # NaN) is missing values, as the estimator reads it.
    empty = code_frame(_frame().assign(city=NAN, employed=NAN), context.categories)
    assert np.isnan(empty.rows[:, 2]).all() and np.isnan(empty.rows[:, 3]).all()
    sizes = pd.DataFrame({"size": pd.Series([10, None, 20], dtype=object)})
    coded = code_frame(sizes.assign(size=[20.0, NAN, 15.0]), code_frame(sizes).categories)
    np.testing.assert_array_equal(coded.rows[:, 0], [1.0, NAN, UNSEEN_CODE])
    with pytest.raises(InvalidArgumentError, match=r"'size' holds bool values \(True\)"):
        code_frame(sizes.assign(size=[True, None, 10]), code_frame(sizes).categories)


def test_labels_the_estimator_cannot_keep_are_refused_naming_the_column(offline):
    # Unhashable values crashed with a bare TypeError; dates and Decimals were coded, then the
    # estimator could not save them: refused as the estimator refuses them (QA 2026-12-05).
    for values, kind in (
        ([["x", "y"], ["z"], ["x", "y"]], "list"),
        ([{"a": 1}, None, {"a": 2}], "dict"),
        ([datetime.date(2024, 1, 1), datetime.date(2024, 1, 2), None], "date"),
        ([decimal.Decimal("0.5"), decimal.Decimal(1), None], "Decimal"),
        (pd.Categorical(pd.date_range("2024-01-01", periods=3)), "Timestamp"),
    ):
        frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "tags": pd.Series(values, dtype=None)})
        with pytest.raises(InvalidArgumentError, match=f"'tags' holds {kind} values") as caught:
            offline.create_context(frame, [0.0, 1.0, 2.0])
        assert caught.value.field == "context.rows"
        context = code_frame(frame.assign(tags=["x", "y", "z"]))
        with pytest.raises(InvalidArgumentError, match=f"'tags' holds {kind} values"):
            code_frame(frame, context.categories)
    # True is 1 and False is 0 to a lookup: bools with numbers would share codes.
    mixed = pd.DataFrame({"flag": pd.Series([True, 0, 1, None], dtype=object)})
    with pytest.raises(InvalidArgumentError, match=r"'flag' mixes bool and number labels"):
        code_frame(mixed)


def test_numeric_frames_are_sent_as_before():
    floats = pd.DataFrame({"a": np.arange(3, dtype=np.float32), "b": np.ones(3, np.float32)})
    assert code_frame(floats).rows.dtype == np.float32
    mixed = floats.assign(c=np.arange(3))
    coded = code_frame(mixed)
    assert coded.rows.dtype == np.float64 and coded.categories == {}
    np.testing.assert_array_equal(coded.rows, np.asarray(mixed, dtype=np.float64))
    assert coded_columns(mixed) == [] and coded_columns(_frame()) == ["region", "city", "employed"]


def test_display_rows_names_the_codes_of_an_array():
    shown = display_rows(
        np.array([[0.5, 1.0], [NAN, NAN], [1.0, 7.0], [2.0, 0.5]]), {1: ["a", "b"]}
    )
    assert shown[:, 1].tolist() == ["b", None, None, None]
    assert shown[:, 0].tolist()[::2] == [0.5, 1.0]


def test_categorical_columns_by_index_or_name():
    names = ["a", "b", "c"]
    assert _categorical_indices(None, names) == []
    assert _categorical_indices(["c", 0, np.int64(1)], names) == [2, 0, 1]
    assert _categorical_indices([7], names) == [7]  # out of range: the server's to name
    with pytest.raises(ValueError, match="names column 'z', which is not a feature name"):
        _categorical_indices(["z"], names)
    with pytest.raises(ValueError, match="holds -1"):
        _categorical_indices([-1], names)
    with pytest.raises(TypeError, match="list of column indices or names"):
        _categorical_indices("a", names)
    with pytest.raises(TypeError, match="indices or names; got True"):
        _categorical_indices([True], names)


class _Recorder:
    """Stands in for the stub: keeps the spec sent and answers with a ContextInfo like the
    server's (names echoed, categorical columns echoed)."""

    def __init__(self):
        self.specs, self.held, self.explained = [], {}, []
        self.context_calls = 0

    def CreateContext(self, request, timeout=None, metadata=()):
        spec = request.context
        self.specs.append(spec)
        d = spec.rows.shape[1]
        info = pb.ContextInfo(
            context_id=f"ctx-{len(self.specs)}",
            feature_names=list(spec.feature_names) or [f"x{j}" for j in range(d)],
            categorical_columns=spec.categorical_columns,
        )
        self.held[info.context_id] = info
        return pb.CreateContextResponse(context=info, created=True)

    def GetContext(self, request, timeout=None, metadata=()):
        self.context_calls += 1
        return self.held[request.context_id]

    def GetServerInfo(self, request, timeout=None, metadata=()):
        return pb.ServerInfo(limits=pb.Limits(max_message_bytes=1 << 20))

    def ExplainStream(self, requests, timeout=None, metadata=()):
        context_id = None
        for request in requests:
            context_id = context_id or request.context_id
            request.context_id = context_id
            yield self.Explain(request)

    def Propose(self, request, timeout=None, metadata=()):
        m, d = request.rows.shape
        rows = np.repeat(np.frombuffer(request.rows.data, "<f8").reshape(m, d), request.budget, 0)
        return pb.ProposeResponse(
            rows=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=rows.shape, data=rows.tobytes()),
            rows_per_query=request.budget,
            context_id=request.context_id,
        )

    def Refine(self, request, timeout=None, metadata=()):
        return self.Explain(request)

    def Explain(self, request, timeout=None, metadata=()):
        self.explained.append(np.frombuffer(request.rows.data, "<f8").reshape(request.rows.shape))
        m, d = request.rows.shape
        return pb.ExplainResponse(
            context=self.held[request.context_id],
            values=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[m, d], data=bytes(8 * m * d)),
            base_values=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[m], data=bytes(8 * m)),
            uncertainty=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[m, d], data=bytes(8 * m * d)),
        )


@pytest.fixture
def offline():
    client = ShapleyClient("127.0.0.1:1")  # never called: the stub is replaced
    client._stub = _Recorder()
    yield client
    client.close()


def test_create_context_declares_coded_columns_and_keeps_their_labels(offline):
    frame = _frame()
    context = offline.create_context(frame, np.arange(4.0), categorical_columns=["age"])
    (spec,) = offline._stub.specs
    assert list(spec.categorical_columns) == [1, 2, 3, 4]  # coded, merged with the declared
    assert list(spec.feature_names) == list(frame.columns)
    sent = np.frombuffer(spec.rows.data, "<f8").reshape(4, 5)
    np.testing.assert_array_equal(sent, code_frame(frame).rows)
    assert context.categories == {
        "region": ["west", "east", "north"],
        "city": ["lima", "oslo", "rome"],
        "employed": [False, True],
    }
    assert context.categorical_columns == [1, 2, 3, 4]


def test_a_table_with_columns_that_is_not_pandas_still_names_the_features(offline):
    class Table:  # e.g. another DataFrame library: numbers through __array__, names as columns
        columns = ("a", "b", "c")

        def __array__(self, dtype=None, copy=None):
            return np.arange(9.0).reshape(3, 3)

    offline.create_context(Table(), [0.0, 1.0, 2.0], categorical_columns=["c"])
    (spec,) = offline._stub.specs
    assert list(spec.feature_names) == ["a", "b", "c"] and list(spec.categorical_columns) == [2]


def test_declared_columns_are_sorted_so_their_order_does_not_change_the_id(offline):
    X = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]])
    offline.create_context(X, [0.0, 1.0, 2.0], categorical_columns=["x2", 0])
    offline.create_context(X, [0.0, 1.0, 2.0], categorical_columns=[2, 2])
    first, second = offline._stub.specs
    assert list(first.categorical_columns) == [0, 2]
    assert list(first.feature_names) == []  # default names resolve, and are not sent
    assert list(second.categorical_columns) == [2, 2]  # listed twice: the server refuses it


def test_the_first_block_of_a_streamed_context_carries_the_categorical_columns(offline):
    spec = pb.ContextSpec(
        rows=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[300, 2], data=np.zeros(600).tobytes()),
        predictions=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[300], data=np.zeros(300).tobytes()),
        categorical_columns=[1],
    )
    offline.max_message_bytes = 2_000
    blocks = [request.context for request in offline._context_blocks(spec)]
    assert len(blocks) > 1
    assert list(blocks[0].categorical_columns) == [1]
    assert all(len(block.categorical_columns) == 0 for block in blocks[1:])


def test_a_query_frame_with_labels_needs_the_context_not_its_id():
    context = Context("ctx-1", pb.ContextInfo(feature_names=["region"]), pb.ContextSpec())
    context.categories = {"region": ["a", "b"]}
    frame = pd.DataFrame({"region": ["b", "c"]})
    rows, display = _query_rows(context, frame)
    np.testing.assert_array_equal(rows, [[1.0], [UNSEEN_CODE]])
    assert display.tolist() == [["b"], ["c"]]
    with pytest.raises(ValueError, match=r"\['region'\] hold labels: .* not a context id"):
        _query_rows("ctx-1", frame)
    rows, display = _query_rows(context, np.array([[0.0], [NAN]]))  # codes, shown as labels
    assert display.tolist() == [["a"], [None]]
    numeric = pd.DataFrame({"x0": [1.0, NAN]})
    rows, display = _query_rows("ctx-1", numeric)  # numbers need no labels: any context
    assert display is None and np.isnan(rows[1, 0])


def test_query_columns_are_checked_as_the_estimator_checks_them():
    # Default names in another order were sent unreordered: the wrong features (QA 2026-12-05).
    unnamed = Context("ctx-1", pb.ContextInfo(feature_names=["x0", "x1", "x2"]), pb.ContextSpec())
    frame = pd.DataFrame({"x0": [1.0], "x1": [2.0], "x2": [3.0]})
    with pytest.raises(InvalidArgumentError, match=r"has columns \['x2', 'x0', 'x1'\]") as caught:
        _query_rows(unnamed, frame[["x2", "x0", "x1"]])
    assert caught.value.field == "rows"
    rows, _ = _query_rows(unnamed, frame.set_axis(["a", "b", "c"], axis=1))  # any other names
    np.testing.assert_array_equal(rows, [[1.0, 2.0, 3.0]])
    named = Context("ctx-2", pb.ContextInfo(feature_names=["a", "b", "c"]), pb.ContextSpec())
    with pytest.raises(InvalidArgumentError, match="same names, same order"):
        _query_rows(named, frame)


def test_a_frame_with_a_context_id_is_checked_against_the_contexts_names(offline):
    """With an id the client skipped the check: columns in another order were explained under
    the context's names, and numbers in a categorical column went as codes (QA, 2026-12-06)."""
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]})
    plain = offline.create_context(frame, [0.0, 1.0])
    with pytest.raises(InvalidArgumentError, match=r"has columns \['c', 'b', 'a'\]") as caught:
        offline.explain(plain.context_id, frame[["c", "b", "a"]])
    assert caught.value.field == "rows"
    offline.explain(plain.context_id, frame)  # its own names, in order: sent as they are
    np.testing.assert_array_equal(offline._stub.explained[-1], frame.to_numpy())
    record = pd.DataFrame([{"a": 0.1, "b": None, "c": 0.3}])  # one JSON record, b null
    offline.explain(plain.context_id, record)  # no labels in b: a missing value, as with a Context
    np.testing.assert_array_equal(offline._stub.explained[-1], [[0.1, np.nan, 0.3]])
    coded = offline.create_context(frame, [0.0, 1.0], categorical_columns=["b"])
    labels = frame.assign(b=[10, 20])  # labels or codes? only the Context knows
    with pytest.raises(InvalidArgumentError, match=r"\['b'\] are categorical in context") as caught:
        offline.explain(coded.context_id, labels)
    assert caught.value.field == "rows" and len(offline._stub.explained) == 2
    offline.explain(coded.context_id, labels.to_numpy())  # an array with the id: codes


def test_a_frame_with_a_context_id_costs_one_get_context_per_call(offline):
    """The refined and streamed paths asked GetContext twice: once to check the frame, once
    more for the context's outputs (note 62)."""
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    context_id = offline.create_context(frame, [0.0, 1.0]).context_id
    offline.explain_stream(context_id, frame)
    assert offline._stub.context_calls == 1
    offline.explain(context_id, frame, model=lambda rows: rows[:, 0], budget=4)
    assert offline._stub.context_calls == 2
    np.testing.assert_array_equal(offline._stub.explained[-1], frame.to_numpy())
    offline.explain_stream(context_id, frame.to_numpy())  # an array: no check, one for limits
    assert offline._stub.context_calls == 3


def test_repeated_column_names_are_refused_before_sending(offline):
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["a", "a", "c"])
    for names in (None, ["a1", "a2", "c"]):  # as the estimator refuses them, named or not
        with pytest.raises(InvalidArgumentError, match=r"repeated column names: \['a'\]") as caught:
            offline.create_context(frame, [0.0], feature_names=names)
        assert caught.value.field == "context.rows"
    assert offline._stub.specs == []


def test_a_number_missing_in_every_row_of_a_query_is_missing_not_a_label():
    """One JSON record with a null number gives an object column of None: refused as labels
    (QA, 2026-12-06), where a column the context coded took it."""
    context = code_frame(_frame())
    query = pd.DataFrame([{**_frame().iloc[0].to_dict(), "income": None, "age": pd.NA}])
    assert query["income"].dtype == object
    coded = code_frame(query, context.categories)
    assert np.isnan(coded.rows[0, [0, 4]]).all()
    np.testing.assert_array_equal(coded.rows[0, 1:4], code_frame(_frame()).rows[0, 1:4])
    with pytest.raises(InvalidArgumentError, match="column 'income' has dtype"):
        code_frame(query.assign(income=["high"]), context.categories)  # a label is refused still


def test_a_scalar_is_refused_naming_its_field(offline):
    """np.ascontiguousarray makes a scalar one value along one axis: a scalar prediction for
    one row was taken, where the estimator refuses it."""
    context = offline.create_context(np.eye(2), [0.0, 1.0])
    with pytest.raises(InvalidArgumentError, match="must be an array, not a scalar") as caught:
        offline.explain(context, np.eye(2)[:1], np.float64(0.5))
    assert caught.value.field == "predictions" and offline._stub.explained == []


def test_a_series_is_not_a_frame():
    # It has dtypes but no columns: taken for a frame, it crashed with AttributeError.
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    assert is_data_frame(frame) and not is_data_frame(frame.iloc[0])
    assert not is_data_frame(frame["a"])
    unnamed = Context("ctx-1", pb.ContextInfo(feature_names=["x0", "x1"]), pb.ContextSpec())
    rows, _ = _query_rows(unnamed, frame.iloc[0])  # 1-D, as sent: the server names the shape
    np.testing.assert_array_equal(rows, [1.0, 3.0])


def test_the_client_imports_without_pandas():
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "import numpy as np, shapley_client\n"
        "from shapley_client.client import _query_rows\n"
        "rows, display = _query_rows('ctx-1', np.array([[1.0, np.nan]]))\n"
        "assert display is None and np.isnan(rows[0, 1])\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
