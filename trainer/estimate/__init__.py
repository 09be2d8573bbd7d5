"""Estimates of a job before it queues: a traced full-size step (:mod:`trainer.estimate.trace`,
torch, tests and bench only) and the torch-free model the API answers from
(:mod:`trainer.estimate.model`, fitted to traces: docs/estimates.md).

This package file imports nothing, so the API can import the model without torch."""
