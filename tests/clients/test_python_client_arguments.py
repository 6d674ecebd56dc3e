"""What the Python client refuses before it sends anything: feature groups as the estimator's
``groups=`` refuses them, seeds out of the estimator's range, and model outputs that are not
numbers. No server: the client's stub is replaced by one that records what would be sent."""

import numpy as np
import pytest
from shapley_client import InvalidArgumentError, ShapleyClient
from shapley_client._proto import shapley_pb2 as pb

from shapley_svc.errors import InvalidArgumentError as EstimatorInvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer

CONTEXT_ID = "ctx-" + "0" * 40
BACKGROUND = 20  # background rows of the recorded context: ProposeCalibration's default budget


def _rows_tensor(rows: np.ndarray) -> pb.Tensor:
    rows = np.ascontiguousarray(rows, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(rows.shape), data=rows.tobytes())


class RecordingStub:
    """Stands in for the gRPC stub: records each request by method and answers as a server
    holding one single-output context over 5 features would (rows of zeros)."""

    def __init__(self):
        self.sent: list[tuple[str, object]] = []

    def __getattr__(self, method: str):
        def call(request, **_):
            self.sent.append((method, request))
            return getattr(self, f"_{method}")(request)

        return call

    @staticmethod
    def _CreateContext(request):
        return pb.CreateContextResponse(context=pb.ContextInfo(context_id=CONTEXT_ID))

    @staticmethod
    def _GetContext(request):
        names = [f"x{j}" for j in range(5)]
        return pb.ContextInfo(context_id=CONTEXT_ID, n_outputs=1, feature_names=names)

    @staticmethod
    def _GetServerInfo(request):
        return pb.ServerInfo(limits=pb.Limits(max_explain_rows=1_000))

    @staticmethod
    def _Propose(request):
        rows = request.rows.shape[0] * request.budget
        return pb.ProposeResponse(
            context_id=CONTEXT_ID, rows=_rows_tensor(np.zeros((rows, 5))),
            rows_per_query=request.budget,
        )  # fmt: skip

    @staticmethod
    def _Refine(request):
        m = request.rows.shape[0]
        return pb.ExplainResponse(
            context_id=CONTEXT_ID, values=_rows_tensor(np.zeros((m, 5))),
            base_values=_rows_tensor(np.zeros(m)), uncertainty=_rows_tensor(np.zeros((m, 5))),
            context=RecordingStub._GetContext(None), model_rows=request.budget,
        )  # fmt: skip

    @staticmethod
    def _Calibrate(request):
        return pb.CreateContextResponse(context=pb.ContextInfo(context_id=CONTEXT_ID))

    @staticmethod
    def _ProposeCalibration(request):
        budget = request.budget or (20 if request.refit else 10) * BACKGROUND
        return pb.ProposeCalibrationResponse(
            context_id=CONTEXT_ID, rows=_rows_tensor(np.zeros((budget, 5))), budget=budget
        )


@pytest.fixture
def client(monkeypatch):
    with ShapleyClient("127.0.0.1:1", timeout=5, max_attempts=1) as offline:  # nothing listens
        monkeypatch.setattr(offline, "_stub", RecordingStub())
        yield offline


def _methods(client) -> list[str]:
    return [method for method, _ in client._stub.sent]


X = np.random.default_rng(0).normal(size=(40, 5))
P = X[:, 0] + X[:, 1] * X[:, 2]


# --- groups --------------------------------------------------------------------------------

REFUSED_GROUPS = {
    "float indices": {"a": [0.0, 1.9], "b": [2, 3, 4]},
    "integral floats": {"a": [0.0, 1.0], "b": [2, 3, 4]},
    "bool indices": {"a": [False, True], "b": [2, 3, 4]},
    "column names": {"a": ["x0", "x1"], "b": [2, 3, 4]},
    "a bare index": {"a": 0, "b": [1, 2, 3, 4]},
    "nested indices": {"a": [[0, 1]], "b": [2, 3, 4]},
    "no groups": {},
    "no pairs": [],
    "a string": "ab",
    "a set of names": {"a", "b"},
    "a pair of three": [("a", [0, 1], "extra"), ("b", [2, 3, 4])],
    "a name alone": ["a", ("b", [0, 1, 2, 3, 4])],
    "a column past d": {"a": [0, 1, 5], "b": [2, 3, 4]},
    "a negative column": {"a": [-1, 0, 1], "b": [2, 3, 4]},
    "a column past int64": {"a": [0, 1, 2**63], "b": [2, 3, 4]},
}


