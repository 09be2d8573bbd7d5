"""Training state: everything a run needs to continue exactly where it stopped."""
