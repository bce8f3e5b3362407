"""`mlctl tune`: the search space of serving settings (space.py), the searches over it (search.py: coordinate
descent with pruning and an early stop, and the exhaustive grid it is measured against), and the run on a
scratch Triton (run.py)."""
