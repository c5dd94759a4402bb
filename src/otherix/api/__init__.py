"""Control-plane process (``otherix-api``).

One FastAPI app on uvicorn. Routes are sync functions run in the thread pool
(the store is synchronous SQLAlchemy); only the agent's long-poll watch is
async. Background loops run in-process (``workers``): node liveness and the
write-behind heartbeat flusher. Composition root: ``main.py``.
"""
