"""The HTTP front end: uvicorn, run the way keystile needs it.

- ``protocol``: uvicorn's httptools protocol with limits on heads, idle
  connections and the number of connections, and the §3 envelope on the
  responses the front end writes itself;
- ``watchdog``: a thread per worker that kills the worker when its event loop
  stops running;
- ``supervisor``: ``keystile serve``: binds the socket and runs the workers
  under uvicorn's supervisor, which replaces a worker that dies;
- ``worker``: what runs in each worker process.
"""
