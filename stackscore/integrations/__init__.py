"""Executors other than the local pipeline: Ray (``--engine ray``, Ray Data) and Spark.

All of them run the local engine's per-window code (``windows.py``: the readers' row checks,
``Scorer.encode/infer``, ``result_block``), so rows, error rows and columns do not depend on the
executor. They ship the artifact *path* to workers and load it once per worker process, so no
weights travel through a scheduler. ``shards.py`` lists input shards and writes output shards,
locally or on any file system pyarrow opens.
"""
