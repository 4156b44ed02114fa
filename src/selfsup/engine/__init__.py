"""The engine: loop, optimizers and schedule, checkpoints, logging. It knows no method."""
