"""Estimates of a job before it queues: a traced full-size step (:mod:`trainer.estimate.trace`)."""
