"""What every HTTP entry point shares (the pipeline, the gateway, forward
authentication): the request context, the client's address, the canonical
form of a request path and of header names. No service logic, no storage."""
