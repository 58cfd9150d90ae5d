"""Device and precision: cuda, then mps, then cpu; bf16 autocast where the hardware does bf16 natively.

CPU bf16 is only fast on CPUs with bf16 instructions: an AMD EPYC with AVX2 only ran the laptop recipe 13x
slower in bf16 than in fp32. ``cpu_native_bf16`` reads the CPU's flags (Linux /proc/cpuinfo: ``avx512_bf16``
or ``amx_bf16`` on x86, ``bf16`` on Arm; macOS: the ``hw.optional.arm.FEAT_BF16`` sysctl). Even there, bf16
only pays with the written-out attention: PyTorch's fused CPU attention kernel (sdpa) ran its backward about
4x slower in bf16 than in fp32 on an AVX512-BF16 EPYC, so the whole laptop step was 1.2x slower in bf16 with
sdpa and 1.5x faster with ``attn_impl=explicit``. Hence ``dtype=auto`` on a CPU: bf16 where the CPU has native
bf16 and the caller says its workload gains from it (training with explicit attention), float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from gptlab.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 arithmetic


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu. A named device that is not there raises a one-line UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} asked for, but this machine has no CUDA GPU; use device=cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"device {name!r} asked for, but MPS is not available here; use device=cpu or auto")
    return dev


def parse_cpuinfo(text: str) -> dict:
    """{"model", "flags"} from the text of Linux's /proc/cpuinfo (x86 "flags", Arm "Features")."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and value.strip() and not model:
            model = value.strip()
        elif key in ("flags", "Features"):
            flags |= set(value.split())
    return {"model": model, "flags": flags}


@functools.cache
def cpu_info() -> dict:
    """{"model": CPU model name, "flags": set of feature flags} (empty where the OS does not say)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = {"model": "", "flags": set()}
        if sys.platform == "darwin":
            info["model"] = _sysctl("machdep.cpu.brand_string") or ""
            if _sysctl("hw.optional.arm.FEAT_BF16") == "1":
                info["flags"].add("bf16")
    info["model"] = info["model"] or platform.processor() or platform.machine()
    return info


def _sysctl(name: str) -> str | None:
    try:
        return subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512_BF16 / AMX_BF16, Arm BF16)."""
    flags = cpu_info()["flags"]
    return any(f in flags for f in BF16_FLAGS) or "bf16" in flags


def cpu_description() -> str:
    """The CPU model and the flags that decide its speed, for every benchmark line."""
    info = cpu_info()
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "bf16") if f in info["flags"]]
    return f"{info['model']} ({', '.join(shown) or 'no AVX2/AVX-512/bf16 flags'}; {torch.get_num_threads()} threads)"


# torch CPU threads: ONE rule for every tool (threads=null). A step of a small model is hundreds of tiny ops whose
# time is dispatch and the threads' hand-offs, not arithmetic: a second thread makes it slower, and many times
# slower when another process holds a core (a thread waiting for a descheduled sibling stalls every op; on a
# loaded 2-core machine batch-1 decoding ran 10-20x slower on 2 threads than on 1, bench/threads_bench.py).
# So: one thread per FLOPS_PER_THREAD of work in a step, and no more threads than cores left free by the
# other processes (their runnable threads now: ``cpu_load``).
FLOPS_PER_THREAD = 5e7


def threads_for(flops_per_step: float, cores: int, load: float = 0.0) -> int:
    """torch CPU threads for steps of ``flops_per_step`` FLOPs: one per FLOPS_PER_THREAD, at most the ``cores``
    that ``load`` (other processes' runnable threads, ``cpu_load``) leaves free, at least 1."""
    free = math.floor(cores - load + 0.5)
    return max(1, min(int(cores), free, int(flops_per_step // FLOPS_PER_THREAD)))


@functools.cache
def _default_threads() -> int:
    """torch's own thread count before a tool sets one (it honours OMP_NUM_THREADS and the CPU affinity)."""
    return torch.get_num_threads()


PROC_STAT = "/proc/stat"
LOAD_SAMPLES, LOAD_GAP_S = 9, 0.002


def cpu_load() -> float:
    """Other processes' runnable threads now: the median of LOAD_SAMPLES reads of Linux's ``procs_running``
    (PROC_STAT) over ~20 ms, less this thread. Not the 1-minute load average, which still counts a process
    that ended a minute ago: right after a 2-thread run it read about 1.5 on an idle 2-core machine, so the
    next run got one thread. Where there is no PROC_STAT: the load average (0 where the OS has none)."""
    counts = []
    try:
        for i in range(LOAD_SAMPLES):
            if i:
                time.sleep(LOAD_GAP_S)
            with open(PROC_STAT) as f:
                counts += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
    except (OSError, ValueError, IndexError):
        counts = []
    if counts:
        return max(0.0, statistics.median(counts) - 1)
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every OS
        return 0.0


def set_threads(requested: int | None, flops_per_step: float, device: torch.device | str = "cpu") -> int:
    """Apply a tool's ``threads=``: the number given, or for null the rule of ``threads_for`` on torch's default
    thread count and the load now. On a GPU, where the CPU only dispatches, null keeps torch's default.
    Returns the thread count in use."""
    _default_threads()
    if requested is None:
        if torch.device(device).type != "cpu":
            return torch.get_num_threads()
        requested = threads_for(flops_per_step, _default_threads(), cpu_load())
    torch.set_num_threads(int(requested))
    return int(requested)


def pick_dtype(name: str, device: torch.device, cpu_bf16_pays: bool = False) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA GPUs that support it, and on CPUs with native bf16 when ``cpu_bf16_pays``
    (the caller's workload is one that bf16 speeds up there, see the module doc); float32 elsewhere."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_bf16_pays and cpu_native_bf16():
        return torch.bfloat16
    return torch.float32


@functools.cache
def warn_slow_dtype(dtype: torch.dtype, device: torch.device) -> None:
    """Warn once when a precision asked for is much slower than float32 on this CPU."""
    if device.type != "cpu":
        return
    if dtype == torch.bfloat16 and not cpu_native_bf16():
        why = f"this CPU ({cpu_info()['model']}) has no native bf16 instructions: bfloat16 can run many times"
    elif dtype == torch.float16:
        why = "float16 autocast on a CPU is emulated: it runs about 10x"
    else:
        return
    print(f"warning: {why} slower than float32; use dtype=auto or float32", file=sys.stderr, flush=True)


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context for the forward pass (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for float16 only (bf16 and fp32 have float32's range and need none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def enable_determinism() -> None:
    """Deterministic kernels (train.deterministic): the same steps give the same bits on a GPU too, so a
    resumed run equals a straight one. Strict, because only strict mode makes the flash and memory-efficient
    attention backward pick their deterministic algorithm (with ``warn_only`` they warn and stay atomic); every
    op this model trains with has a deterministic CUDA kernel, and one without would stop with torch's error
    naming it. cuBLAS needs CUBLAS_WORKSPACE_CONFIG: set here unless the user did."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def enable_tf32() -> None:
    """Let float32 matmuls use TF32 tensor cores on Ampere+ GPUs (harmless elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
