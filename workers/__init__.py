"""The worker side: the huey queue, its tasks and the worker's own periodic loop."""
