"""The lorabox command-line client: talks to a lorabox server over its REST API only."""
