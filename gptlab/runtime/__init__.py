"""Where and how a model runs: the device (cuda, mps, cpu), the precision (bf16 where the hardware has it
natively), autocast and the float16 gradient scaler, and what the CPU is (named beside every benchmark).

Shared by every tool (train.py, sample.py, heads.py, sweeps, benchmarks), so none of them reaches into
another's internals for it. Import the module: ``from gptlab.runtime.device import pick_device``.
"""
