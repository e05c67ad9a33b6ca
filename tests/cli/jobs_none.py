"""A module that registers no handlers."""

not_jobs = object()
