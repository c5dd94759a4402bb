"""Answers rendered by hand where a pydantic response model would cost too much
on a hot path (``heartbeat``). Routes call these; they do no I/O."""
