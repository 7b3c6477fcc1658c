"""The durable queue: all job SQL (store), the job value (jobs), backoff (retry), the worker."""
