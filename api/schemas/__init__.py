"""Request and response models: the JSON contract scripts rely on."""
