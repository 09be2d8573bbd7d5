"""The ``lorabox`` command: wires the API, the worker, the REST client and the core together."""
