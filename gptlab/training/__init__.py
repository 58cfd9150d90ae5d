"""The pieces train.py is made of: config, optimizer and schedule, checkpoints, logging, the loop (device and precision: runtime/)."""
