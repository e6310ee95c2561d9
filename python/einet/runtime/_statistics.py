"""What the runtime adds to the model, and a profile calibrated with it."""

from __future__ import annotations

from collections import deque

import numpy as np

from ..errors import EinetValueError
from ..planner import ETProfile


class Statistics:
    """What the runtime adds to the model, measured as it runs, and :meth:`calibrate` from it."""

    def __init__(self, size: int = 1000) -> None:
        self.dispatch: deque[float] = deque(maxlen=size)  # from infer() to the first block starting
        self.planning: deque[float] = deque(maxlen=size)  # policy time after each branch run
        # Per sample, every answer as the loop published it: (finish time, exit, ...) (see _worker.Job)
        self.answers: deque[list[tuple[float, int, int | None, int | None, float]]] = deque(maxlen=size)

    def clear(self) -> None:
        for measured in (self.dispatch, self.planning, self.answers):
            measured.clear()

    def calibrate(self, et: ETProfile) -> ETProfile:
        """`et` plus what this runtime adds, as *means*: the held answer's accuracy at a uniform exit
        time is linear in when the branches finish, so their mean finishing times predict it; delays
        are skewed to the right, and medians would predict answers earlier than they come."""
        if not self.answers:
            raise EinetValueError("run some uninterrupted inferences first: there is nothing to calibrate from")
        dispatch = float(np.mean(list(self.dispatch)))
        planning_times = list(self.planning)
        planning = float(np.mean(planning_times)) if planning_times else 0.0
        # Whatever else each block costs here (Python between blocks, reading answers back): the
        # mean gap, per block, between when answers came and when `et` says they would.
        per_block = []
        for answers in list(self.answers):
            if not answers:
                continue
            finished, last = answers[-1][:2]
            ran = [answer[1] for answer in answers]
            predicted = dispatch + et.conv[:last + 1].sum() + et.branch[ran].sum() + planning * (len(ran) - 1)
            per_block.append((finished - predicted) / (last + 1))
        # Negative when `et` is slower than this runtime (a profile from a busier moment): the
        # correction goes both ways, or the simulator would keep predicting late answers.
        extra = float(np.mean(per_block)) if per_block else 0.0
        conv = np.maximum(et.conv + extra, 0.0)
        conv[0] += dispatch
        return ETProfile(conv, et.branch + planning)
