"""The pieces train.py is made of: config, optimizer and schedule, device, checkpoints, logging, the loop."""