@pytest.mark.parametrize("groups", REFUSED_GROUPS.values(), ids=REFUSED_GROUPS)
def test_groups_the_estimator_refuses_are_refused_before_sending(client, groups):
    with pytest.raises(EstimatorInvalidArgumentError) as local:
        ZeroShotExplainer(random_state=0).fit(X, P, groups=groups)
    assert local.value.argument == "groups"
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, P, groups=groups)
    refused = caught.value
    assert isinstance(refused, ValueError)
    # Named as the server names the groups it refuses (indices past d, overlaps): the field
    # that carries them; in the estimator's words.
    assert refused.field == "context.groups"
    assert refused.violations[0].description == local.value.problem
    assert _methods(client) == []


def test_ragged_group_indices_are_refused_naming_groups(client):
    # In process, numpy's own ValueError (inhomogeneous shape) names nothing.
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, P, groups={"a": [[0, 1], [2]], "b": [3, 4]})
    assert caught.value.field == "context.groups"
    assert caught.value.violations[0].description == (
        "must list non-empty integer column indices; group 'a' has [[0, 1], [2]]"
    )
    assert _methods(client) == []


ACCEPTED_GROUPS = {
    "a mapping": {"a": [0, 1], "b": [2, 3, 4]},
    "pairs": [("a", [0, 1]), ("b", [2, 3, 4])],
    "pairs as lists": [["a", (0, 1)], ["b", range(2, 5)]],
    "numpy integers": {"a": np.array([0, 1], dtype=np.uint8), "b": [np.int64(2), 3, 4]},
}


@pytest.mark.parametrize("background", [[0.5, 2.0], [True, False], [[0, 1]], ["0"]])
def test_background_indices_that_are_not_integers_are_refused_before_sending(client, background):
    """0.5 went as row 0 and True as row 1, unseen (the estimator refuses both)."""
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, P, background=background)
    assert caught.value.field == "context.background"
    assert client._stub.sent == []
    client.create_context(X, P, background=np.array([3, 1], dtype=np.uint8))
    assert list(client._stub.sent[0][1].context.background) == [3, 1]


@pytest.mark.parametrize("groups", ACCEPTED_GROUPS.values(), ids=ACCEPTED_GROUPS)
def test_groups_are_sent_as_the_estimator_takes_them(client, groups):
    fitted = ZeroShotExplainer(random_state=0).fit(X, P, groups=groups)
    client.create_context(X, P, groups=groups)
    ((method, request),) = client._stub.sent
    assert method == "CreateContext"
    sent = [(g.name, list(g.columns)) for g in request.context.groups]
    assert sent == [(name, columns.tolist()) for name, columns in fitted.groups_]
    assert sent == [("a", [0, 1]), ("b", [2, 3, 4])]


# --- seeds ---------------------------------------------------------------------------------

BAD_SEEDS = [-1, 2**32, 2**64, True, np.bool_(False), 2.0, 2.5, "3", np.int64(-1)]
SEED_IDS = ["-1", "2**32", "2**64", "True", "np.bool_", "2.0", "2.5", "str", "np.int64(-1)"]


def _seeded_calls(client, seed):
    """Every client call that takes a random_state, with it."""
    return {
        "create_context": lambda: client.create_context(X, P, random_state=seed),
        "explain": lambda: client.explain(
            CONTEXT_ID, X[:2], model=lambda rows: rows[:, 0], budget=8, random_state=seed
        ),
        "propose": lambda: client.propose(CONTEXT_ID, X[:2], budget=8, random_state=seed),
        "refine": lambda: client.refine(
            CONTEXT_ID, X[:2], np.zeros(16), budget=8, random_state=seed
        ),
        "propose_calibration": lambda: client.propose_calibration(CONTEXT_ID, random_state=seed),
        "calibrate": lambda: client.calibrate(
            CONTEXT_ID, lambda rows: rows[:, 0], random_state=seed
        ),
    }


@pytest.mark.parametrize("seed", BAD_SEEDS, ids=SEED_IDS)
def test_a_seed_out_of_the_estimators_range_is_refused_naming_random_state(client, seed):
    for name, call in _seeded_calls(client, seed).items():
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        refused = caught.value
        field = "context.random_state" if name == "create_context" else "random_state"
        assert refused.field == field, name
        assert refused.violations[0].description.startswith("must be an int in [0, 2**32)"), name
        assert f"got {seed!r}" in refused.details or f"got {int(seed)}" in refused.details, name
        assert _methods(client) == [], name  # refused before anything was sent


def test_seeds_in_range_are_sent_as_ints(client):
    for seed in (0, np.uint32(2**32 - 1), np.int64(7)):
        for name, call in _seeded_calls(client, seed).items():
            client._stub.sent.clear()
            call()
            if name == "create_context":
                assert client._stub.sent[0][1].context.random_state == int(seed)
                continue
            seeded = [
                r for _, r in client._stub.sent if "random_state" in r.DESCRIPTOR.fields_by_name
            ]
            assert seeded and all(r.random_state == int(seed) for r in seeded), name


