"""How latency is measured, for every step that measures it (benchmark, prune's speed-up): a timing policy and
percentiles (stats), and each runner timed in its own process in alternating rounds (isolated)."""
