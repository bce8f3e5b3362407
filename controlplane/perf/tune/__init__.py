"""`mlctl tune`: the search space of serving settings (space.py), the load levels a config is measured at
(levels.py: a climb that stops where throughput stops rising or p99 breaks the budget), the searches over the space
(search.py: successive halving, coordinate descent, and the exhaustive grid they are measured against), and the run
on a scratch Triton (run.py)."""
