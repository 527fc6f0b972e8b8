"""CLI verbs. Each module here defines ``register(subparsers)`` adding one or more verbs.

Modules are discovered automatically by ``dpa3_al.cli``; heavy imports (torch, dflow, ase)
belong inside the verb functions so that ``dpa3-al --help`` stays fast.
"""
