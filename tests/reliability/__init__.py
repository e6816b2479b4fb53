"""Proof under fire (issue 16): a history kept outside the system, a seeded nemesis, an independent checker.

``cluster`` (a throwaway PostgreSQL of the test's own), ``procs`` (the Mita processes the nemesis kills),
``history`` (the append-only JSONL record), ``workload`` (clients that retry with the same key), ``nemesis``
(faults by a seeded schedule), ``rig`` (a utility set up and served), ``checker`` (the invariants, reading only
the history and the database). ``benchmarks/soak.py`` reuses them all.
"""
