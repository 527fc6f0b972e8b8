"""What deepmd-kit and dpgen2 users bring and expect: their input files converted to ours
(``deepmd_input.py``, ``dpgen2_input.py``, ``dpa3-al convert``) and output files in their formats
(``dp_test.py``: ``dp test -d`` detail files)."""
