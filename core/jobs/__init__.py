"""Jobs: validation, submission, queue, cancel/stop, artifacts. HTTP-free services."""
