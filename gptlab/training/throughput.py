"""How fast a run trains: the stopwatch, the run's average tokens/s, and the ETA.

    Stopwatch(device).lap()          seconds since the last lap (waits for a GPU's queued work first)
    Throughput(tokens_per_step)      .add(steps, s) training time, .pause(s) evaluation/checkpoint time
        .tokens_per_s                the run's average: tokens of the timed steps / their time
        .eta(steps_left)             seconds to the end, from a smoothed step time plus the pauses to come

What is timed: every optimizer step except the first of each start or resume (it carries torch.compile,
CUDA and allocator warm-up, seconds to minutes on a GPU). What is not: that first step, evaluation, per-head
metrics and checkpoints. The counts live in summary.json (``timed_steps``, ``timed_s``), so the average of a
resumed run covers every part of it. Train rows of metrics.jsonl keep the speed of their own log window.
"""

from __future__ import annotations

import time

import torch


class Stopwatch:
    """Wall time between laps, for honest tokens/s.

    A GPU runs behind the host: a lap first waits for the work queued on ``device`` (CUDA), so the time
    counted is the time the steps took, not the time it took to queue them. Laps are taken only at the first
    step, at log, evaluation, head-metric and checkpoint steps, never in between, so the steps themselves
    never wait for the host."""

    def __init__(self, device=None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.device = device
        self.start = time.perf_counter()
        self.mark = self.start

    def lap(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        dt, self.mark = now - self.mark, now
        return dt


class Throughput:
    """The run's training speed and the ETA (see the module docstring for what is timed).

    The ETA's step time is an exponential moving average over log windows (weight ``smoothing`` for the
    newest), so one slow window (another job on the machine, a page of swap) moves it a little, not 10x;
    evaluation and checkpoint time is spread over the steps of this start and added per step."""

    def __init__(self, tokens_per_step: int, steps: int = 0, seconds: float = 0.0, smoothing: float = 0.3):
        self.tokens_per_step = tokens_per_step
        self.steps, self.seconds = int(steps), float(seconds)  # the whole run, earlier starts included
        self.smoothing = smoothing
        self.step_s: float | None = None  # smoothed seconds per step (this start)
        self.steps_now, self.paused_s = 0, 0.0  # this start: timed steps, evaluation/checkpoint seconds

    def add(self, steps: int, seconds: float) -> None:
        """``steps`` optimizer steps took ``seconds`` of training time (one log window)."""
        if steps <= 0:
            return
        self.steps += steps
        self.seconds += seconds
        self.steps_now += steps
        per_step = seconds / steps
        self.step_s = (
            per_step if self.step_s is None else self.step_s + self.smoothing * (per_step - self.step_s)
        )

    def pause(self, seconds: float) -> None:
        """Time spent on evaluation, head metrics or a checkpoint (not training time, but part of the ETA)."""
        self.paused_s += seconds

    @property
    def tokens_per_s(self) -> float | None:
        """The run's average training tokens/s; None before a timed step."""
        if self.steps == 0 or self.seconds <= 0:
            return None
        return self.steps * self.tokens_per_step / self.seconds

    def eta(self, steps_left: int) -> float | None:
        """Seconds to the end of the run; None until a log window was timed."""
        if self.step_s is None:
            return None
        return steps_left * (self.step_s + self.paused_s / max(1, self.steps_now))

    def state(self) -> dict:
        """What summary.json keeps, so a resume continues the average."""
        return {"tokens_per_s": self.tokens_per_s, "timed_steps": self.steps, "timed_s": self.seconds}
