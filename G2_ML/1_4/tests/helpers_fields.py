"""The analytic fields of k7lib.fixtures, under the names the tests use."""
from k7lib.fixtures import (conformal_f, conformal_field, diffeo_field, diffeo_jacobian,  # noqa: F401
                            generic_field, pullback_packed, random_frame)
