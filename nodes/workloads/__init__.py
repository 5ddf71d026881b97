"""Workloads: what the drafters are asked and when.

- datasets.py: prompt sets by name (`workload.prompts: humaneval`), from packages that ship them offline, or
  from a JSONL file; each prompt with its reference answer where the dataset has one;
- lengths.py: per-session output lengths (`workload.output_len`), drawn from the drafter's seed;
- trace.py: open-loop arrivals from a DSD-Sim JSONL trace (`workload.arrivals: trace`), read, checked and split
  among the drafters.

Nothing here opens sockets or reads clocks; the files are read by the node's shell and the runner.
"""
