"""Datasets: receive a zip, check it, extract it safely, validate images and captions."""
