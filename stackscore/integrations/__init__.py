"""Adapters that make stackscore a step in someone else's data engine (Ray Data, Spark).

Both ship the artifact *path* to workers and load it once per worker process (an ``Ensemble``
pickles by reference), so no weights travel through a scheduler.
"""