# --- model outputs -------------------------------------------------------------------------

NOT_NUMBERS = {
    "None": (None, "None"),
    "text": (["a"] * 200, "list (dtype <U1)"),
    "objects": ([object()] * 200, "list (dtype object)"),
    "a dict": ({"a": 1}, "dict (dtype object)"),
    "ragged": ([[0.0], [0.0, 1.0]], "list (not an array)"),
}


@pytest.mark.parametrize(("returned", "shown"), NOT_NUMBERS.values(), ids=NOT_NUMBERS)
def test_a_model_that_returns_no_numbers_is_refused_naming_outputs(client, returned, shown):
    def model(rows):
        return returned

    calls = {
        "calibrate": lambda: client.calibrate(CONTEXT_ID, model),
        "explain": lambda: client.explain(CONTEXT_ID, X[:2], model=model, budget=8),
    }
    for name, call in calls.items():
        client._stub.sent.clear()
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        refused = caught.value
        assert refused.field == "outputs", name
        description = refused.violations[0].description
        assert "must be an array of numbers" in description, name
        assert description.endswith(f"the model returned {shown}"), (name, description)
        assert "nan" not in description and "finite" not in description, name
        # Proposed, then refused before the outputs were sent.
        assert {"Propose", "ProposeCalibration"} & set(_methods(client)), name
        assert not {"Calibrate", "Refine"} & set(_methods(client)), name


def test_refine_refuses_outputs_that_are_not_numbers(client):
    for outputs, shown in [(None, "None"), (["a"] * 16, "list (dtype <U1)")]:
        with pytest.raises(InvalidArgumentError) as caught:
            client.refine(CONTEXT_ID, X[:2], outputs, budget=8)
        assert caught.value.field == "outputs"
        assert caught.value.violations[0].description.endswith(f"got {shown}")
    assert _methods(client) == []
    # Numbers of any real dtype are sent (the server checks their shape).
    for outputs in (np.zeros(16, dtype=np.float32), np.arange(16), np.zeros(16, dtype=bool)):
        client.refine(CONTEXT_ID, X[:2], outputs, budget=8)


@pytest.mark.parametrize(
    "background",
    [[2**63], np.array([2**63], dtype=np.uint64), [0, 2**64], [-1, 2**63], [-1, 3], [0, 40]],
    ids=["2**63", "uint64 2**63", "2**64", "-1 and 2**63", "negative", "n"],
)
def test_background_indices_outside_the_rows_are_refused_in_the_servers_words(client, background):
    """Past int64, protobuf raised a bare ValueError naming nothing; -1 and n the server
    refuses, in these words (tests/server/test_python_client.py checks they are its own)."""
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, P, background=background)
    refused = caught.value
    assert refused.field == "context.background"
    low, high = min(int(i) for i in background), max(int(i) for i in background)
    assert refused.violations[0].description == (
        f"indices must lie in [0, 40); got values from {low} to {high}"
    )
    assert client._stub.sent == []


# --- refit ---------------------------------------------------------------------------------


def _calibrated(client, refit):
    """What ``calibrate(refit=refit)`` sends for a Context from create_context: whether
    ProposeCalibration asked for a refit's default, whether Calibrate carried the context, and
    the rows the model scored."""
    context = client.create_context(X, P)
    client._stub.sent.clear()
    scored = []
    client.calibrate(context, lambda rows: scored.append(len(rows)) or rows[:, 0], refit=refit)
    proposed = [r.refit for m, r in client._stub.sent if m == "ProposeCalibration"]
    carried = [r.HasField("context") for m, r in client._stub.sent if m == "Calibrate"]
    return proposed, carried, scored


@pytest.mark.parametrize(
    ("refit", "refits"),
    [(False, False), (np.False_, False), (True, True), (np.True_, True), (None, True)],
    ids=["False", "np.False_", "True", "np.True_", "None"],
)
def test_calibrate_takes_a_numpy_bool_refit_as_the_bool_it_is(client, refit, refits):
    """np.False_ was taken as None (the automatic choice: `refit is False` failed) and
    refitted, on the refit's default budget."""
    proposed, carried, scored = _calibrated(client, refit)
    assert proposed == [refits] and carried == [refits]
    assert scored == [(20 if refits else 10) * BACKGROUND]


NOT_REFITS = [0, 1, 0.0, "", "False", np.int64(0), np.array(False), []]


