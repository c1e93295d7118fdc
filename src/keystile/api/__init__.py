"""The HTTP interface: a lean ASGI pipeline in front of the FastAPI management API."""
