"""Where a run is and what comes next: the data order, each process's questions for a step, evaluation marks.

Data order: one seeded permutation of the training questions per pass (``question_order``); step n takes the next
``questions_per_step`` positions of that sequence (across passes when it runs out), and process r of N keeps every
N-th of them from the r-th. A resumed run continues from ``TrainState.data_position``, so it sees the same questions
in the same order as one that was never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slate.data.records import QARecord


@dataclass
class TrainState:
    step: int = 0  # completed RL steps
    data_position: int = 0  # questions consumed (global)
    nonfinite_in_row: int = 0


def question_order(num_questions: int, seed: int, epoch: int) -> list[int]:
    """The data order of one pass over the training questions: a seeded permutation per epoch."""
    return np.random.default_rng([seed, epoch]).permutation(num_questions).tolist()


def questions_for_step(records: list[QARecord], state: TrainState, per_step: int, seed: int, rank: int,
                       world: int) -> list[QARecord]:
    """This process's share of the next ``per_step`` questions, continuing from ``state.data_position``."""
    picked = []
    for position in range(state.data_position, state.data_position + per_step):
        epoch, offset = divmod(position, len(records))
        picked.append(records[question_order(len(records), seed, epoch)[offset]])
    return picked[rank::world]


def crossed_mark(marks: list[int], before: int, after: int) -> bool:
    """Whether a step that took the token total from ``before`` to ``after`` reached one of ``marks``
    (``before < mark <= after``): a step that crosses several marks evaluates once."""
    return any(before < mark <= after for mark in marks)
