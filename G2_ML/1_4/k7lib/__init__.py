"""k7lib: G2 3-forms, their metrics and torsion on a twisted-connected-sum chart of K7.

Modules are named after the mathematics: constants, forms, g2, derivatives, torsion, ...
Everything is batched over leading dimensions and works in float32 or float64.
"""
__version__ = "1.4.0"
