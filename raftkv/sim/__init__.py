"""Deterministic whole-cluster simulator (docs/decisions.md §5).

It runs the code the server ships, the Raft core (``raftkv.raft.RawNode``) inside the driver core
(``raftkv.driver.DriverCore``) with the real etcd state machine (``raftkv.kv``), in a simulated
world: a network that drops, duplicates, delays and reorders messages and suffers symmetric,
one-way, leader-isolating and swizzle-clog partitions; disks that lose unsynced writes on a crash;
clocks that drift; members whose event loop, disk thread and apply thread interleave as the seed
says; and Jepsen-style clients sending etcd requests (Put, DeleteRange, Txn compare-and-set,
linearizable and serializable Range) to any member. Every choice comes from one seeded
``Chooser``, so a seed replays exactly.

Modules, bottom up:

- ``options``   SimOptions and ``swarm(seed)``, which derives every fault parameter from the seed
- ``chooser``   SeededChooser (random.Random) and HypothesisChooser (hypothesis ``st.data()``)
- ``network``   SimNetwork, partitions, swizzle-clog, forwarded writes and their refusals
- ``disk``      SimDisk: visible storage, durable storage, unsynced transactions (a DurableLog)
- ``node``      SimNode: the driver core + SimDisk + the state machine, as loop/disk/apply steps
- ``clients``   the client workload (etcd requests) and its history
- ``invariants`` incremental Raft safety checks
- ``state``     members' state machines agree (revision per applied index, HashKV)
- ``faults``    the seeded nemesis: partitions, crashes, slow nodes, churn, elections
- ``cluster``   SimCluster: the action menu, the global tick, the liveness phase
- ``runner``    ``run_seed``: one seed end to end, with a one-line repro on failure
- ``soak``      many seeds across processes
- ``__main__``  the command line: ``python -m raftkv.sim --help``
"""
