"""Deterministic whole-cluster simulator (docs/decisions.md §5).

It runs the production Raft core (``raftkv.raft.RawNode``) in a simulated world: a network that
drops, duplicates, delays and reorders messages and suffers symmetric, one-way, leader-isolating
and swizzle-clog partitions; disks that lose unsynced writes on a crash; clocks that drift; and
Jepsen-style clients making puts, compare-and-sets and ReadIndex reads against a tiny KV state
machine. Every choice comes from one seeded ``Chooser``, so a seed replays exactly.

Modules, bottom up:

- ``options``   SimOptions and ``swarm(seed)``, which derives every fault parameter from the seed
- ``chooser``   SeededChooser (random.Random) and HypothesisChooser (hypothesis ``st.data()``)
- ``network``   SimNetwork, partitions, swizzle-clog, trace descriptions of messages and Readies
- ``disk``      SimDisk: visible storage, durable storage, unsynced transactions
- ``kv``        the KV state machine and its command encoding
- ``node``      SimNode: RawNode + SimDisk + KV and the staged Ready pipeline
- ``clients``   the client workload and its history
- ``invariants`` incremental Raft safety checks
- ``cluster``   SimCluster: the action menu, the global tick, the liveness phase
- ``runner``    ``run_seed``: one seed end to end, with a one-line repro on failure
- ``soak``      many seeds across processes
- ``__main__``  the command line: ``python -m raftkv.sim --help``
"""
