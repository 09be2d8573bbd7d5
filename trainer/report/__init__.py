"""What a run tells the person reading its log: the training log built from the trainer's
events (``training_log``) and the known-harmless library notices kept out of it (``quiet``)."""
