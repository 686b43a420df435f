"""The parts of train.py that are worth reading on their own: config, schedule, optimizer,
distributed setup, metrics and FLOP accounting."""
