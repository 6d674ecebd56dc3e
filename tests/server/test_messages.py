"""The answers' sizes as the size checks count them, against the real encoded messages: an upper
bound (so that an answer the checks let through is never over the message limit) and a close one
(so that they do not refuse what would fit). No sockets."""

from types import SimpleNamespace

import numpy as np
import pytest

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.estimator.refinement import rows_sha256
from shapley_svc.server import messages

CONTEXT_ID = "ctx-" + "0" * 40
ARTIFACT_VERSION = "5:40c126e075ca"
# Every framing allowance together: it never costs more than a few rows of a message.
SLACK = 256


def _described(attributions: int, outputs: int, memory_bytes: int) -> pb.ContextInfo:
    names = [f"feature {j} " + "n" * 50 for j in range(attributions)]
    return pb.ContextInfo(
        context_id=CONTEXT_ID,
        n_rows=300,
        n_features=attributions,
        n_outputs=outputs,
        single_output=outputs == 1,
        feature_names=names,
        attribution_names=names,
        outputs=[
            pb.OutputDiagnostics(
                predicted_fidelity=0.9,
                surrogates=[pb.SurrogateDiagnostics(name="boosted_trees", oof_r2=0.8, weight=1)],
            )
            for _ in range(outputs)
        ],
        memory_bytes=memory_bytes,
        fit_seconds=1.5,
    )


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("dtype", [pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64])
@pytest.mark.parametrize("as_values", [False, True])
@pytest.mark.parametrize("rows", [1, 700])
def test_an_explain_answer_is_within_its_bound(outputs, dtype, as_values, rows):
    rng = np.random.default_rng(0)
    attributions = 6
    shape = (rows, attributions) if outputs == 1 else (rows, attributions, outputs)
    explanation = SimpleNamespace(
        values=rng.normal(size=shape),
        base_values=rng.normal(size=shape[:1] + shape[2:]),
        uncertainty=rng.random(shape),
        model_rows=2**40,
    )
    answer = messages.AnswerFormat(dtype, as_values)
    described = _described(attributions, outputs, memory_bytes=1_000)
    per_row = messages.answer_bytes_per_row(described, answer)
    for carried in (None, described):
        response = messages.explain_response(
            CONTEXT_ID, explanation, answer, ARTIFACT_VERSION, first_row=2**40
        )
        if carried is not None:
            # Refinement grows the context between the check and the answer: memory_bytes
            # takes more bytes.
            response.context.CopyFrom(_described(attributions, outputs, memory_bytes=2**62))
        bound = messages.answer_fixed_bytes(CONTEXT_ID, ARTIFACT_VERSION, carried)
        bound += rows * per_row
        assert response.ByteSize() <= bound < response.ByteSize() + SLACK


@pytest.mark.parametrize("as_values", [False, True])
@pytest.mark.parametrize("rows", [1, 2_000])
def test_a_proposal_is_within_its_bound(as_values, rows):
    proposed = np.random.default_rng(1).normal(size=(rows, 7))
    bound = messages.proposal_fixed_bytes(CONTEXT_ID, ARTIFACT_VERSION) + proposed.size * 8
    for response in (
        messages.propose_response(
            CONTEXT_ID, proposed, 2**40, as_values, ARTIFACT_VERSION, rows_sha256(proposed)
        ),
        messages.propose_calibration_response(
            CONTEXT_ID, proposed, 2**40, as_values, ARTIFACT_VERSION, rows_sha256(proposed)
        ),
    ):
        assert response.ByteSize() <= bound < response.ByteSize() + SLACK
