"""Synthesis in a separate process: the request and event protocol, the worker, and the supervisor.

The Slicer module runs every synthesis in a worker process (:class:`supervisor.ProcessJob`)
rather than in a thread of Slicer's own process: a crash or an out-of-memory kill then ends
the worker, not Slicer and the unsaved scene; Cancel ends it at once, even while it loads a
model; and its memory and GPU memory go back to the system when it ends. Importing this
package is cheap; the worker imports torch only when it runs.
"""
from __future__ import annotations
