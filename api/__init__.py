"""lorabox's HTTP edge: the FastAPI app, routes, request/response schemas, the HTTP error
table, request limits and the static dashboard. It imports core/, never worker/."""
