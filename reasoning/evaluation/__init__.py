"""Evaluation: a checkpoint and the classical baselines scored alike under one protocol.

A protocol's rows split into folds (:mod:`.folds`); the model and the baselines
(:mod:`.baselines`, the encoder probe's features in :mod:`.probe`) predict on each test fold
(:mod:`.evaluate`); one set of metrics scores them all (:mod:`.metrics`) and the report
writes ``metrics.json``, a table and plots (:mod:`.report`). A benchmark trains and
evaluates every fold (:mod:`.benchmark`); several benchmarks share one table (:mod:`.compare`).
"""
