"""Watching a job: its log, loss curves, live event stream and notifications."""
