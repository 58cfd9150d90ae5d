"""Sweeps: the Hydra multirun callback, length-extrapolation evaluation, and the comparison table/plots.

python train.py -m +experiment=positions      # runs the sweep; sweep.callback writes the summary
python compare.py multirun/positions          # sweep.summary: rebuild (and merge) summaries
python -m gptlab.sweep.extrapolate <run dir>         # val loss at 1x, 2x, 4x, 8x the training block size
"""