@pytest.mark.parametrize("refit", NOT_REFITS, ids=[repr(r) for r in NOT_REFITS])
def test_a_refit_that_is_not_a_bool_is_refused_naming_refit(client, refit):
    """0 went as None, the automatic choice, and refitted; 1 refitted as True would."""
    context = client.create_context(X, P)
    client._stub.sent.clear()
    scored = []
    calls = {
        "calibrate": lambda: client.calibrate(context, scored.append, refit=refit),
        "propose_calibration": lambda: client.propose_calibration(context, refit=refit),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        refused = caught.value
        assert isinstance(refused, TypeError), name
        assert refused.field == "refit", name
        assert refused.violations[0].description.startswith(
            f"must be True, False or None; got {refit!r}"
        ), name
    assert client._stub.sent == [] and scored == []  # before anything was sent or scored


# --- token ---------------------------------------------------------------------------------

SECRET = "s3cr3t-t0ken"


@pytest.mark.parametrize(
    ("token", "where"),
    [
        (SECRET + "\n", "U+000A at index 12 of 13 (a token read from a file keeps its line break"),
        (SECRET + "\r\n", "U+000D at index 12 of 14 (a token read from a file keeps its line"),
        ("s3cr\u00e9t", "U+00E9 at index 4 of 6"),
        ("s3cr\tt", "U+0009 at index 4 of 6"),
    ],
    ids=["newline", "crlf", "non-ASCII", "tab"],
)
def test_a_token_metadata_cannot_carry_is_refused_naming_token(token, where):
    """It failed every call INTERNAL 'Invalid metadata' with no field, and gRPC's C core
    logged the error; the Node client refuses it the same way, without quoting it."""
    with pytest.raises(InvalidArgumentError) as caught:
        ShapleyClient("127.0.0.1:1", token=token)
    refused = caught.value
    assert refused.field == "token"
    assert refused.violations[0].description.startswith(
        "has a character gRPC metadata cannot carry (printable ASCII only): " + where
    )
    assert token.strip() not in str(refused) and token.strip() not in repr(refused.violations)


def test_a_token_that_is_not_a_string_is_refused_naming_token():
    with pytest.raises(InvalidArgumentError) as caught:
        ShapleyClient("127.0.0.1:1", token=SECRET.encode())
    assert caught.value.field == "token" and isinstance(caught.value, TypeError)
    assert SECRET not in str(caught.value)


def test_a_printable_token_is_sent_as_a_bearer_token():
    for token in (SECRET, "a b~!", None, ""):
        with ShapleyClient("127.0.0.1:1", token=token) as client:
            expected = (("authorization", f"Bearer {token}"),) if token else ()
            assert client._metadata == expected


# --- budget and other arguments ------------------------------------------------------------


def _budgeted_calls(client, budget):
    """Every client call that takes a budget, with it."""
    return {
        "explain": lambda: client.explain(
            CONTEXT_ID, X[:2], model=lambda rows: rows[:, 0], budget=budget
        ),
        "propose": lambda: client.propose(CONTEXT_ID, X[:2], budget=budget),
        "refine": lambda: client.refine(CONTEXT_ID, X[:2], np.zeros(16), budget=budget),
        "propose_calibration": lambda: client.propose_calibration(CONTEXT_ID, budget=budget),
        "calibrate": lambda: client.calibrate(CONTEXT_ID, lambda rows: rows[:, 0], budget=budget),
    }


@pytest.mark.parametrize(
    ("budget", "kind", "problem"),
    [
        (2.5, TypeError, "must be an int; got 2.5"),
        (8.0, TypeError, "must be an int; got 8.0"),
        (True, TypeError, "must be an int; got True"),
        (np.True_, TypeError, "must be an int; got np.True_"),
        ("8", TypeError, "must be an int; got '8'"),
        (2**63, ValueError, "must be an int below 2**63; got 9223372036854775808"),
    ],
    ids=["2.5", "8.0", "True", "np.True_", "str", "2**63"],
)
def test_a_budget_that_is_not_an_int64_is_refused_naming_budget(client, budget, kind, problem):
    """Plain TypeErrors naming no field; past int64 protobuf's bare ValueError."""
    for name, call in _budgeted_calls(client, budget).items():
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        refused = caught.value
        assert isinstance(refused, kind), name
        assert (refused.field, refused.violations[0].description) == ("budget", problem), name
        assert _methods(client) == [], name


def test_explain_names_the_argument_a_zero_shot_answer_does_not_take(client):
    cases = [
        ({"random_state": 3}, "random_state", "seeds a refinement: it needs model and budget"),
        ({"budget": 8}, "model", "is required with budget"),
        ({"model": lambda rows: rows[:, 0]}, "budget", "is required with model"),
    ]
    for arguments, field, problem in cases:
        with pytest.raises(InvalidArgumentError) as caught:
            client.explain(CONTEXT_ID, X[:2], **arguments)
        assert (caught.value.field, caught.value.violations[0].description) == (field, problem)
    assert _methods(client) == []
