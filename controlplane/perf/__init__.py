"""Measure a served model like perf_analyzer (`mlctl perf`) and pick its serving config under a latency budget
(`mlctl tune`).

- windows.py: measurement windows and when a load point is stable (pure).
- inputs.py: the tensors a load sends: random from the signature, or rows of an .npz file.
- server_stats.py: Triton's statistics API, the server-side time per request between two snapshots.
- measure.py: one load point (closed-loop concurrency or open-loop rate) and a sweep of them.
- plot.py: the latency/throughput figure.
- tune/: the search space, the load levels per config, the searches (successive halving, coordinate descent,
  the exhaustive grid) and the scratch server.
"""
